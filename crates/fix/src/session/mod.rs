//! The FIX session layer as a state machine with no I/O, in the style of quinn-proto.
//!
//! The transport owns the socket and a single timer. It calls
//! * [`Session::connected`] when a TCP connection is up,
//! * [`Session::handle_bytes`] with every chunk it reads,
//! * [`Session::poll_timers`] when the timer set by the last [`Action::SetTimer`] fires,
//! * [`Session::send_app`] / [`Session::logout`] for the application,
//! * [`Session::disconnected`] when the connection is lost,
//!
//! and carries out the returned [`Action`]s in order: write `Send` bytes, hand `Deliver`
//! messages to the application, close the socket on `Disconnect`.

mod config;

pub use config::{ResendMode, Role, SessionConfig};

use crate::encode::{encode_with, AppMessage, FieldWriter, Header};
use crate::error::{Error, Result};
use crate::frame::{find_message_start, frame};
use crate::message::{Message, RawMessage};
use crate::store::{SeqNums, SeqStore};
use crate::tags::{self, msg_type};
use crate::time::Timestamp;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

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

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No connection.
    Disconnected,
    /// Acceptor: connected, waiting for the peer's Logon.
    AwaitingLogon,
    /// Initiator: Logon sent, waiting for the answer.
    LogonSent,
    /// Logged on.
    Active,
    /// We sent Logout and wait for the answer.
    LogoutSent,
}

/// SessionRejectReason (373) values we send.
mod reject_reason {
    pub const REQUIRED_TAG_MISSING: u32 = 1;
    pub const VALUE_IS_INCORRECT: u32 = 5;
    pub const INCORRECT_DATA_FORMAT: u32 = 6;
    pub const COMPID_PROBLEM: u32 = 9;
    pub const SENDING_TIME_ACCURACY: u32 = 10;
}

/// An application message kept for [`ResendMode::Replay`].
#[derive(Debug)]
struct SentApp {
    seq: u64,
    msg_type: String,
    body: Vec<u8>,
    sending_time: Timestamp,
}

/// Outcome of the sequence-number check on an incoming message.
enum SeqCheck {
    InOrder,
    Handled,
}

/// One FIX session (one pair of CompIDs), driven by the transport.
#[derive(Debug)]
pub struct Session<S: SeqStore> {
    cfg: SessionConfig,
    store: S,
    state: SessionState,
    seqs: SeqNums,
    saved: SeqNums,
    heartbeat: Duration,
    rx: BytesMut,
    last_sent: Timestamp,
    last_received: Timestamp,
    test_request: Option<Timestamp>,
    test_req_counter: u64,
    state_deadline: Option<Timestamp>,
    /// Messages received ahead of a gap. `None` marks a number whose message was already acted
    /// on (a Logon or ResendRequest that arrived early) and only has to be counted in order.
    queue: BTreeMap<u64, Option<Message>>,
    resend_until: Option<u64>,
    sent_reset: bool,
    sent_log: VecDeque<SentApp>,
    scratch: Vec<u8>,
    last_timer: Option<Timestamp>,
}

fn sanitize(text: &str) -> String {
    text.replace(crate::SOH as char, " ")
}

impl<S: SeqStore> Session<S> {
    /// A disconnected session with the sequence numbers found in `store`.
    pub fn new(cfg: SessionConfig, mut store: S) -> Result<Self> {
        cfg.validate()?;
        let seqs = store.load()?;
        Ok(Session {
            heartbeat: cfg.heartbeat_interval,
            cfg,
            store,
            state: SessionState::Disconnected,
            seqs,
            saved: seqs,
            rx: BytesMut::new(),
            last_sent: Timestamp::default(),
            last_received: Timestamp::default(),
            test_request: None,
            test_req_counter: 0,
            state_deadline: None,
            queue: BTreeMap::new(),
            resend_until: None,
            sent_reset: false,
            sent_log: VecDeque::new(),
            scratch: Vec::with_capacity(512),
            last_timer: None,
        })
    }

    /// Current state.
    pub fn state(&self) -> SessionState {
        self.state
    }
    /// True once the Logon exchange is done and until logout/disconnect.
    pub fn is_logged_on(&self) -> bool {
        matches!(self.state, SessionState::Active | SessionState::LogoutSent)
    }
    /// Next outgoing and expected incoming MsgSeqNum.
    pub fn seq_nums(&self) -> SeqNums {
        self.seqs
    }
    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }
    /// HeartBtInt in force (the acceptor's comes from the peer's Logon).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat
    }
    /// The store, e.g. to inspect it in tests.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Sets both sequence numbers (an operator's manual reset). Only while disconnected.
    pub fn set_seq_nums(&mut self, seqs: SeqNums) -> Result<()> {
        if self.state != SessionState::Disconnected {
            return Err(Error::Config(
                "sequence numbers can only be set while disconnected",
            ));
        }
        self.store.save(seqs)?;
        self.seqs = seqs;
        self.saved = seqs;
        Ok(())
    }

    /// When the next timer is due, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let mut d = self.state_deadline;
        if self.state == SessionState::Active && !self.heartbeat.is_zero() {
            let hb = self.heartbeat;
            let heartbeat_due = self.last_sent.saturating_add(hb);
            let peer_due = match self.test_request {
                Some(sent) => sent.saturating_add(
                    self.pct(self.cfg.timeout_percent - self.cfg.test_request_percent),
                ),
                None => self
                    .last_received
                    .saturating_add(self.pct(self.cfg.test_request_percent)),
            };
            d = Some(
                d.map_or(heartbeat_due, |d| d.min(heartbeat_due))
                    .min(peer_due),
            );
        }
        d
    }

    fn pct(&self, percent: u32) -> Duration {
        self.heartbeat * percent / 100
    }

    /// The transport connected. An initiator sends Logon; an acceptor starts waiting for one.
    pub fn connected(&mut self, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        self.reset_connection_state();
        self.last_received = now;
        self.last_sent = now;
        self.state_deadline = Some(now.saturating_add(self.cfg.logon_timeout));
        match self.cfg.role {
            Role::Acceptor => self.state = SessionState::AwaitingLogon,
            Role::Initiator => {
                self.heartbeat = self.cfg.heartbeat_interval;
                self.sent_reset = self.cfg.reset_on_logon;
                if self.sent_reset {
                    self.seqs = SeqNums::default();
                }
                self.send_logon(now, &mut out);
                self.state = SessionState::LogonSent;
            }
        }
        self.finish(&mut out);
        out
    }

    /// The transport lost the connection (or closed it after a `Disconnect`).
    pub fn disconnected(&mut self, _now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != SessionState::Disconnected {
            if self.is_logged_on() {
                out.push(Action::LoggedOut);
            }
            self.state = SessionState::Disconnected;
        }
        self.reset_connection_state();
        self.finish(&mut out);
        out
    }

    /// Feeds bytes read from the connection; complete messages are processed in order and a
    /// partial one is kept for the next call.
    pub fn handle_bytes(&mut self, data: &[u8], now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == SessionState::Disconnected {
            return out;
        }
        self.rx.extend_from_slice(data);
        while self.state != SessionState::Disconnected && !self.rx.is_empty() {
            match frame(&self.rx, self.cfg.max_message_size) {
                Ok(fr) => {
                    let bytes = self.rx.split_to(fr.len).freeze();
                    match Message::from_framed(bytes, fr.body_start, fr.trailer_start) {
                        Ok(msg) => self.on_message(msg, now, &mut out),
                        Err(e) => out.push(Action::Event(SessionEvent::Garbled(e.to_string()))),
                    }
                }
                Err(Error::Incomplete) => break,
                Err(e @ Error::TooLarge { .. }) => {
                    self.disconnect(DisconnectReason::ProtocolViolation(e.to_string()), &mut out);
                }
                Err(e) => {
                    let skip = find_message_start(&self.rx);
                    self.rx.advance(skip);
                    out.push(Action::Event(SessionEvent::Garbled(e.to_string())));
                }
            }
        }
        self.finish(&mut out);
        out
    }

    /// Processes one already-framed message (for transports that frame themselves).
    pub fn handle_message(&mut self, msg: Message, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != SessionState::Disconnected {
            self.on_message(msg, now, &mut out);
        }
        self.finish(&mut out);
        out
    }

    /// Runs the timers: heartbeat, TestRequest, peer timeout, logon/logout timeouts.
    pub fn poll_timers(&mut self, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            SessionState::Disconnected => {}
            SessionState::AwaitingLogon | SessionState::LogonSent => {
                if self.state_deadline.is_some_and(|d| now >= d) {
                    self.disconnect(DisconnectReason::LogonTimeout, &mut out);
                }
            }
            SessionState::LogoutSent => {
                if self.state_deadline.is_some_and(|d| now >= d) {
                    self.disconnect(DisconnectReason::LogoutTimeout, &mut out);
                }
            }
            SessionState::Active if !self.heartbeat.is_zero() => {
                let tr_delay = self.pct(self.cfg.test_request_percent);
                let answer_wait =
                    self.pct(self.cfg.timeout_percent - self.cfg.test_request_percent);
                match self.test_request {
                    Some(sent) if now >= sent.saturating_add(answer_wait) => {
                        self.disconnect(DisconnectReason::HeartbeatTimeout, &mut out);
                    }
                    None if now >= self.last_received.saturating_add(tr_delay) => {
                        self.test_req_counter += 1;
                        let id = format!("TEST{}", self.test_req_counter);
                        self.send_admin(msg_type::TEST_REQUEST, now, &mut out, |w| {
                            w.str(tags::TEST_REQ_ID, &id)
                        });
                        self.test_request = Some(now);
                    }
                    _ => {}
                }
                if self.state == SessionState::Active
                    && now >= self.last_sent.saturating_add(self.heartbeat)
                {
                    self.send_admin(msg_type::HEARTBEAT, now, &mut out, |_| Ok(()));
                }
            }
            SessionState::Active => {}
        }
        self.finish(&mut out);
        out
    }

    /// Sends an application message. Fails unless logged on, or if a field value is invalid.
    pub fn send_app<M: AppMessage + ?Sized>(
        &mut self,
        msg: &M,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        if self.state != SessionState::Active {
            return Err(Error::NotLoggedOn);
        }
        let mut out = Vec::new();
        let seq = self.seqs.next_sender;
        let bytes = if let ResendMode::Replay { capacity } = self.cfg.resend_mode {
            let mut body = Vec::new();
            msg.write_body(&mut FieldWriter::new(&mut body))?;
            let bytes = self.encode(msg.msg_type(), seq, now, None, |w| {
                w.raw_fields(&body);
                Ok(())
            })?;
            if capacity > 0 {
                if self.sent_log.len() == capacity {
                    self.sent_log.pop_front();
                }
                self.sent_log.push_back(SentApp {
                    seq,
                    msg_type: msg.msg_type().to_owned(),
                    body,
                    sending_time: now,
                });
            }
            bytes
        } else {
            self.encode(msg.msg_type(), seq, now, None, |w| msg.write_body(w))?
        };
        self.seqs.next_sender += 1;
        self.last_sent = now;
        out.push(Action::Send(bytes));
        self.finish(&mut out);
        Ok(out)
    }

    /// Starts a Logout (logged on) or drops the connection (still logging on).
    pub fn logout(&mut self, text: Option<&str>, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            SessionState::Active => {
                self.send_logout(text, now, &mut out);
                self.state = SessionState::LogoutSent;
                self.state_deadline = Some(now.saturating_add(self.cfg.logout_timeout));
            }
            SessionState::AwaitingLogon | SessionState::LogonSent => {
                self.disconnect(DisconnectReason::Requested, &mut out);
            }
            SessionState::LogoutSent | SessionState::Disconnected => {}
        }
        self.finish(&mut out);
        out
    }

    /// Sends a session-level Reject (3) for a delivered message the application could not
    /// process (e.g. a typed decoder error), with a SessionRejectReason (373).
    pub fn reject(
        &mut self,
        msg: &Message,
        reason: u32,
        ref_tag: Option<u32>,
        text: &str,
        now: Timestamp,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_logged_on() {
            self.send_reject(&msg.raw(), reason, ref_tag, text, now, &mut out);
        }
        self.finish(&mut out);
        out
    }

    // ----- internals -----

    fn reset_connection_state(&mut self) {
        self.rx.clear();
        self.queue.clear();
        self.resend_until = None;
        self.test_request = None;
        self.state_deadline = None;
        self.sent_reset = false;
    }

    /// Persists changed sequence numbers and announces the next timer; called at the end of
    /// every entry point.
    fn finish(&mut self, out: &mut Vec<Action>) {
        if self.seqs != self.saved {
            match self.store.save(self.seqs) {
                Ok(()) => self.saved = self.seqs,
                Err(e) => {
                    // Sending messages whose numbers are not stored would desynchronise the
                    // session after a restart, so hold them back and stop.
                    out.retain(|a| !matches!(a, Action::Send(_)));
                    if self.state != SessionState::Disconnected {
                        self.disconnect(DisconnectReason::StoreFailed(e.to_string()), out);
                    }
                    self.seqs = self.saved;
                }
            }
        }
        let next = if self.state == SessionState::Disconnected {
            None
        } else {
            self.next_deadline()
        };
        if let Some(t) = next {
            if self.last_timer != Some(t) {
                out.push(Action::SetTimer(t));
            }
        }
        self.last_timer = next;
    }

    fn disconnect(&mut self, reason: DisconnectReason, out: &mut Vec<Action>) {
        if self.is_logged_on() {
            out.push(Action::LoggedOut);
        }
        out.push(Action::Disconnect(reason));
        self.state = SessionState::Disconnected;
        self.reset_connection_state();
    }

    fn encode(
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
    fn send_admin(
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

    fn send_logon(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let hb = self.heartbeat.as_secs();
        let reset = self.sent_reset;
        self.send_admin(msg_type::LOGON, now, out, |w| {
            w.uint(tags::ENCRYPT_METHOD, 0);
            w.uint(tags::HEART_BT_INT, hb);
            if reset {
                w.bool(tags::RESET_SEQ_NUM_FLAG, true);
            }
            Ok(())
        });
    }

    fn send_logout(&mut self, text: Option<&str>, now: Timestamp, out: &mut Vec<Action>) {
        let text = text.map(sanitize).filter(|t| !t.is_empty());
        self.send_admin(msg_type::LOGOUT, now, out, |w| match &text {
            Some(t) => w.str(tags::TEXT, t),
            None => Ok(()),
        });
    }

    fn logout_and_disconnect(
        &mut self,
        text: &str,
        reason: DisconnectReason,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        self.send_logout(Some(text), now, out);
        self.disconnect(reason, out);
    }

    fn send_reject(
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

    fn on_message(&mut self, msg: Message, now: Timestamp, out: &mut Vec<Action>) {
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

    fn on_logon(&mut self, msg: &Message, now: Timestamp, out: &mut Vec<Action>) {
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
    fn check_sending_time(&self, raw: &RawMessage<'_>, now: Timestamp) -> Result<(), String> {
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

    /// Sends ResendRequest for the gap before `received`. `held` says whether the message
    /// `received` itself is kept (queued); a Logon or ResendRequest is acted on but not kept,
    /// so its own number is requested too (the peer gap-fills it).
    fn request_resend(&mut self, received: u64, held: bool, out: &mut Vec<Action>, now: Timestamp) {
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

    /// The MsgSeqNum rules: too high → queue and ResendRequest; too low → duplicate or fatal.
    fn check_seq(
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

    fn on_established(&mut self, msg: Message, now: Timestamp, out: &mut Vec<Action>) {
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

    /// Rejects a message; it still consumes its MsgSeqNum if it was the expected one.
    fn reject_in_order(
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

    fn apply_sequence_reset(
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

    /// Processes queued messages that are now in order, and re-requests if a hole remains.
    fn drain_queue(&mut self, now: Timestamp, out: &mut Vec<Action>) {
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

    fn answer_resend(&mut self, raw: &RawMessage<'_>, now: Timestamp, out: &mut Vec<Action>) {
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
