//! The JetStream side of the ingest and ws-publish scenarios: creating the QUOTES stream,
//! publishing with one acknowledgement per message (async, pipelined up to `--window`) or in
//! atomic batches, over the NATS text protocol.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use crate::{
    error::Result,
    msg::{now_micros, quote},
    proto::{after_read, Conn},
    publish::{AckStats, MeasuredCpu},
    scenario::{Phase, PubOutcome},
    stats::histogram,
    BenchError, RunArgs, Target,
};

/// Appends `PUB <subject> <reply> <#bytes>` and the payload.
fn push_pub(out: &mut Vec<u8>, subject: &str, reply: &str, payload: &[u8]) {
    out.extend_from_slice(format!("PUB {subject} {reply} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

pub(crate) async fn js_create_stream(a: &RunArgs) -> Result<()> {
    // A freshly started cluster can report healthy and still leave a replicated stream's
    // create unanswered for a while (a full-mode cluster run timed out here once, 2026-12-05,
    // at replicas 3): ask again, on a new connection so a late answer to an earlier attempt
    // cannot be taken for this one's, before failing the run.
    let mut attempt = 1;
    loop {
        match create_stream_once(a).await {
            // No answer in time, or the connection went: either way, a new connection asks.
            Err(e @ (BenchError::Timeout(_) | BenchError::Io { .. }))
                if attempt < CREATE_ATTEMPTS =>
            {
                eprintln!("{e} (waited up to {CREATE_WAIT:?}, attempt {attempt} of {CREATE_ATTEMPTS}); asking again");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// How often, and how long each time, the stream's create is waited for.
const CREATE_ATTEMPTS: u32 = 3;
const CREATE_WAIT: Duration = Duration::from_secs(10);

async fn create_stream_once(a: &RunArgs) -> Result<()> {
    let mut c = Conn::connect(Target::Nats, a.addr, None).await?;
    let cfg = format!(
        r#"{{"name":"QUOTES","subjects":["quotes.>"],"storage":"file","retention":"limits","discard":"old","num_replicas":{}{}}}"#,
        a.js_replicas.max(1),
        if a.js_atomic_batch > 0 {
            r#","allow_atomic":true"#
        } else {
            ""
        }
    );
    // Delete, answered, then create: sent together, nats-server may run the two API requests
    // in either order (its replies came in either order), and a delete run second removed the
    // stream just created, so a consumer created next found no stream (CI, 2026-12-05).
    let deadline = Instant::now() + CREATE_WAIT;
    c.send(b"SUB _INBOX.setup.* 1\r\n").await?;
    let mut out = Vec::new();
    push_pub(
        &mut out,
        "$JS.API.STREAM.DELETE.QUOTES",
        "_INBOX.setup.1",
        b"",
    );
    c.send(&out).await?;
    // Deleted or not there: either answer will do.
    api_reply(&mut c, "stream_delete_response", deadline).await?;
    out.clear();
    push_pub(
        &mut out,
        "$JS.API.STREAM.CREATE.QUOTES",
        "_INBOX.setup.2",
        cfg.as_bytes(),
    );
    c.send(&out).await?;
    let create = api_reply(&mut c, "stream_create_response", deadline).await?;
    if create.contains("\"error\"") {
        return Err(BenchError::proto(
            "jetstream",
            format!("stream create: {create}"),
        ));
    }
    Ok(())
}

/// Reads until a JetStream API answer of `kind` (its `type` names it) arrives, or `deadline`.
async fn api_reply(c: &mut Conn, kind: &str, deadline: Instant) -> Result<String> {
    let mut found: Option<String> = None;
    loop {
        if let Some(reply) = found {
            return Ok(reply);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!("JetStream {kind}")));
        }
        let read = c.read_some(usize::MAX, |m: &[u8]| {
            let m = String::from_utf8_lossy(m);
            if m.contains(kind) {
                found = Some(m.into_owned());
            }
        });
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), read).await {
            if !r? {
                // Closed: no answer can come (reading on would spin until the deadline).
                return Err(BenchError::Io {
                    what: format!("JetStream {kind}"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before answering",
                    ),
                });
            }
        }
    }
}

/// The `--js-tail` reader: an ephemeral push consumer of the whole stream, no acks, delivered
/// to a subject of this connection; counts what it receives in `tailed` until dropped. A
/// refused consumer fails the run.
pub(crate) async fn js_tail(a: &RunArgs, tailed: &AtomicU64) -> Result<()> {
    let mut c = Conn::connect(Target::Nats, a.addr, None).await?;
    let cfg = br#"{"stream_name":"QUOTES","config":{"deliver_subject":"_tail.d","deliver_policy":"all","ack_policy":"none","replay_policy":"instant","mem_storage":true,"num_replicas":1}}"#;
    let mut out = b"SUB _tail.d 1\r\nSUB _INBOX.tail.* 2\r\n".to_vec();
    push_pub(
        &mut out,
        "$JS.API.CONSUMER.CREATE.QUOTES",
        "_INBOX.tail.1",
        cfg,
    );
    c.send(&out).await?;
    let mut refused: Option<String> = None;
    loop {
        let open = c
            .read_some(usize::MAX, |m: &[u8]| {
                // The consumer's create answer is the one payload that is not a quote.
                if memchr::memmem::find(m, b"consumer_create_response").is_some() {
                    if memchr::memmem::find(m, br#""error""#).is_some() {
                        refused = Some(format!("tail consumer: {}", String::from_utf8_lossy(m)));
                    }
                } else {
                    tailed.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await?;
        after_read("jetstream", refused.take(), open)?;
    }
}

/// ws-publish on JetStream: the ingest scenario's async publisher, ONE connection (publisher
/// 0), one PUB per message with its own reply inbox, up to `--window` acks outstanding. What it
/// counted while measuring is the row's acks, as for the Tickwire publishers.
pub(crate) async fn js_ws_publisher(
    a: &RunArgs,
    phase: &Phase,
    total: Duration,
) -> Result<PubOutcome> {
    // The ingest scenario's running count of acks; ws-publish counts in the AckStats instead.
    let acked = AtomicU64::new(0);
    let (st, last) = js_publisher(a, 0, phase, &acked, total).await?;
    Ok(PubOutcome {
        published: st.sent,
        last,
        acks: Some(st),
        lag: None,
    })
}

/// JetStream async publishing on one connection: each message is its own PUB with its own
/// reply inbox (`_INBOX.p<P>.<seq>`), whose ack the stream sends there. Up to `--window` acks
/// outstanding; each turn writes at most `--batch` PUBs (in one write) to top the window up,
/// then reads whatever acks have come. `--batch` is messages per write, not per publish: with
/// `--batch 1` only one PUB would go out per read, and with acks arriving one per read that is
/// one message in flight, synchronous publishing.
///
/// Returns the acks seen while the phase was measuring (sent, acked, latency, CPU of this
/// thread: meaningful when it runs on a thread of its own, as in ws-publish), errors over the
/// whole run, and the last sequence number published per symbol. `acked` counts every ack as
/// it comes (ingest reads it around its window).
pub(crate) async fn js_publisher(
    a: &RunArgs,
    p: usize,
    phase: &Phase,
    acked: &AtomicU64,
    total: Duration,
) -> Result<(AckStats, Vec<u64>)> {
    let mut c = Conn::connect(Target::JetStream, a.addr, None).await?;
    c.send(format!("SUB _INBOX.p{p}.* 1\r\n").as_bytes())
        .await?;
    let mut st = AckStats::new();
    let nsym = a.symbols.max(1);
    let mut last = vec![0u64; nsym];
    let mut inflight: VecDeque<u64> = VecDeque::with_capacity(a.window);
    let mut out = Vec::with_capacity(1 << 20);
    let mut payload = Vec::with_capacity(a.size + 64);
    let start = Instant::now();
    let mut seq = (p as u64 + 1) << 40;
    let mut sent = 0u64;
    let window = a.window.max(1);
    let mut cpu = MeasuredCpu::default();
    loop {
        let publishing = still_publishing(start, total, sent, a.max_messages);
        let measuring = phase.measuring.load(Ordering::Relaxed);
        cpu.turn(measuring, &mut st.cpu_s);
        if !publishing && inflight.is_empty() {
            break;
        }
        if publishing && inflight.len() < window {
            let n = (window - inflight.len()).min(a.batch.max(1));
            let t = now_micros();
            out.clear();
            for _ in 0..n {
                let sym = (seq % nsym as u64) as usize;
                payload.clear();
                quote(&mut payload, t, seq, sym, a.size);
                // `PUB quotes.S0042 _INBOX.p0.<seq> <len>`, built without core::fmt: the
                // generator shares the cores with the server it measures.
                out.extend_from_slice(b"PUB quotes.");
                crate::msg::push_symbol(&mut out, sym);
                out.extend_from_slice(b" _INBOX.p");
                crate::msg::push_u64(&mut out, p as u64);
                out.push(b'.');
                crate::msg::push_u64(&mut out, seq);
                out.push(b' ');
                crate::msg::push_u64(&mut out, payload.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&payload);
                out.extend_from_slice(b"\r\n");
                inflight.push_back(t);
                last[sym] = seq;
                seq += 1;
            }
            sent += n as u64;
            if measuring {
                st.sent += n as u64;
            }
            c.send(&out).await?;
        }
        let mut got = 0u64;
        let read = c.read_some(usize::MAX, |m: &[u8]| {
            // Acks come back in publish order on one connection.
            let t = inflight.pop_front().unwrap_or(0);
            if memchr::memmem::find(m, b"\"error\"").is_some() {
                st.errors += 1;
                return;
            }
            got += 1;
            if measuring {
                st.acked += 1;
                let _ = st.hist.record(now_micros().saturating_sub(t).max(1));
            }
        });
        match tokio::time::timeout(ACK_WAIT, read).await {
            Ok(r) => {
                if !r? {
                    break;
                }
            }
            Err(_) if still_publishing(start, total, sent, a.max_messages) => {
                return Err(BenchError::Timeout("JetStream acks".into()))
            }
            Err(_) => {
                st.errors += inflight.len() as u64;
                break;
            }
        }
        acked.fetch_add(got, Ordering::AcqRel);
    }
    cpu.end(&mut st.cpu_s);
    Ok((st, last))
}

/// How long a publisher waits for the next acknowledgement before it gives up on the rest.
const ACK_WAIT: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(5)
};

/// Whether a publisher still has messages to send: asked at the top of every turn, and again
/// when [`ACK_WAIT`] passed without an acknowledgement (the wait itself may have ended the
/// run). Silence while still publishing is a stalled server and fails the run; after it, what
/// is unacknowledged is counted as errors, which the row reports, instead of throwing away
/// what the run measured (seen once in a quick run on a busy host, and once in a full ingest
/// run where the atomic-batch row's lost acknowledgement took the whole scenario with it).
fn still_publishing(start: Instant, total: Duration, sent: u64, max: u64) -> bool {
    start.elapsed() < total && sent < max
}

/// The most messages nats-server accepts in one atomic batch.
const JS_MAX_ATOMIC_BATCH: usize = 1000;

/// JetStream's like-for-like row with Tickwire's batched HTTP publish: atomic batches (every
/// message of a batch stored, or none), one acknowledgement for each, the way a Tickwire batch
/// request gets one reply. Each message carries `Nats-Batch-Id` and `Nats-Batch-Sequence`; the
/// last one also `Nats-Batch-Commit: 1` and the reply subject the acknowledgement comes to.
pub(crate) async fn js_atomic_publisher(
    a: &RunArgs,
    p: usize,
    phase: &Phase,
    acked: &AtomicU64,
    total: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let n = a.js_atomic_batch.clamp(1, JS_MAX_ATOMIC_BATCH);
    let mut c = Conn::connect(Target::JetStream, a.addr, None).await?;
    c.send(format!("SUB _INBOX.b{p}.* 1\r\n").as_bytes())
        .await?;
    let mut hist = histogram();
    let mut errors = 0u64;
    // (stamp, messages) per batch in flight; acks come back in commit order.
    let mut inflight: VecDeque<(u64, u64)> = VecDeque::new();
    let window = (a.window / n).max(1);
    let mut out = Vec::with_capacity(n * (a.size + 160));
    let mut payload = Vec::with_capacity(a.size + 64);
    let start = Instant::now();
    let mut seq = (p as u64 + 1) << 40;
    let mut batch_no = 0u64;
    let mut sent = 0u64;
    loop {
        let publishing = still_publishing(start, total, sent, a.max_messages);
        if !publishing && inflight.is_empty() {
            break;
        }
        if publishing && inflight.len() < window {
            let t = now_micros();
            out.clear();
            batch_no += 1;
            for i in 1..=n {
                let sym = (seq % a.symbols as u64) as usize;
                payload.clear();
                quote(&mut payload, t, seq, sym, a.size);
                let commit = if i == n {
                    "Nats-Batch-Commit: 1\r\n"
                } else {
                    ""
                };
                let headers = format!(
                    "NATS/1.0\r\nNats-Batch-Id: p{p}-{batch_no}\r\nNats-Batch-Sequence: {i}\r\n{commit}\r\n"
                );
                let reply = if i == n {
                    format!(" _INBOX.b{p}.{batch_no}")
                } else {
                    String::new()
                };
                out.extend_from_slice(
                    format!(
                        "HPUB quotes.{}{reply} {} {}\r\n",
                        crate::msg::symbol(sym),
                        headers.len(),
                        headers.len() + payload.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(headers.as_bytes());
                out.extend_from_slice(&payload);
                out.extend_from_slice(b"\r\n");
                seq += 1;
            }
            inflight.push_back((t, n as u64));
            sent += n as u64;
            c.send(&out).await?;
        }
        let measuring = phase.measuring.load(Ordering::Relaxed);
        let mut got = 0u64;
        let read = c.read_some(usize::MAX, |m: &[u8]| {
            let (t, k) = inflight.pop_front().unwrap_or((0, 0));
            // A refused batch stores nothing: an error reply, or a status header (HMSG).
            if memchr::memmem::find(m, b"\"error\"").is_some() || m.starts_with(b"NATS/1.0 ") {
                errors += 1;
                return;
            }
            got += k;
            if measuring {
                let _ = hist.record_n(now_micros().saturating_sub(t).max(1), k);
            }
        });
        match tokio::time::timeout(ACK_WAIT, read).await {
            Ok(r) => {
                if !r? {
                    break;
                }
            }
            Err(_) if still_publishing(start, total, sent, a.max_messages) => {
                return Err(BenchError::Timeout("JetStream batch acks".into()))
            }
            Err(_) => {
                errors += inflight.len() as u64;
                break;
            }
        }
        acked.fetch_add(got, Ordering::AcqRel);
    }
    Ok((hist, errors))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A NATS peer that completes the handshake, then takes whatever is published and answers
    /// nothing: a JetStream whose acknowledgements are lost. (nats-server cannot be made to
    /// lose them on purpose, so this one case is scripted.)
    async fn silent_peer() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = Vec::new();
            while memchr::memmem::find(&seen, b"PING\r\n").is_none() {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(b"PONG\r\n").await.unwrap();
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        });
        addr
    }

    fn args(addr: SocketAddr, extra: &str) -> RunArgs {
        crate::test_args(&format!(
            "--scenario ingest --target jetstream --addr {addr} --symbols 10 --size 100 {extra}"
        ))
    }

    /// Publishing ended while the publisher waited: what never got an acknowledgement is an
    /// error in the row, and the run's measurements are kept.
    #[tokio::test]
    async fn acknowledgements_lost_at_the_end_are_errors_not_a_failed_run() {
        let total = Duration::from_millis(50);
        let a = args(silent_peer().await, "--window 100 --batch 10");
        let (acked, phase) = (AtomicU64::new(0), Phase::default());
        let (st, _) = js_publisher(&a, 0, &phase, &acked, total).await.unwrap();
        // One turn sent 10 messages, then waited for their acknowledgements.
        assert_eq!(st.errors, 10);
        assert_eq!(acked.load(Ordering::Relaxed), 0);

        let a = args(silent_peer().await, "--window 4000 --js-atomic-batch 1000");
        let (_, errors) = js_atomic_publisher(&a, 0, &phase, &acked, total)
            .await
            .unwrap();
        assert_eq!(errors, 1, "one batch of 1,000 sent, never acknowledged");
    }

    /// The same silence while the run is still publishing is a stalled server: the run fails
    /// rather than report a rate the server did not sustain.
    #[tokio::test]
    async fn a_stall_while_publishing_fails_the_run() {
        let total = Duration::from_secs(60);
        let (acked, phase) = (AtomicU64::new(0), Phase::default());
        let a = args(silent_peer().await, "--window 100 --batch 10");
        let err = js_publisher(&a, 0, &phase, &acked, total).await.err();
        assert!(matches!(err, Some(BenchError::Timeout(_))), "{err:?}");
        let a = args(silent_peer().await, "--window 4000 --js-atomic-batch 1000");
        let err = js_atomic_publisher(&a, 0, &phase, &acked, total)
            .await
            .err();
        assert!(matches!(err, Some(BenchError::Timeout(_))), "{err:?}");
    }
}
