//! The HTTP listener: accepts TCP connections and serves each with hyper's HTTP/1 server (and
//! its upgrades: WebSocket, MQTT over WebSocket), with the limits that keep the server
//! answering — `/healthz` included — when clients misbehave (issue 15: a silent socket stayed
//! open past 75 s; 300 never-upgraded sockets used up the descriptors).
//!
//! - **Header timeout** (`http.header_timeout_ms`): hyper's, driven by tokio's timer. It runs
//!   from the moment the server waits for a request (a new connection, the end of the previous
//!   response), so it closes slowloris clients, silent sockets and idle kept-alive connections.
//! - **Idle timeout** (`http.idle_timeout_ms`): a connection that is not (yet) a WebSocket or
//!   an event stream is closed when no byte has moved either way for this long while it is the
//!   client's turn: a request body that stalls, a response the client does not read. Time the
//!   server spends answering does not count.
//! - **Pending connections** (`http.max_pending_connections`): connections accepted and not a
//!   WebSocket or event stream. When a new one would go over the limit, or `accept` runs out
//!   of descriptors, the oldest one waiting on its client is closed to make room, so a flood of
//!   sockets that never upgrade cannot keep new requests out. Established connections are
//!   limited by the gateway (`max_connections`).
//!
//! - **TLS** (`[tls]`, optional): HTTPS and WSS. The handshake runs in the connection's task
//!   under `tls.handshake_timeout_ms`, after the connection joined the pending set, so it is
//!   bounded, evictable and never holds up `accept`.
//!
//! Nothing here runs per message: the counters are touched per read or write call before a
//! connection is established, and not at all after.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt::Write as _,
    future::Future,
    io,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, Request, Response, StatusCode},
    Router,
};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
    time::Instant,
};

/// Watchdog looks per idle timeout: a connection is closed between 1 and 1¼ idle timeouts after
/// its last activity, for one timer wake-up every quarter of it.
const IDLE_CHECKS: u32 = 4;

/// Longest pause after an `accept` error other than running out of descriptors with a pending
/// connection to close (then the retry is at once).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The limits of [`serve`], from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Already lowered to fit the open-file limit ([`pending_limit`]).
    pub max_pending: usize,
}

/// What the listener counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pending: AtomicU64,
    max_pending: AtomicU64,
    header_timeouts: AtomicU64,
    idle_closed: AtomicU64,
    evicted: AtomicU64,
    accept_errors: AtomicU64,
}

impl ListenerStats {
    /// The listener's metric families (docs/metrics.md), Prometheus text.
    pub fn render(&self, out: &mut String) {
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "tickwire_http_pending_connections",
            "gauge",
            "HTTP connections accepted and not a WebSocket or event stream.",
            self.pending.load(Relaxed),
        );
        one(
            "tickwire_http_pending_limit",
            "gauge",
            "The effective http.max_pending_connections.",
            self.max_pending.load(Relaxed),
        );
        one(
            "tickwire_http_accept_errors_total",
            "counter",
            "Failed accepts (out of descriptors, out of memory).",
            self.accept_errors.load(Relaxed),
        );
        let name = "tickwire_http_closed_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP connections the server closed, by reason.\n# TYPE {name} counter"
        );
        for (reason, v) in [
            ("header_timeout", &self.header_timeouts),
            ("idle", &self.idle_closed),
            ("evicted", &self.evicted),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
    }
}

/// Raises the soft open-file limit to the hard one: every connection is a descriptor, and the
/// usual soft default (1,024) is what ran out first. Returns the soft limit in force (`None`:
/// unlimited).
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(current), Some(maximum)) = (lim.current, lim.maximum) else {
        return lim.current;
    };
    if current >= maximum {
        tracing::info!(limit = current, "open-file limit");
        return Some(current);
    }
    let raised = Rlimit {
        current: Some(maximum),
        maximum: Some(maximum),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(
                limit = maximum,
                was = current,
                "open-file limit raised to the hard limit"
            );
            Some(maximum)
        }
        Err(e) => {
            tracing::warn!(limit = current, hard = maximum, error = %e, "could not raise the open-file limit");
            Some(current)
        }
    }
}

/// `configured`, lowered to half the open-file limit: pending sockets must never take every
/// descriptor, or the log, the stores and established connections could open nothing.
pub fn pending_limit(configured: usize, open_files: Option<u64>) -> usize {
    let cap = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    let effective = configured.min(cap).max(1);
    if effective < configured {
        tracing::warn!(
            configured,
            effective,
            open_files,
            "http.max_pending_connections lowered to half the open-file limit"
        );
    }
    effective
}

/// One accepted connection, as the watchdog, the pending set and the request path see it.
struct Conn {
    /// Accept order: the smallest pending id is the oldest connection.
    id: u64,
    /// A byte moved either way since the watchdog last looked.
    active: AtomicBool,
    /// Requests whose handler is running.
    handling: AtomicU32,
    /// Request bodies not yet read to the end: the client's turn even while a handler waits.
    bodies: AtomicU32,
    /// Became a WebSocket or an event stream: not pending, no idle timeout.
    established: AtomicBool,
    /// Closed to make room for newer connections.
    evict: Notify,
    pending: Arc<Pending>,
}

impl Conn {
    /// The server owes the client an answer: the connection is not idle, whatever the clock.
    fn server_turn(&self) -> bool {
        self.handling.load(Relaxed) > 0 && self.bodies.load(Relaxed) == 0
    }

    fn establish(&self) {
        if !self.established.swap(true, Relaxed) {
            self.pending.remove(self.id);
        }
    }
}

/// Connections accepted and not established, oldest first.
struct Pending {
    max: usize,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    stats: Arc<ListenerStats>,
}

impl Pending {
    /// Registers a new connection, closing the oldest one waiting on its client first when the
    /// set is full. A connection the server is answering is never closed for room, so the
    /// limit can be passed while every pending connection is being answered.
    fn admit(&self, conn: &Arc<Conn>) {
        let mut conns = self.conns.lock();
        if conns.len() >= self.max {
            self.evict_oldest(&mut conns);
        }
        conns.insert(conn.id, conn.clone());
        self.stats.pending.store(conns.len() as u64, Relaxed);
    }

    /// Closes the oldest connection waiting on its client; false if there is none.
    fn evict_one(&self) -> bool {
        let mut conns = self.conns.lock();
        let evicted = self.evict_oldest(&mut conns);
        self.stats.pending.store(conns.len() as u64, Relaxed);
        evicted
    }

    fn evict_oldest(&self, conns: &mut BTreeMap<u64, Arc<Conn>>) -> bool {
        let Some(id) = conns
            .iter()
            .find(|(_, c)| !c.server_turn())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(c) = conns.remove(&id) {
            self.stats.evicted.fetch_add(1, Relaxed);
            // Stored if the task is not waiting yet: it ends at its next turn either way.
            c.evict.notify_one();
        }
        true
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock();
        conns.remove(&id);
        self.stats.pending.store(conns.len() as u64, Relaxed);
    }
}

/// The socket, noting activity for the idle watchdog until the connection is established
/// (then the note is dropped and reads and writes pass straight through).
struct Tracked {
    io: TcpStream,
    conn: Option<Arc<Conn>>,
}

impl Tracked {
    fn touch(&mut self) {
        if let Some(c) = &self.conn {
            if c.established.load(Relaxed) {
                self.conn = None;
            } else {
                c.active.store(true, Relaxed);
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body, counted as the client's turn until it is read to the end or dropped.
struct WatchedBody {
    inner: Incoming,
    conn: Option<Arc<Conn>>,
}

impl WatchedBody {
    fn new(inner: Incoming, conn: &Arc<Conn>) -> WatchedBody {
        let conn = if inner.is_end_stream() {
            None
        } else {
            conn.bodies.fetch_add(1, Relaxed);
            Some(conn.clone())
        };
        WatchedBody { inner, conn }
    }

    fn done(&mut self) {
        if let Some(c) = self.conn.take() {
            c.bodies.fetch_sub(1, Relaxed);
        }
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &r {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            self.done();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.done();
    }
}

/// Counts a running handler for as long as its future lives.
struct Handling(Arc<Conn>);

impl Handling {
    fn new(conn: Arc<Conn>) -> Handling {
        conn.handling.fetch_add(1, Relaxed);
        Handling(conn)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Relaxed);
    }
}

/// The router, per connection: tracks whose turn it is and notices when the connection stops
/// being pending (a WebSocket upgrade, an event stream).
#[derive(Clone)]
struct Tracker {
    router: Router,
    conn: Arc<Conn>,
    /// The client's address, handed to the routes (per-address connection limits).
    peer: Option<std::net::SocketAddr>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl tower_service::Service<Request<Incoming>> for Tracker {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower_service::Service::<Request<Body>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> ResponseFuture {
        let conn = self.conn.clone();
        let handling = Handling::new(conn.clone());
        let mut req = req.map(|b| Body::new(WatchedBody::new(b, &conn)));
        if let Some(peer) = self.peer {
            req.extensions_mut()
                .insert(tickwire_gateway::PeerAddr(peer));
        }
        let answer = tower_service::Service::call(&mut self.router, req);
        Box::pin(async move {
            let _handling = handling;
            let resp = answer.await?;
            if long_lived(&resp) {
                conn.establish();
            }
            Ok(resp)
        })
    }
}

/// A response after which the connection belongs to a long-lived session (counted and limited
/// by the gateway), not to the pending set.
fn long_lived(resp: &Response<Body>) -> bool {
    resp.status() == StatusCode::SWITCHING_PROTOCOLS
        || resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Serves `router` on `listener` until `signal` resolves, then stops accepting, lets every
/// connection finish its current response (hyper's graceful shutdown) and waits for them.
/// WebSocket sessions are not waited for here: the gateway closes them on shutdown.
///
/// With `tls`, every connection is TLS (HTTPS, WSS): the handshake runs in the connection's
/// own task under the handshake timeout, while the connection already counts as pending, so a
/// client that stalls mid-handshake neither holds up `accept` nor gets past the pending cap.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ListenerStats>,
    tls: Option<tickwire_tls::Acceptor>,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    stats.max_pending.store(limits.max_pending as u64, Relaxed);
    let pending = Arc::new(Pending {
        max: limits.max_pending.max(1),
        conns: Mutex::new(BTreeMap::new()),
        stats: stats.clone(),
    });
    let (drain_tx, drain_rx) = watch::channel(false);
    // Each connection task holds a receiver; the server is done when all are dropped.
    let (done_tx, done_rx) = watch::channel(());
    let mut signal = pin!(signal);
    let mut errors = AcceptErrors::default();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut signal => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                errors.backoff = Duration::ZERO;
                tcp
            }
            Err(e) => {
                errors.failed(e, &pending, &stats).await;
                continue;
            }
        };
        tickwire_tls::socket::tune_accepted(&tcp);
        next_id += 1;
        let conn = Arc::new(Conn {
            id: next_id,
            active: AtomicBool::new(false),
            handling: AtomicU32::new(0),
            bodies: AtomicU32::new(0),
            established: AtomicBool::new(false),
            evict: Notify::new(),
            pending: pending.clone(),
        });
        pending.admit(&conn);
        tokio::spawn(serve_connection(
            tcp,
            Served {
                router: router.clone(),
                conn,
                limits,
                stats: stats.clone(),
            },
            tls.clone(),
            drain_rx.clone(),
            done_rx.clone(),
        ));
    }
    let _ = drain_tx.send(true);
    drop(done_rx);
    drop(listener);
    done_tx.closed().await;
    Ok(())
}

/// Takes the connection out of the pending set however its task ends.
struct Leave(Arc<Conn>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.pending.remove(self.0.id);
    }
}

/// What serving one connection needs besides its socket.
struct Served {
    router: Router,
    conn: Arc<Conn>,
    limits: Limits,
    stats: Arc<ListenerStats>,
}

async fn serve_connection(
    tcp: TcpStream,
    served: Served,
    tls: Option<tickwire_tls::Acceptor>,
    mut drain: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
) {
    let _leave = Leave(served.conn.clone());
    let peer = tcp.peer_addr().ok();
    // Under TLS the watchdog counts the encrypted bytes, handshake included.
    let io = Tracked {
        io: tcp,
        conn: Some(served.conn.clone()),
    };
    let Some(acceptor) = tls else {
        return serve_http(io, peer, served, drain).await;
    };
    if *drain.borrow() {
        return;
    }
    let handshake = tokio::select! {
        r = acceptor.accept(io) => r,
        // Dropping the handshake closes the socket.
        _ = served.conn.evict.notified() => return,
        _ = drain.changed() => return,
    };
    match handshake {
        Ok(tls) => serve_http(tls, peer, served, drain).await,
        Err(e) => tracing::debug!(?peer, "TLS handshake failed: {e}"),
    }
}

/// Serves HTTP/1 (and its upgrades) over `io`, a TCP or TLS stream, until the connection ends
/// or is closed by the watchdog, eviction or the drain.
async fn serve_http<IO>(
    io: IO,
    peer: Option<std::net::SocketAddr>,
    served: Served,
    mut drain: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Served {
        router,
        conn,
        limits,
        stats,
    } = served;
    let io = TokioIo::new(io);
    let service = TowerToHyperService::new(Tracker {
        router,
        conn: conn.clone(),
        peer,
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut served = pin!(builder.serve_connection(io, service).with_upgrades());
    let step = (limits.idle_timeout / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut watchdog = tokio::time::interval_at(Instant::now() + step, step);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = 0u32;
    let mut draining = *drain.borrow();
    if draining {
        served.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        stats.header_timeouts.fetch_add(1, Relaxed);
                    }
                    tracing::debug!("HTTP connection ended: {e}");
                }
                break;
            }
            // Dropping the connection closes the socket.
            _ = conn.evict.notified() => break,
            _ = watchdog.tick(), if !conn.established.load(Relaxed) => {
                if conn.active.swap(false, Relaxed) || conn.server_turn() {
                    quiet = 0;
                } else {
                    quiet += 1;
                    if quiet >= IDLE_CHECKS {
                        stats.idle_closed.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What the accept loop remembers about failures.
#[derive(Default)]
struct AcceptErrors {
    backoff: Duration,
    last_warned: Option<Instant>,
}

impl AcceptErrors {
    async fn failed(&mut self, e: io::Error, pending: &Pending, stats: &ListenerStats) {
        // The peer gave up between the handshake and our accept: nothing to do.
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
        ) {
            return;
        }
        stats.accept_errors.fetch_add(1, Relaxed);
        let out_of_descriptors = e.raw_os_error().is_some_and(|n| {
            n == rustix::io::Errno::MFILE.raw_os_error()
                || n == rustix::io::Errno::NFILE.raw_os_error()
        });
        if self
            .last_warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                error = %e,
                "accepting an HTTP connection failed{}",
                if out_of_descriptors {
                    "; closing the oldest pending connection to make room"
                } else {
                    ""
                }
            );
            self.last_warned = Some(Instant::now());
        }
        // The closed connection's task frees its descriptor on its next turn: a moment, not
        // the backoff, before the next accept.
        if out_of_descriptors && pending.evict_one() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            return;
        }
        self.backoff = (self.backoff * 2)
            .max(Duration::from_millis(10))
            .min(MAX_ACCEPT_BACKOFF);
        tokio::time::sleep(self.backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_limit_fits_the_open_file_limit() {
        assert_eq!(pending_limit(4096, Some(20_000)), 4096);
        assert_eq!(pending_limit(4096, Some(1024)), 512);
        assert_eq!(pending_limit(4096, None), 4096);
        assert_eq!(pending_limit(4096, Some(1)), 1);
    }
}
