//! Resends in both directions: asking the peer to fill a gap (ResendRequest), and answering
//! its ResendRequest by replaying kept application messages ([`ResendMode::Replay`]) and
//! gap-filling everything else.

use super::admin::reject_reason;
use super::{Action, ResendMode, Session, SessionEvent};
use crate::message::RawMessage;
use crate::store::SeqStore;
use crate::tags::{self, msg_type};
use crate::time::Timestamp;

/// An application message kept for [`ResendMode::Replay`].
#[derive(Debug)]
pub(super) struct SentApp {
    pub(super) seq: u64,
    pub(super) msg_type: String,
    pub(super) body: Vec<u8>,
    pub(super) sending_time: Timestamp,
}

impl<S: SeqStore> Session<S> {
    /// Sends ResendRequest for the gap before `received`. `held` says whether the message
    /// `received` itself is kept (queued); a Logon or ResendRequest is acted on but not kept,
    /// so its own number is requested too (the peer gap-fills it).
    pub(super) fn request_resend(
        &mut self,
        received: u64,
        held: bool,
        out: &mut Vec<Action>,
        now: Timestamp,
    ) {
        if self.resend_until.is_some() {
            return;
        }
        let begin = self.seqs.next_target;
        let last_missing = if held { received - 1 } else { received };
        // 0 = "everything after BeginSeqNo", the FIX 4.2+ open-range convention.
        let end = if self.cfg.closed_resend_interval {
            last_missing
        } else {
            0
        };
        self.send_admin(msg_type::RESEND_REQUEST, now, out, |w| {
            w.uint(tags::BEGIN_SEQ_NO, begin);
            w.uint(tags::END_SEQ_NO, end);
            Ok(())
        });
        self.resend_until = Some(last_missing);
        out.push(Action::Event(SessionEvent::GapDetected {
            expected: begin,
            received,
        }));
    }

    pub(super) fn answer_resend(
        &mut self,
        raw: &RawMessage<'_>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let field = |tag| raw.body_field(tag).ok().flatten().map(|f| f.as_u64());
        let begin = match field(tags::BEGIN_SEQ_NO) {
            Some(Ok(b)) if b > 0 => b,
            _ => {
                return self.send_reject(
                    raw,
                    reject_reason::REQUIRED_TAG_MISSING,
                    Some(tags::BEGIN_SEQ_NO),
                    "BeginSeqNo (7) missing or invalid",
                    now,
                    out,
                )
            }
        };
        let end_req = match field(tags::END_SEQ_NO) {
            Some(Ok(e)) => e,
            _ => {
                return self.send_reject(
                    raw,
                    reject_reason::REQUIRED_TAG_MISSING,
                    Some(tags::END_SEQ_NO),
                    "EndSeqNo (16) missing or invalid",
                    now,
                    out,
                )
            }
        };
        out.push(Action::Event(SessionEvent::ResendRequested {
            begin,
            end: end_req,
        }));
        let last_sent = self.seqs.next_sender - 1;
        let end = if end_req == 0 || end_req > last_sent {
            last_sent
        } else {
            end_req
        };
        if begin > end {
            return;
        }
        let mut gap_start: Option<u64> = None;
        if matches!(self.cfg.resend_mode, ResendMode::Replay { .. }) {
            let stored: Vec<(u64, String, Vec<u8>, Timestamp)> = self
                .sent_log
                .iter()
                .filter(|m| m.seq >= begin && m.seq <= end)
                .map(|m| (m.seq, m.msg_type.clone(), m.body.clone(), m.sending_time))
                .collect();
            let mut next = begin;
            for (seq, mt, body, orig) in stored {
                if seq > next {
                    self.send_gap_fill(next, seq, now, out);
                }
                if let Ok(bytes) = self.encode(&mt, seq, now, Some(orig), |w| {
                    w.raw_fields(&body);
                    Ok(())
                }) {
                    out.push(Action::Send(bytes));
                }
                next = seq + 1;
            }
            if next <= end {
                gap_start = Some(next);
            }
        } else {
            gap_start = Some(begin);
        }
        if let Some(start) = gap_start {
            self.send_gap_fill(start, end + 1, now, out);
        }
        self.last_sent = now;
    }

    /// SequenceReset-GapFill sent with MsgSeqNum `seq` (not a new number), as FIX requires.
    fn send_gap_fill(&mut self, seq: u64, new_seq_no: u64, now: Timestamp, out: &mut Vec<Action>) {
        if let Ok(bytes) = self.encode(msg_type::SEQUENCE_RESET, seq, now, Some(now), |w| {
            w.uint(tags::NEW_SEQ_NO, new_seq_no);
            w.bool(tags::GAP_FILL_FLAG, true);
            Ok(())
        }) {
            out.push(Action::Send(bytes));
        }
    }
}
