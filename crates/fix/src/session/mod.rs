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
//!
//! This file holds the [`Session`] and its entry points; the rest is split by concern:
//! `action` (what the transport is told), `admin` (session messages we send), `logon` (the
//! Logon exchange), `inbound` (incoming messages by state and type), `sequence` (incoming
//! MsgSeqNum checks, SequenceReset, the queue ahead of a gap) and `resend` (ResendRequest
//! both ways).

mod action;
mod admin;
mod config;
mod inbound;
mod logon;
mod resend;
mod sequence;

pub use action::{Action, DisconnectReason, SessionEvent};
pub use config::{ResendMode, Role, SessionConfig};

use crate::encode::{AppMessage, FieldWriter};
use crate::error::{Error, Result};
use crate::frame::{find_message_start, frame};
use crate::message::Message;
use crate::store::{SeqNums, SeqStore};
use crate::tags::{self, msg_type};
use crate::time::Timestamp;
use bytes::{Buf, BytesMut};
use resend::SentApp;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

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
}
