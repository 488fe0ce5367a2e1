//! Helpers shared by the integration tests: a scripted counterparty and action inspection.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use tickwire_fix::{
    encode, Action, FieldIter, Header, Message, RawBody, SeqStore, Session, SessionConfig,
    Timestamp,
};

/// 2024-02-29 13:45:07 UTC plus `secs` seconds.
pub fn t(secs: u64) -> Timestamp {
    Timestamp(1_709_214_307_000 + secs * 1000)
}

/// `|`-separated fields to SOH-separated bytes.
pub fn soh(s: &str) -> Vec<u8> {
    s.replace('|', "\x01").into_bytes()
}

/// Checks BodyLength and CheckSum of a literal message by counting bytes by hand, independently
/// of the crate's framing code.
pub fn hand_verify(msg: &[u8]) {
    let text = std::str::from_utf8(msg).unwrap();
    let parts: Vec<&str> = text.split('\x01').collect();
    assert!(parts[0].starts_with("8="));
    let declared_len: usize = parts[1].strip_prefix("9=").unwrap().parse().unwrap();
    let body_start = parts[0].len() + 1 + parts[1].len() + 1;
    let trailer = text.rfind("10=").unwrap();
    assert_eq!(trailer - body_start, declared_len, "BodyLength");
    let mut sum: u32 = 0;
    for b in &msg[..trailer] {
        sum += u32::from(*b);
    }
    let declared_sum: u32 = text[trailer + 3..trailer + 6].parse().unwrap();
    assert_eq!(sum % 256, declared_sum, "CheckSum");
    assert_eq!(&text[trailer + 6..], "\x01");
}

/// A counterparty that writes raw messages with whatever sequence numbers a test needs.
pub struct Peer {
    pub sender: String,
    pub target: String,
    pub next_seq: u64,
}

impl Peer {
    pub fn new(sender: &str, target: &str) -> Self {
        Peer {
            sender: sender.into(),
            target: target.into(),
            next_seq: 1,
        }
    }

    /// Message with the next sequence number.
    pub fn msg(&mut self, msg_type: &str, body: &str, now: Timestamp) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.at(seq, msg_type, body, now, None)
    }

    /// Message with an explicit sequence number (and PossDup/OrigSendingTime if `orig`).
    pub fn at(
        &self,
        seq: u64,
        msg_type: &str,
        body: &str,
        now: Timestamp,
        orig: Option<Timestamp>,
    ) -> Vec<u8> {
        let h = Header {
            begin_string: "FIX.4.4",
            sender_comp_id: &self.sender,
            target_comp_id: &self.target,
            seq_num: seq,
            sending_time: now,
            orig_sending_time: orig,
        };
        encode(
            &h,
            &RawBody {
                msg_type: msg_type.into(),
                body: soh(body),
            },
        )
        .unwrap()
        .to_vec()
    }
}

/// Field value of a message, anywhere in it.
pub fn field(m: &Message, tag: u32) -> Option<String> {
    let b = m.bytes();
    FieldIter::new(b, 0, b.len())
        .map(|f| f.unwrap())
        .find(|f| f.tag == tag)
        .map(|f| String::from_utf8(f.value.to_vec()).unwrap())
}

pub fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(Message::parse(b.clone()).unwrap()),
            _ => None,
        })
        .collect()
}

pub fn sent_types(actions: &[Action]) -> Vec<String> {
    sent(actions)
        .iter()
        .map(|m| m.msg_type().to_owned())
        .collect()
}

pub fn delivered(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

pub fn disconnect_reason(actions: &[Action]) -> Option<tickwire_fix::DisconnectReason> {
    actions.iter().find_map(|a| match a {
        Action::Disconnect(r) => Some(r.clone()),
        _ => None,
    })
}

pub fn has(actions: &[Action], want: &Action) -> bool {
    actions.iter().any(|a| a == want)
}

/// Bytes of all `Send` actions, concatenated, as the transport would write them.
pub fn wire(actions: &[Action]) -> Vec<u8> {
    let mut v = Vec::new();
    for a in actions {
        if let Action::Send(b) = a {
            v.extend_from_slice(b);
        }
    }
    v
}

/// Initiator "TW" -> "FEED", logged on at t(0) with the peer at seq 1; returns session and peer.
pub fn logged_on_initiator<S: SeqStore>(store: S) -> (Session<S>, Peer) {
    let mut s = Session::new(SessionConfig::initiator("TW", "FEED"), store).unwrap();
    let a = s.connected(t(0));
    assert_eq!(sent_types(&a), ["A"]);
    let mut peer = Peer::new("FEED", "TW");
    let logon = peer.msg("A", "98=0|108=30|", t(0));
    let a = s.handle_bytes(&logon, t(0));
    assert!(has(&a, &Action::LoggedOn), "{a:?}");
    (s, peer)
}
