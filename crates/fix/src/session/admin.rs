//! Session-level messages we send: encoding with our header, and the Logon, Logout and
//! Reject (3) every other part of the session answers with.

use super::{Action, DisconnectReason, Role, Session, SessionEvent};
use crate::encode::{encode_with, FieldWriter, Header};
use crate::error::Result;
use crate::message::RawMessage;
use crate::store::SeqStore;
use crate::tags::{self, msg_type};
use crate::time::Timestamp;
use bytes::Bytes;

/// SessionRejectReason (373) values we send.
pub(super) mod reject_reason {
    pub const REQUIRED_TAG_MISSING: u32 = 1;
    pub const VALUE_IS_INCORRECT: u32 = 5;
    pub const INCORRECT_DATA_FORMAT: u32 = 6;
    pub const COMPID_PROBLEM: u32 = 9;
    pub const SENDING_TIME_ACCURACY: u32 = 10;
}

fn sanitize(text: &str) -> String {
    text.replace(crate::SOH as char, " ")
}

impl<S: SeqStore> Session<S> {
    pub(super) fn encode(
        &mut self,
        msg_type: &str,
        seq_num: u64,
        now: Timestamp,
        orig_sending_time: Option<Timestamp>,
        body: impl FnOnce(&mut FieldWriter<'_>) -> Result<()>,
    ) -> Result<Bytes> {
        let header = Header {
            begin_string: &self.cfg.begin_string,
            sender_comp_id: &self.cfg.sender_comp_id,
            target_comp_id: &self.cfg.target_comp_id,
            seq_num,
            sending_time: now,
            orig_sending_time,
        };
        encode_with(&mut self.scratch, &header, msg_type, body)
    }

    /// Sends a session message with the next MsgSeqNum.
    pub(super) fn send_admin(
        &mut self,
        msg_type: &str,
        now: Timestamp,
        out: &mut Vec<Action>,
        body: impl FnOnce(&mut FieldWriter<'_>) -> Result<()>,
    ) {
        let seq = self.seqs.next_sender;
        // Admin bodies are built here from validated config and sanitized text, so encoding
        // cannot fail; if it ever did, sending nothing is safer than sending garbage.
        if let Ok(bytes) = self.encode(msg_type, seq, now, None, body) {
            self.seqs.next_sender += 1;
            self.last_sent = now;
            out.push(Action::Send(bytes));
        }
    }

    pub(super) fn send_logon(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let hb = self.heartbeat.as_secs();
        let reset = self.sent_reset;
        // Credentials go out only with the initiator's Logon, never echoed by an acceptor.
        let (user, pass) = match self.cfg.role {
            Role::Initiator => (self.cfg.username.clone(), self.cfg.password.clone()),
            Role::Acceptor => (None, None),
        };
        self.send_admin(msg_type::LOGON, now, out, |w| {
            w.uint(tags::ENCRYPT_METHOD, 0);
            w.uint(tags::HEART_BT_INT, hb);
            if reset {
                w.bool(tags::RESET_SEQ_NUM_FLAG, true);
            }
            if let Some(u) = &user {
                w.str(tags::USERNAME, u)?;
            }
            if let Some(p) = &pass {
                w.str(tags::PASSWORD, p)?;
            }
            Ok(())
        });
    }

    pub(super) fn send_logout(
        &mut self,
        text: Option<&str>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let text = text.map(sanitize).filter(|t| !t.is_empty());
        self.send_admin(msg_type::LOGOUT, now, out, |w| match &text {
            Some(t) => w.str(tags::TEXT, t),
            None => Ok(()),
        });
    }

    pub(super) fn logout_and_disconnect(
        &mut self,
        text: &str,
        reason: DisconnectReason,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        self.send_logout(Some(text), now, out);
        self.disconnect(reason, out);
    }

    pub(super) fn send_reject(
        &mut self,
        msg: &RawMessage<'_>,
        reason: u32,
        ref_tag: Option<u32>,
        text: &str,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let ref_seq = msg.seq_num().unwrap_or(0);
        let ref_type = msg.msg_type().to_owned();
        let text = sanitize(text);
        self.send_admin(msg_type::REJECT, now, out, |w| {
            if ref_seq > 0 {
                w.uint(tags::REF_SEQ_NUM, ref_seq);
            }
            w.str(tags::TEXT, &text)?;
            if let Some(t) = ref_tag {
                w.uint(tags::REF_TAG_ID, u64::from(t));
            }
            if !ref_type.is_empty() {
                w.str(tags::REF_MSG_TYPE, &ref_type)?;
            }
            w.uint(tags::SESSION_REJECT_REASON, u64::from(reason));
            Ok(())
        });
        out.push(Action::Event(SessionEvent::RejectSent {
            ref_seq_num: ref_seq,
            reason,
            text,
        }));
    }
}
