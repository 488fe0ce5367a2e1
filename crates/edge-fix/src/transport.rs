//! The thin tokio side of a FIX session: one TCP connection (plain or TLS) drives one
//! [`tickwire_fix::Session`]. Bytes read go to `handle_bytes`, the single timer the session asks
//! for calls `poll_timers`, and the actions come back out in order: `Send`s are written (and
//! flushed before a `Disconnect`), `Deliver`/`LoggedOn`/`LoggedOut` go to the application.

use std::time::{Duration, UNIX_EPOCH};

use tickwire_fix::{Action, AppMessage, Message, SeqStore, Session, SessionEvent, Timestamp};
use tickwire_tls::Stream;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::Instant,
};

pub(crate) fn now() -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_nanos(tickwire_model::clock::now_nanos()))
}

/// What the application sees of the session.
#[derive(Debug)]
pub(crate) enum AppEvent {
    LoggedOn,
    LoggedOut,
    Message(Message),
    Session(SessionEvent),
}

/// A connection and the session it carries.
pub(crate) struct Conn<S: SeqStore> {
    pub session: Session<S>,
    /// Read and written from one task, never at once: the loop awaits either a read or a
    /// flush, so the stream needs no split (which TLS could not do without a lock).
    io: Stream,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    timer: Option<Timestamp>,
    write_timeout: Duration,
    /// Set once the connection is finished; the loop must stop.
    pub closed: Option<String>,
    /// Messages written (administrative ones included) since the last [`Conn::take_sent`].
    sent: u64,
}

impl<S: SeqStore> Conn<S> {
    pub fn new(stream: Stream, session: Session<S>, write_timeout: Duration) -> Self {
        Conn {
            session,
            io: stream,
            rbuf: vec![0; 64 * 1024],
            out: Vec::with_capacity(4096),
            timer: None,
            write_timeout,
            closed: None,
            sent: 0,
        }
    }

    /// Messages written since the last call (for the status counters).
    pub fn take_sent(&mut self) -> u64 {
        std::mem::take(&mut self.sent)
    }

    /// Gives the session back (its sequence numbers carry over to the next connection).
    pub fn into_session(self) -> Session<S> {
        self.session
    }

    /// Reads once from the socket. Cancel-safe: a TCP read either happened or did not, and
    /// TLS keeps records it decrypted but did not hand out for the next read.
    pub async fn read(&mut self) -> std::io::Result<usize> {
        self.io.read(&mut self.rbuf).await
    }

    /// When the session's timer is due, as a tokio instant.
    pub fn deadline(&self) -> Option<Instant> {
        let t = self.timer?;
        let now = now();
        Some(Instant::now() + t.since(now))
    }

    /// Feeds `n` bytes just read; `n == 0` (EOF) or a read error closes the session.
    pub async fn on_read(
        &mut self,
        r: std::io::Result<usize>,
        events: &mut Vec<AppEvent>,
    ) -> std::io::Result<()> {
        match r {
            Ok(0) => {
                self.lost("connection closed by peer".into(), events);
                Ok(())
            }
            Ok(n) => {
                let actions = self.session.handle_bytes(&self.rbuf[..n], now());
                self.run(actions, events).await
            }
            Err(e) => {
                self.lost(format!("read error: {e}"), events);
                Ok(())
            }
        }
    }

    /// Feeds bytes that were read before the session existed (the acceptor reads the Logon to
    /// learn the client's CompID first).
    pub async fn feed(&mut self, bytes: &[u8], events: &mut Vec<AppEvent>) -> std::io::Result<()> {
        let actions = self.session.handle_bytes(bytes, now());
        self.run(actions, events).await
    }

    pub async fn on_timer(&mut self, events: &mut Vec<AppEvent>) -> std::io::Result<()> {
        let actions = self.session.poll_timers(now());
        self.run(actions, events).await
    }

    pub async fn connected(&mut self, events: &mut Vec<AppEvent>) -> std::io::Result<()> {
        let actions = self.session.connected(now());
        self.run(actions, events).await
    }

    /// Sends an application message (a no-op error if not logged on).
    pub async fn send_app<M: AppMessage + ?Sized>(
        &mut self,
        msg: &M,
        events: &mut Vec<AppEvent>,
    ) -> std::io::Result<()> {
        self.queue_app(msg, events).await;
        self.flush_queued(events).await
    }

    /// Like [`Self::send_app`], but the bytes stay in the output buffer until
    /// [`Self::flush_queued`] (or the next flushing call): a batch of messages, one write.
    pub async fn queue_app<M: AppMessage + ?Sized>(&mut self, msg: &M, events: &mut Vec<AppEvent>) {
        match self.session.send_app(msg, now()) {
            Ok(actions) => self.apply(actions, events).await,
            Err(e) => tracing::debug!("fix: not sent: {e}"),
        }
    }

    /// Writes what [`Self::queue_app`] left in the output buffer; a write error or timeout
    /// closes the connection.
    pub async fn flush_queued(&mut self, events: &mut Vec<AppEvent>) -> std::io::Result<()> {
        if self.closed.is_none() {
            if let Err(e) = self.flush().await {
                self.lost(format!("write failed: {e}"), events);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Carries out session actions in order (also the caller's own: `Reject`, `Logout`).
    /// Sends are batched into one write, flushed before a Disconnect and at the end; a write
    /// error or timeout closes the connection.
    pub async fn run(
        &mut self,
        actions: Vec<Action>,
        events: &mut Vec<AppEvent>,
    ) -> std::io::Result<()> {
        self.apply(actions, events).await;
        self.flush_queued(events).await
    }

    /// Carries out actions in order, leaving sends in the output buffer (a Disconnect flushes
    /// it first).
    async fn apply(&mut self, actions: Vec<Action>, events: &mut Vec<AppEvent>) {
        for a in actions {
            match a {
                Action::Send(b) => {
                    self.out.extend_from_slice(&b);
                    self.sent += 1;
                }
                Action::Deliver(m) => events.push(AppEvent::Message(m)),
                Action::SetTimer(t) => self.timer = Some(t),
                Action::LoggedOn => events.push(AppEvent::LoggedOn),
                Action::LoggedOut => events.push(AppEvent::LoggedOut),
                Action::Event(e) => events.push(AppEvent::Session(e)),
                Action::Disconnect(reason) => {
                    let _ = self.flush().await;
                    let _ = self.io.shutdown().await;
                    self.finish(reason.to_string());
                }
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // The flush hands TLS records buffered by rustls to the socket (a no-op on TCP).
        let io = &mut self.io;
        let out = &self.out;
        let write = std::pin::pin!(async move {
            io.write_all(out).await?;
            io.flush().await
        });
        let r = tickwire_gateway::deadline::timeout_if_pending(self.write_timeout, write).await;
        self.out.clear();
        match r {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer does not read (write timeout)",
            )),
        }
    }

    /// The socket is gone: tell the session so it resets its connection state.
    fn lost(&mut self, why: String, events: &mut Vec<AppEvent>) {
        if self.closed.is_some() {
            return;
        }
        let actions = self.session.disconnected(now());
        for a in actions {
            if let Action::LoggedOut = a {
                events.push(AppEvent::LoggedOut);
            }
        }
        self.finish(why);
    }

    fn finish(&mut self, why: String) {
        if self.closed.is_none() {
            self.closed = Some(why);
        }
        self.timer = None;
        self.out.clear();
    }

    /// Logs out politely (bounded by the session's logout timeout, enforced by the caller).
    pub async fn logout(&mut self, text: &str, events: &mut Vec<AppEvent>) {
        let actions = self.session.logout(Some(text), now());
        let _ = self.run(actions, events).await;
    }
}
