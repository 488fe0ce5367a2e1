//! The Logon exchange: checking the peer's Logon (CompIDs, fields, SendingTime, sequence
//! reset) and going Active.

use super::{Action, DisconnectReason, Role, Session, SessionState};
use crate::message::{Message, RawMessage};
use crate::store::{SeqNums, SeqStore};
use crate::tags;
use crate::time::Timestamp;
use std::time::Duration;

impl<S: SeqStore> Session<S> {
    pub(super) fn on_logon(&mut self, msg: &Message, now: Timestamp, out: &mut Vec<Action>) {
        let raw = msg.raw();
        let acceptor = self.cfg.role == Role::Acceptor;
        let refuse = |s: &mut Self, text: &str, out: &mut Vec<Action>| {
            let reason = DisconnectReason::LogonRejected(text.to_owned());
            if acceptor {
                s.disconnect(reason, out);
            } else {
                s.logout_and_disconnect(text, reason, now, out);
            }
        };
        if raw.begin_string() != self.cfg.begin_string {
            return refuse(self, "wrong BeginString", out);
        }
        if raw.sender_comp_id() != Some(self.cfg.target_comp_id.as_str())
            || raw.target_comp_id() != Some(self.cfg.sender_comp_id.as_str())
        {
            return refuse(self, "unknown SenderCompID/TargetCompID", out);
        }
        let Some(seq) = raw.seq_num() else {
            return refuse(self, "MsgSeqNum (34) missing", out);
        };
        let fields = match LogonFields::parse(&raw) {
            Ok(f) => f,
            Err(text) => {
                // Authenticated peer, malformed Logon: tell it why before dropping (FIX 1S d).
                return self.logout_and_disconnect(
                    &text,
                    DisconnectReason::LogonRejected(text.clone()),
                    now,
                    out,
                );
            }
        };
        if let Err(text) = self.check_sending_time(&raw, now) {
            return self.logout_and_disconnect(
                &text,
                DisconnectReason::LogonRejected(text.clone()),
                now,
                out,
            );
        }
        if fields.reset {
            if seq != 1 {
                let text = "Logon with ResetSeqNumFlag=Y must have MsgSeqNum=1";
                return self.logout_and_disconnect(
                    text,
                    DisconnectReason::LogonRejected(text.into()),
                    now,
                    out,
                );
            }
            if acceptor || !self.sent_reset {
                // The peer restarts numbering: so do we, before answering with 34=1.
                self.seqs = SeqNums::default();
            } else {
                // We reset when we sent our Logon; our next_sender is already past it.
                self.seqs.next_target = 1;
            }
        }
        let expected = self.seqs.next_target;
        if seq < expected {
            let reason = DisconnectReason::SeqNumTooLow {
                expected,
                received: seq,
            };
            return self.logout_and_disconnect(&reason.to_string(), reason, now, out);
        }
        if acceptor {
            self.heartbeat = Duration::from_secs(fields.heart_bt_int);
            self.sent_reset = fields.reset;
            self.send_logon(now, out);
        }
        self.state = SessionState::Active;
        self.state_deadline = None;
        self.sent_reset = false;
        out.push(Action::LoggedOn);
        if seq > expected {
            self.queue.insert(seq, None);
            self.request_resend(seq, true, out, now);
        } else {
            self.seqs.next_target += 1;
        }
    }

    /// SendingTime presence and accuracy; `Err(text)` when it must be refused.
    pub(super) fn check_sending_time(
        &self,
        raw: &RawMessage<'_>,
        now: Timestamp,
    ) -> Result<(), String> {
        let Some(max) = self.cfg.max_latency else {
            return Ok(());
        };
        match raw.sending_time() {
            None => Err("SendingTime (52) missing".to_owned()),
            Some(Err(_)) => Err("SendingTime (52) is not a UTCTimestamp".to_owned()),
            Some(Ok(t)) if now.since(t) > max || t.since(now) > max => {
                Err("SendingTime accuracy problem".to_owned())
            }
            Some(Ok(_)) => Ok(()),
        }
    }
}

/// The body fields of a Logon we act on.
struct LogonFields {
    heart_bt_int: u64,
    reset: bool,
}

impl LogonFields {
    fn parse(raw: &RawMessage<'_>) -> Result<Self, String> {
        let mut encrypt = None;
        let mut hb = None;
        let mut reset = false;
        for f in raw.body_fields() {
            let f = f.map_err(|e| e.to_string())?;
            match f.tag {
                tags::ENCRYPT_METHOD => encrypt = Some(f.as_u64().map_err(|e| e.to_string())?),
                tags::HEART_BT_INT => hb = Some(f.as_u64().map_err(|e| e.to_string())?),
                tags::RESET_SEQ_NUM_FLAG => reset = f.as_bool().map_err(|e| e.to_string())?,
                _ => {}
            }
        }
        match encrypt {
            None => return Err("EncryptMethod (98) missing".into()),
            Some(0) => {}
            Some(_) => return Err("EncryptMethod (98) not supported, only 0 (none)".into()),
        }
        let heart_bt_int = hb.ok_or_else(|| "HeartBtInt (108) missing".to_owned())?;
        if heart_bt_int > 3600 {
            return Err("HeartBtInt (108) too large".into());
        }
        Ok(LogonFields {
            heart_bt_int,
            reset,
        })
    }
}
