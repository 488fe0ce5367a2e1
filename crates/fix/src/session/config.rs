//! Session configuration.

use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use std::time::Duration;

/// Which side of the session we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connects and sends the first Logon.
    Initiator,
    /// Accepts a connection and answers a Logon whose CompIDs match the configuration.
    Acceptor,
}

/// How we answer a ResendRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendMode {
    /// One SequenceReset-GapFill over the whole range, as QuickFIX does with
    /// `PersistMessages=N`: market data is stale by the time it would be resent.
    GapFill,
    /// Keep the last `capacity` application messages in memory and resend those (PossDupFlag=Y,
    /// OrigSendingTime), gap-filling everything else (admin messages, evicted messages).
    Replay {
        /// Number of sent application messages kept.
        capacity: usize,
    },
}

/// Everything a [`crate::Session`] needs to know up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Initiator or acceptor.
    pub role: Role,
    /// BeginString (8), `FIX.4.4`.
    pub begin_string: String,
    /// Our CompID: SenderCompID (49) on what we send.
    pub sender_comp_id: String,
    /// Their CompID: TargetCompID (56) on what we send; incoming 49 must equal it.
    pub target_comp_id: String,
    /// HeartBtInt (108) an initiator proposes; an acceptor uses the value in the peer's Logon.
    /// Zero turns heartbeats off.
    pub heartbeat_interval: Duration,
    /// Initiator: send ResetSeqNumFlag (141) = Y and start both sides at 1 on every logon.
    pub reset_on_logon: bool,
    /// How long to wait for the Logon (acceptor) or the Logon answer (initiator).
    pub logon_timeout: Duration,
    /// How long to wait for the Logout answer after sending Logout.
    pub logout_timeout: Duration,
    /// Silence from the peer, in percent of HeartBtInt, after which we send a TestRequest
    /// (QuickFIX uses 120).
    pub test_request_percent: u32,
    /// Silence from the peer, in percent of HeartBtInt, after which we disconnect if the
    /// TestRequest got no answer (QuickFIX uses 240).
    pub timeout_percent: u32,
    /// Largest allowed |now - SendingTime| (QuickFIX MaxLatency, 120 s); `None` disables the
    /// check.
    pub max_latency: Option<Duration>,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// How ResendRequests are answered.
    pub resend_mode: ResendMode,
    /// ResendRequest asks for exactly the missing range (EndSeqNo = last missing, QuickFIX
    /// `ClosedResendInterval=Y`) instead of EndSeqNo = 0 ("everything"). Closed is the default:
    /// with an open range a gap-filling peer also covers the messages we already hold, and
    /// they would be dropped.
    pub closed_resend_interval: bool,
    /// Out-of-order messages held while a gap is being filled; beyond this they are dropped and
    /// requested again later.
    pub max_queued: usize,
    /// Initiator: Username (553) sent in its Logon.
    pub username: Option<String>,
    /// Initiator: Password (554) sent in its Logon (an API key or token where the peer is a
    /// Tickwire acceptor).
    pub password: Option<String>,
}

impl SessionConfig {
    /// Defaults for one side: FIX.4.4, 30 s heartbeats, QuickFIX-like timeouts, gap-fill resends.
    pub fn new(
        role: Role,
        sender_comp_id: impl Into<String>,
        target_comp_id: impl Into<String>,
    ) -> Self {
        SessionConfig {
            role,
            begin_string: "FIX.4.4".to_owned(),
            sender_comp_id: sender_comp_id.into(),
            target_comp_id: target_comp_id.into(),
            heartbeat_interval: Duration::from_secs(30),
            reset_on_logon: false,
            logon_timeout: Duration::from_secs(10),
            logout_timeout: Duration::from_secs(2),
            test_request_percent: 120,
            timeout_percent: 240,
            max_latency: Some(Duration::from_secs(120)),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            resend_mode: ResendMode::GapFill,
            closed_resend_interval: true,
            max_queued: 10_000,
            username: None,
            password: None,
        }
    }

    /// An initiator logging on as `sender_comp_id` to `target_comp_id`.
    pub fn initiator(sender_comp_id: impl Into<String>, target_comp_id: impl Into<String>) -> Self {
        Self::new(Role::Initiator, sender_comp_id, target_comp_id)
    }

    /// An acceptor known as `sender_comp_id`, accepting `target_comp_id`.
    pub fn acceptor(sender_comp_id: impl Into<String>, target_comp_id: impl Into<String>) -> Self {
        Self::new(Role::Acceptor, sender_comp_id, target_comp_id)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok_id = |s: &str| !s.is_empty() && !s.bytes().any(|b| b == crate::SOH);
        if !ok_id(&self.sender_comp_id) || !ok_id(&self.target_comp_id) {
            return Err(Error::Config("CompIDs must be non-empty and free of SOH"));
        }
        if !ok_id(&self.begin_string) || self.begin_string.len() > 16 {
            return Err(Error::Config("BeginString must be 1 to 16 bytes"));
        }
        if self.test_request_percent < 100 || self.timeout_percent <= self.test_request_percent {
            return Err(Error::Config(
                "need 100 <= test_request_percent < timeout_percent",
            ));
        }
        if self.max_message_size < 64 {
            return Err(Error::Config("max_message_size is too small"));
        }
        Ok(())
    }
}
