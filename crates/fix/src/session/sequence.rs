//! Incoming MsgSeqNum bookkeeping: the check on every message (ahead → queue it and ask for a
//! resend, behind → a duplicate or fatal), SequenceReset in both modes, and draining the queue
//! of messages that arrived ahead of a gap once it closes.

use super::admin::reject_reason;
use super::{Action, DisconnectReason, Session, SessionEvent};
use crate::message::{Message, RawMessage};
use crate::store::SeqStore;
use crate::tags::{self, msg_type};
use crate::time::Timestamp;

/// Outcome of the sequence-number check on an incoming message.
pub(super) enum SeqCheck {
    InOrder,
    Handled,
}

impl<S: SeqStore> Session<S> {
    /// The MsgSeqNum rules: too high → queue and ResendRequest; too low → duplicate or fatal.
    pub(super) fn check_seq(
        &mut self,
        msg: Message,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> (SeqCheck, Option<Message>) {
        let raw = msg.raw();
        let seq = raw.seq_num().unwrap_or(0);
        let expected = self.seqs.next_target;
        if seq > expected {
            self.request_resend(seq, true, out, now);
            if self.queue.len() < self.cfg.max_queued {
                self.queue.insert(seq, Some(msg));
            }
            return (SeqCheck::Handled, None);
        }
        if seq < expected {
            if !raw.poss_dup() {
                let reason = DisconnectReason::SeqNumTooLow {
                    expected,
                    received: seq,
                };
                self.logout_and_disconnect(&reason.to_string(), reason, now, out);
                return (SeqCheck::Handled, None);
            }
            if raw.msg_type() != msg_type::SEQUENCE_RESET {
                if let Some(Ok(orig)) = raw.orig_sending_time() {
                    if raw
                        .sending_time()
                        .and_then(Result::ok)
                        .is_some_and(|st| orig > st)
                    {
                        let text = "OrigSendingTime later than SendingTime";
                        self.send_reject(
                            &raw,
                            reject_reason::SENDING_TIME_ACCURACY,
                            None,
                            text,
                            now,
                            out,
                        );
                        self.logout_and_disconnect(
                            text,
                            DisconnectReason::ProtocolViolation(text.into()),
                            now,
                            out,
                        );
                        return (SeqCheck::Handled, None);
                    }
                }
            }
            out.push(Action::Event(SessionEvent::DuplicateIgnored {
                seq_num: seq,
            }));
            return (SeqCheck::Handled, None);
        }
        (SeqCheck::InOrder, Some(msg))
    }

    pub(super) fn apply_sequence_reset(
        &mut self,
        raw: &RawMessage<'_>,
        gap_fill: bool,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let new_seq = match raw.body_field(tags::NEW_SEQ_NO) {
            Ok(Some(f)) => match f.as_u64() {
                Ok(n) if n > 0 => n,
                _ => {
                    return self.reject_in_order(
                        raw,
                        reject_reason::INCORRECT_DATA_FORMAT,
                        Some(tags::NEW_SEQ_NO),
                        "NewSeqNo is not a positive integer",
                        now,
                        out,
                    )
                }
            },
            Ok(None) => {
                return self.reject_in_order(
                    raw,
                    reject_reason::REQUIRED_TAG_MISSING,
                    Some(tags::NEW_SEQ_NO),
                    "NewSeqNo (36) missing",
                    now,
                    out,
                )
            }
            Err(e) => {
                return self.reject_in_order(
                    raw,
                    reject_reason::INCORRECT_DATA_FORMAT,
                    None,
                    &e.to_string(),
                    now,
                    out,
                )
            }
        };
        let expected = self.seqs.next_target;
        if new_seq > expected {
            self.seqs.next_target = new_seq;
            out.push(Action::Event(SessionEvent::SequenceReset {
                new_seq_no: new_seq,
                gap_fill,
            }));
        } else if new_seq < expected || gap_fill {
            // A GapFill must move forward past its own MsgSeqNum; a Reset may not go back.
            let text =
                format!("Attempt to lower sequence number, invalid value NewSeqNo={new_seq}");
            if gap_fill {
                self.reject_in_order(
                    raw,
                    reject_reason::VALUE_IS_INCORRECT,
                    Some(tags::NEW_SEQ_NO),
                    &text,
                    now,
                    out,
                );
            } else {
                self.send_reject(
                    raw,
                    reject_reason::VALUE_IS_INCORRECT,
                    Some(tags::NEW_SEQ_NO),
                    &text,
                    now,
                    out,
                );
            }
        }
    }

    /// Processes queued messages that are now in order, and re-requests if a hole remains.
    pub(super) fn drain_queue(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        while self.is_logged_on() {
            let Some((&seq, _)) = self.queue.first_key_value() else {
                break;
            };
            let expected = self.seqs.next_target;
            if seq > expected {
                break;
            }
            let Some((_, msg)) = self.queue.pop_first() else {
                break;
            };
            match msg {
                Some(msg) if seq == expected => self.on_established(msg, now, out),
                None if seq == expected => self.seqs.next_target += 1,
                _ => {} // overtaken by a gap fill
            }
        }
        if self.resend_until.is_some_and(|r| self.seqs.next_target > r) {
            self.resend_until = None;
        }
        if self.resend_until.is_none() && self.is_logged_on() {
            if let Some((&seq, _)) = self.queue.first_key_value() {
                self.request_resend(seq, true, out, now);
            }
        }
    }
}
