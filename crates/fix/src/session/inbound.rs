//! Incoming messages: dispatch by session state, the header checks every message of an
//! established session passes, and what each session message type does once logged on
//! (ResendRequest and SequenceReset are passed on to `resend` and `sequence`); application
//! messages are delivered here, in MsgSeqNum order.

use super::admin::reject_reason;
use super::sequence::SeqCheck;
use super::{Action, DisconnectReason, Role, Session, SessionEvent, SessionState};
use crate::message::{Message, RawMessage};
use crate::store::SeqStore;
use crate::tags::{self, msg_type};
use crate::time::Timestamp;

impl<S: SeqStore> Session<S> {
    pub(super) fn on_message(&mut self, msg: Message, now: Timestamp, out: &mut Vec<Action>) {
        self.last_received = now;
        // Any traffic proves the peer is alive, which is all a TestRequest asks.
        self.test_request = None;
        match self.state {
            SessionState::Disconnected => {}
            SessionState::AwaitingLogon | SessionState::LogonSent => {
                if msg.msg_type() == msg_type::LOGON {
                    self.on_logon(&msg, now, out);
                } else {
                    let text = "first message is not a Logon";
                    if self.cfg.role == Role::Initiator {
                        self.logout_and_disconnect(
                            text,
                            DisconnectReason::ProtocolViolation(text.into()),
                            now,
                            out,
                        );
                    } else {
                        // An acceptor answers an unauthenticated peer with nothing: any
                        // message would consume a sequence number of the real session.
                        self.disconnect(DisconnectReason::ProtocolViolation(text.into()), out);
                    }
                }
            }
            SessionState::Active | SessionState::LogoutSent => {
                self.on_established(msg, now, out);
                self.drain_queue(now, out);
            }
        }
    }

    /// Header checks common to every message of an established session. Returns false when
    /// the message must not be processed further (actions already pushed).
    fn verify_header(
        &mut self,
        raw: &RawMessage<'_>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> bool {
        if raw.begin_string() != self.cfg.begin_string {
            let text = "Incorrect BeginString";
            self.logout_and_disconnect(
                text,
                DisconnectReason::ProtocolViolation(text.into()),
                now,
                out,
            );
            return false;
        }
        if raw.seq_num().is_none() {
            let text = "MsgSeqNum (34) missing";
            self.logout_and_disconnect(
                text,
                DisconnectReason::ProtocolViolation(text.into()),
                now,
                out,
            );
            return false;
        }
        if raw.sender_comp_id() != Some(self.cfg.target_comp_id.as_str())
            || raw.target_comp_id() != Some(self.cfg.sender_comp_id.as_str())
        {
            let text = "CompID problem";
            self.send_reject(raw, reject_reason::COMPID_PROBLEM, None, text, now, out);
            self.logout_and_disconnect(
                text,
                DisconnectReason::ProtocolViolation(text.into()),
                now,
                out,
            );
            return false;
        }
        if let Err(text) = self.check_sending_time(raw, now) {
            let (reason, tag) = if raw.sending_time().is_none() {
                (
                    reject_reason::REQUIRED_TAG_MISSING,
                    Some(tags::SENDING_TIME),
                )
            } else {
                (reject_reason::SENDING_TIME_ACCURACY, None)
            };
            self.send_reject(raw, reason, tag, &text, now, out);
            self.logout_and_disconnect(
                &text,
                DisconnectReason::ProtocolViolation(text.clone()),
                now,
                out,
            );
            return false;
        }
        true
    }

    pub(super) fn on_established(&mut self, msg: Message, now: Timestamp, out: &mut Vec<Action>) {
        let raw = msg.raw();
        if !self.verify_header(&raw, now, out) {
            return;
        }
        let seq = raw.seq_num().unwrap_or(0);
        match raw.msg_type() {
            msg_type::LOGON => {
                // QuickFIX and the FIX test cases (1S b) drop a second Logon on a live session.
                let text = "Logon received while already logged on";
                self.disconnect(DisconnectReason::ProtocolViolation(text.into()), out);
            }
            msg_type::LOGOUT => {
                // Honoured whatever its MsgSeqNum: the peer is leaving either way.
                if seq == self.seqs.next_target {
                    self.seqs.next_target += 1;
                }
                if self.state == SessionState::Active {
                    self.send_logout(None, now, out);
                }
                self.disconnect(DisconnectReason::Logout, out);
            }
            msg_type::RESEND_REQUEST => {
                // Answered before the sequence check so two sides with gaps cannot deadlock
                // waiting on each other.
                self.answer_resend(&raw, now, out);
                let expected = self.seqs.next_target;
                if seq == expected {
                    self.seqs.next_target += 1;
                } else if seq > expected {
                    // Already answered: only its number waits for the gap to close.
                    self.queue.insert(seq, None);
                    self.request_resend(seq, true, out, now);
                }
            }
            msg_type::SEQUENCE_RESET => {
                let gap_fill = match raw
                    .body_field(tags::GAP_FILL_FLAG)
                    .and_then(|f| f.map(|f| f.as_bool()).transpose())
                {
                    Ok(g) => g.unwrap_or(false),
                    Err(_) => {
                        self.reject_in_order(
                            &raw,
                            reject_reason::INCORRECT_DATA_FORMAT,
                            Some(tags::GAP_FILL_FLAG),
                            "GapFillFlag must be Y or N",
                            now,
                            out,
                        );
                        return;
                    }
                };
                if gap_fill {
                    let (check, msg) = self.check_seq(msg.clone(), now, out);
                    if let (SeqCheck::InOrder, Some(msg)) = (check, msg) {
                        self.apply_sequence_reset(&msg.raw(), true, now, out);
                    }
                } else {
                    // Reset mode ignores MsgSeqNum: it exists to recover from lost numbering.
                    self.apply_sequence_reset(&raw, false, now, out);
                }
            }
            _ => {
                let (check, msg) = self.check_seq(msg.clone(), now, out);
                if let (SeqCheck::InOrder, Some(msg)) = (check, msg) {
                    self.process_in_order(msg, now, out);
                }
            }
        }
    }

    /// A message whose MsgSeqNum is the expected one (not Logon/Logout/Resend/SeqReset).
    fn process_in_order(&mut self, msg: Message, now: Timestamp, out: &mut Vec<Action>) {
        let raw = msg.raw();
        if raw.poss_dup() && raw.orig_sending_time().is_none() {
            return self.reject_in_order(
                &raw,
                reject_reason::REQUIRED_TAG_MISSING,
                Some(tags::ORIG_SENDING_TIME),
                "OrigSendingTime (122) required with PossDupFlag=Y",
                now,
                out,
            );
        }
        match raw.msg_type() {
            msg_type::HEARTBEAT => {}
            msg_type::TEST_REQUEST => match raw.body_field(tags::TEST_REQ_ID) {
                Ok(Some(f)) => {
                    let id = f.value.to_vec();
                    self.send_admin(msg_type::HEARTBEAT, now, out, |w| {
                        w.bytes(tags::TEST_REQ_ID, &id)
                    });
                }
                _ => {
                    return self.reject_in_order(
                        &raw,
                        reject_reason::REQUIRED_TAG_MISSING,
                        Some(tags::TEST_REQ_ID),
                        "TestReqID (112) missing",
                        now,
                        out,
                    );
                }
            },
            msg_type::REJECT => {
                let get = |tag| raw.body_field(tag).ok().flatten();
                out.push(Action::Event(SessionEvent::RejectReceived {
                    ref_seq_num: get(tags::REF_SEQ_NUM).and_then(|f| f.as_u64().ok()),
                    reason: get(tags::SESSION_REJECT_REASON).and_then(|f| f.as_u64().ok()),
                    text: get(tags::TEXT).map(|f| String::from_utf8_lossy(f.value).into_owned()),
                }));
            }
            _ => {
                self.seqs.next_target += 1;
                out.push(Action::Deliver(msg));
                return;
            }
        }
        self.seqs.next_target += 1;
    }

    /// Rejects a message; it still consumes its MsgSeqNum if it was the expected one.
    pub(super) fn reject_in_order(
        &mut self,
        raw: &RawMessage<'_>,
        reason: u32,
        tag: Option<u32>,
        text: &str,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        self.send_reject(raw, reason, tag, text, now, out);
        if raw.seq_num() == Some(self.seqs.next_target) {
            self.seqs.next_target += 1;
        }
    }
}
