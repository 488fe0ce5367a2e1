//! What the session hands its transport: the [`Action`]s to carry out in order, why it asks
//! for a disconnect ([`DisconnectReason`]) and what is only worth logging ([`SessionEvent`]).

use crate::message::Message;
use crate::time::Timestamp;
use bytes::Bytes;
use std::fmt;

/// What the transport must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the connection.
    Send(Bytes),
    /// An application message, in sequence order, for the application.
    Deliver(Message),
    /// Close the connection (after writing the `Send`s before it).
    Disconnect(DisconnectReason),
    /// Call [`Session::poll_timers`] at this time; replaces any earlier timer.
    ///
    /// [`Session::poll_timers`]: super::Session::poll_timers
    SetTimer(Timestamp),
    /// The session is established (Logon exchanged).
    LoggedOn,
    /// The session that was established has ended.
    LoggedOut,
    /// Something worth logging happened; no action needed.
    Event(SessionEvent),
}

/// Why the session asks the transport to disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The Logout exchange finished (either side started it).
    Logout,
    /// No Logon (or no Logon answer) within `logon_timeout`.
    LogonTimeout,
    /// No Logout answer within `logout_timeout`.
    LogoutTimeout,
    /// No answer to a TestRequest.
    HeartbeatTimeout,
    /// The peer's MsgSeqNum was lower than expected without PossDupFlag.
    SeqNumTooLow {
        /// MsgSeqNum we expected.
        expected: u64,
        /// MsgSeqNum we got.
        received: u64,
    },
    /// The Logon was refused (unknown CompIDs, bad fields, ...).
    LogonRejected(String),
    /// The peer broke the session protocol.
    ProtocolViolation(String),
    /// The sequence store failed; sequence numbers can no longer be trusted.
    StoreFailed(String),
    /// The application asked (a Logout was not possible).
    Requested,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Logout => f.write_str("logout"),
            DisconnectReason::LogonTimeout => f.write_str("logon timeout"),
            DisconnectReason::LogoutTimeout => f.write_str("logout timeout"),
            DisconnectReason::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            DisconnectReason::SeqNumTooLow { expected, received } => {
                write!(
                    f,
                    "MsgSeqNum too low, expecting {expected} but received {received}"
                )
            }
            DisconnectReason::LogonRejected(t) => write!(f, "logon rejected: {t}"),
            DisconnectReason::ProtocolViolation(t) => write!(f, "protocol violation: {t}"),
            DisconnectReason::StoreFailed(t) => write!(f, "sequence store failed: {t}"),
            DisconnectReason::Requested => f.write_str("requested"),
        }
    }
}

/// Informational events (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Incoming MsgSeqNum was ahead; we sent ResendRequest(begin, 0).
    GapDetected {
        /// First missing MsgSeqNum.
        expected: u64,
        /// MsgSeqNum received.
        received: u64,
    },
    /// The peer asked for a resend; we answered.
    ResendRequested {
        /// BeginSeqNo (7).
        begin: u64,
        /// EndSeqNo (16), 0 for infinity.
        end: u64,
    },
    /// A SequenceReset moved the expected incoming MsgSeqNum.
    SequenceReset {
        /// NewSeqNo (36).
        new_seq_no: u64,
        /// GapFillFlag (123).
        gap_fill: bool,
    },
    /// A possible duplicate below the expected MsgSeqNum was ignored.
    DuplicateIgnored {
        /// Its MsgSeqNum.
        seq_num: u64,
    },
    /// The peer rejected one of our messages.
    RejectReceived {
        /// RefSeqNum (45).
        ref_seq_num: Option<u64>,
        /// SessionRejectReason (373).
        reason: Option<u64>,
        /// Text (58).
        text: Option<String>,
    },
    /// We rejected one of the peer's messages.
    RejectSent {
        /// MsgSeqNum of the rejected message.
        ref_seq_num: u64,
        /// SessionRejectReason (373).
        reason: u32,
        /// Explanation sent in Text (58).
        text: String,
    },
    /// Bytes that were not a valid message were skipped (FIX: ignore garbled messages).
    Garbled(String),
}
