//! fanout, slow, idle and ws-publish: the same code for every target (ingest is in
//! `ingest.rs`, the JetStream publishers in `jetstream.rs`).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    error::Result,
    jetstream::js_create_stream,
    msg::{now_micros, Fields},
    open_loop::{publish_loop, Schedule},
    proto::{http_get, Conn},
    publish::{publisher, AckStats},
    stats::{histogram, Latency, Sampler},
    BenchError, RunArgs, RunResult, Scenario, Target,
};

/// Connections opened at once while setting up.
const CONNECT_PARALLEL: usize = 128;
/// Source addresses used for client connections: one address holds at most ~28k connections
/// to one server port.
const PER_SOURCE: usize = 20_000;

fn source_for(i: usize) -> Option<IpAddr> {
    let n = i / PER_SOURCE;
    // All of 127/8 is loopback. The second octet changes from run to run (process id) because
    // a bound source port stays in TIME_WAIT for a minute after the run closes it: a second
    // large run from the same addresses would find the ephemeral range used up.
    let run = 1 + (std::process::id() % 250) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, run, 0, 1 + n as u8)))
}

/// Flags shared by the publisher and the subscribers of one phase.
#[derive(Default)]
pub(crate) struct Phase {
    pub(crate) measuring: AtomicBool,
    publishing_done: AtomicBool,
    stop: AtomicBool,
    /// A fixed-rate publisher's schedule, set as it starts (none when it publishes as fast
    /// as it can): subscribers need it to tell how stale the values they hold are.
    pub(crate) schedule: std::sync::OnceLock<Schedule>,
}

/// How often each subscriber samples its staleness on every symbol it holds.
const STALENESS_EVERY_US: u64 = 100_000;

/// What a publisher reports: messages sent while measuring, the last sequence number per
/// symbol (for the convergence check), and, for one-command-per-message publishers, its acks.
pub(crate) struct PubOutcome {
    pub(crate) published: u64,
    pub(crate) last: Vec<u64>,
    pub(crate) acks: Option<AckStats>,
    /// Fixed-rate publishers: how late each message was sent after its due time (the
    /// generator's own share of every tick-to-client latency), while measuring.
    pub(crate) lag: Option<Histogram<u64>>,
}

struct SubOutcome {
    slow: bool,
    hist: Histogram<u64>,
    /// Staleness samples (see [`Schedule::staleness_us`]) while measuring.
    stale: Histogram<u64>,
    delivered: u64,
    bytes: u64,
    /// Highest sequence number seen per symbol (the sequence encodes the symbol).
    last: Vec<u64>,
    symbols: Vec<usize>,
}

fn symbols_of(a: &RunArgs, i: usize) -> Vec<usize> {
    let k = a.subs.min(a.symbols).max(1);
    (0..k).map(|j| (i * k + j) % a.symbols).collect()
}

/// A subscribing client: a protocol connection read by hand, or a gRPC `Subscribe` call.
pub(crate) enum SubConn {
    Raw(Conn),
    Grpc(crate::grpc::GrpcSub),
    GrpcH2(crate::grpc::h2c::H2Sub),
}

impl SubConn {
    /// [`Conn::read_some`]; a gRPC call hands over one message per call (`chunk` does not
    /// apply: HTTP/2 flow control paces a slow gRPC reader).
    async fn read_some(&mut self, chunk: usize, mut f: impl FnMut(&[u8])) -> Result<bool> {
        match self {
            SubConn::Raw(c) => c.read_some(chunk, f).await,
            SubConn::Grpc(g) => g.read_some(&mut f).await,
            SubConn::GrpcH2(g) => g.read_some(&mut f).await,
        }
    }
}

async fn subscriber(
    mut conn: SubConn,
    phase: Arc<Phase>,
    symbols: Vec<usize>,
    nsym: usize,
    payload_size: usize,
    slow_bytes_per_s: Option<f64>,
) -> Result<SubOutcome> {
    let fields = Fields::default();
    let mut hist = histogram();
    let mut stale = histogram();
    let mut delivered = 0u64;
    let mut bytes = 0u64;
    let mut last = vec![0u64; nsym];
    // Subscribers sample at different moments, spread over the period.
    let mut next_sample =
        now_micros() + (symbols.first().copied().unwrap_or(0) as u64 * 7919) % STALENESS_EVERY_US;
    while !phase.stop.load(Ordering::Acquire) {
        let slow = slow_bytes_per_s.filter(|_| !phase.publishing_done.load(Ordering::Acquire));
        let chunk = if slow.is_some() { 4096 } else { usize::MAX };
        let measuring = phase.measuring.load(Ordering::Relaxed);
        // One clock read per socket read, taken when the bytes are in (not before waiting).
        let mut now = 0u64;
        let mut got = 0usize;
        let read = conn.read_some(chunk, |m: &[u8]| {
            got += m.len();
            if let Some(t) = fields.t(m) {
                if let Some(s) = fields.s(m) {
                    let sym = (s % nsym as u64) as usize;
                    last[sym] = last[sym].max(s);
                }
                if measuring {
                    if now == 0 {
                        now = now_micros();
                    }
                    delivered += 1;
                    // Payload bytes, the same for every target: the envelopes differ (a
                    // Tickwire push wraps the 100-byte quote in ~60 bytes of JSON).
                    bytes += payload_size as u64;
                    let _ = hist.record(now.saturating_sub(t).max(1));
                }
            }
        });
        match tokio::time::timeout(Duration::from_millis(200), read).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(e)) => {
                if phase.stop.load(Ordering::Acquire) {
                    break;
                }
                return Err(e);
            }
            // Nothing arrived: still sampled below. A subscriber the server has stopped
            // feeding holds the stalest values of all, and skipping it here left exactly
            // those out of the staleness figures.
            Err(_) => {}
        }
        if let (Some(rate), true) = (slow, got > 0) {
            tokio::time::sleep(Duration::from_secs_f64(got as f64 / rate)).await;
        }
        if let Some(sched) = phase.schedule.get() {
            let now = now_micros();
            if now >= next_sample && phase.measuring.load(Ordering::Relaxed) {
                next_sample = now + STALENESS_EVERY_US;
                for &sym in &symbols {
                    let held = last.get(sym).copied().unwrap_or(0);
                    let _ = stale.record(sched.staleness_us(sym as u64, held, now));
                }
            }
        }
    }
    Ok(SubOutcome {
        slow: slow_bytes_per_s.is_some(),
        hist,
        stale,
        delivered,
        bytes,
        last,
        symbols,
    })
}

struct FanoutOutcome {
    measured_s: f64,
    published: u64,
    fast: Histogram<u64>,
    slow: Histogram<u64>,
    /// Fast subscribers' staleness samples; empty without a fixed-rate schedule.
    stale_fast: Histogram<u64>,
    /// The same for slow subscribers: where holding the newest value (conflation) and
    /// queueing every message differ most.
    stale_slow: Histogram<u64>,
    delivered_fast: u64,
    delivered_slow: u64,
    bytes: u64,
    /// Slow subscribers whose last value per symbol equals the last published one.
    slow_converged: f64,
    all_converged: f64,
    server: Option<crate::stats::ServerUsage>,
    /// ws-publish: the publisher's acknowledgements.
    acks: Option<AckStats>,
    /// Fixed-rate runs: how late the publisher sent each message (see [`PubOutcome::lag`]).
    lag: Option<Histogram<u64>>,
    /// ws-publish on Tickwire: `tickwire_published_total` per second over the window.
    server_published_per_s: Option<f64>,
}

/// Where subscriber `i` connects: the target itself (or the `--sub-addr`s in turn), except for
/// ws-publish over MQTT or gRPC with `--http-addr`, whose subscribers are Tickwire WebSocket
/// clients (a gRPC publisher's must be: the target is no protocol a raw client speaks).
fn sub_endpoint(a: &RunArgs, i: usize) -> (Target, SocketAddr) {
    match a.http_addr {
        Some(http)
            if a.scenario == Scenario::WsPublish
                && matches!(a.target, Target::Mqtt | Target::TickwireGrpc) =>
        {
            (Target::TickwireWs, http)
        }
        _ if !a.sub_addr.is_empty() => (a.target, a.sub_addr[i % a.sub_addr.len()]),
        _ => (a.target, a.addr),
    }
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
fn metric_of(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// An unlabelled counter from Tickwire's /metrics.
async fn tickwire_counter(http: SocketAddr, name: &str) -> Result<f64> {
    let text = http_get(http, "/metrics").await?;
    metric_of(&text, name)
        .ok_or_else(|| BenchError::proto("tickwire http", format!("no {name} in /metrics")))
}

/// `tickwire_published_total` from Tickwire's /metrics.
async fn published_total(http: SocketAddr) -> Result<u64> {
    // A counter's value is an integer written without a fraction.
    tickwire_counter(http, "tickwire_published_total")
        .await
        .map(|v| v as u64)
}

async fn connect_all(a: &RunArgs, n: usize, subscribe: bool) -> Result<Vec<SubConn>> {
    let grpc = match (a.sub_encoding, a.grpc_addr) {
        (crate::SubEncoding::Grpc, Some(addr)) if subscribe => Some(addr),
        (crate::SubEncoding::Grpc, _) => {
            return Err(BenchError::Usage(
                "--sub-encoding grpc subscribes through --grpc-addr (fanout, slow)".into(),
            ))
        }
        _ => None,
    };
    let sem = Arc::new(Semaphore::new(CONNECT_PARALLEL));
    let mut set = JoinSet::new();
    for i in 0..n {
        let sem = sem.clone();
        let a2 = a.clone();
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            if let Some(addr) = grpc {
                let symbols = symbols_of(&a2, i);
                let conn = match a2.grpc_client {
                    crate::GrpcClient::Tonic => SubConn::Grpc(
                        crate::grpc::GrpcSub::subscribe(addr, a2.grpc_window, &symbols).await?,
                    ),
                    crate::GrpcClient::H2 => SubConn::GrpcH2(
                        crate::grpc::h2c::H2Sub::subscribe(addr, a2.grpc_window, &symbols).await?,
                    ),
                };
                return Ok::<_, BenchError>((i, conn));
            }
            let (target, addr) = sub_endpoint(&a2, i);
            let proto = a2.sub_encoding == crate::SubEncoding::Proto;
            let mut c = Conn::connect_as(target, addr, source_for(i), proto).await?;
            if subscribe {
                c.subscribe(&symbols_of(&a2, i)).await?;
            }
            Ok::<_, BenchError>((i, SubConn::Raw(c)))
        });
    }
    let mut conns: Vec<Option<SubConn>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, c) = r.map_err(|e| BenchError::proto("bench", e.to_string()))??;
        conns[i] = Some(c);
    }
    Ok(conns.into_iter().flatten().collect())
}

async fn fanout(a: &RunArgs, slow_pct: u32) -> Result<FanoutOutcome> {
    let conns = connect_all(a, a.clients, true).await?;
    let phase = Arc::new(Phase::default());
    let per_client_msgs = a.rate as f64 * a.subs as f64 / a.symbols as f64;
    let frame = (a.size + 80) as f64;
    let slow_rate = (per_client_msgs * frame / f64::from(a.slow_factor.max(1))).max(1024.0);
    let every = if slow_pct == 0 {
        usize::MAX
    } else {
        (100 / slow_pct.min(100)) as usize
    };
    let mut set = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let slow = (every != usize::MAX && i % every == every - 1).then_some(slow_rate);
        set.spawn(subscriber(
            c,
            phase.clone(),
            symbols_of(a, i),
            a.symbols,
            a.size,
            slow,
        ));
    }
    let total = Duration::from_secs_f64(a.warmup + a.duration);
    let ph = phase.clone();
    let warm = Duration::from_secs_f64(a.warmup);
    let dur = Duration::from_secs_f64(a.duration);
    let pid = a.server_pid;
    // ws-publish reads the server's own count of appended messages around the window.
    let metrics = a
        .tickwire_http()
        .filter(|_| a.scenario == Scenario::WsPublish);
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(warm).await;
        let s = Sampler::start(pid, Duration::from_millis(250));
        // Best effort: a server without /metrics (the sink, a peer) just has no such column.
        let m0 = match metrics {
            Some(http) => match published_total(http).await {
                Ok(n) => Some((n, Instant::now())),
                Err(e) => {
                    eprintln!("tickwire bench: no server_published_per_s: {e}");
                    None
                }
            },
            None => None,
        };
        ph.measuring.store(true, Ordering::Release);
        let t0 = Instant::now();
        tokio::time::sleep(dur).await;
        ph.measuring.store(false, Ordering::Release);
        // The window ends here: stopping the sampler takes up to one sampling period, which
        // must not count as measured time (it understated every rate by a few percent).
        let measured_s = t0.elapsed().as_secs_f64();
        let server_published_per_s = match (metrics, m0) {
            (Some(http), Some((n0, at0))) => published_total(http)
                .await
                .ok()
                .map(|n1| n1.saturating_sub(n0) as f64 / at0.elapsed().as_secs_f64()),
            _ => None,
        };
        (s.stop().await, measured_s, server_published_per_s)
    });
    // The publisher gets its own thread: on a runtime shared with a thousand subscriber tasks
    // its 1 ms pacing would be starved and the offered rate would sag.
    let (a2, ph2) = (a.clone(), phase.clone());
    let publisher = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("publisher runtime"))?
            .block_on(async {
                if a2.scenario == Scenario::WsPublish {
                    publisher(&a2, &ph2, total).await
                } else {
                    publish_loop(&a2, &ph2, total).await
                }
            })
    });
    let PubOutcome {
        published,
        last,
        acks,
        lag,
    } = tokio::task::spawn_blocking(move || publisher.join())
        .await
        .map_err(|e| BenchError::proto("bench", e.to_string()))?
        .map_err(|_| BenchError::proto("bench", "publisher thread panicked"))??;
    let (server, measured_s, server_published_per_s) = sampler
        .await
        .map_err(|e| BenchError::proto("bench", e.to_string()))?;
    phase.publishing_done.store(true, Ordering::Release);
    // Let everyone drain what is queued, so convergence can be checked.
    if a.clients > 0 {
        tokio::time::sleep(Duration::from_secs_f64(a.drain.clamp(0.0, 60.0))).await;
    }
    phase.stop.store(true, Ordering::Release);
    let mut out = FanoutOutcome {
        measured_s,
        published,
        fast: histogram(),
        slow: histogram(),
        stale_fast: histogram(),
        stale_slow: histogram(),
        delivered_fast: 0,
        delivered_slow: 0,
        bytes: 0,
        slow_converged: f64::NAN,
        all_converged: 0.0,
        server,
        acks,
        lag,
        server_published_per_s,
    };
    let (mut conv, mut conv_slow, mut n, mut n_slow) = (0usize, 0usize, 0usize, 0usize);
    while let Some(r) = set.join_next().await {
        let o = r.map_err(|e| BenchError::proto("bench", e.to_string()))??;
        let ok = converged(&o.symbols, &o.last, &last);
        n += 1;
        conv += usize::from(ok);
        out.bytes += o.bytes;
        if o.slow {
            n_slow += 1;
            conv_slow += usize::from(ok);
            out.delivered_slow += o.delivered;
            let _ = out.slow.add(&o.hist);
            let _ = out.stale_slow.add(&o.stale);
        } else {
            out.delivered_fast += o.delivered;
            let _ = out.fast.add(&o.hist);
            let _ = out.stale_fast.add(&o.stale);
        }
    }
    out.all_converged = conv as f64 / n.max(1) as f64;
    if n_slow > 0 {
        out.slow_converged = conv_slow as f64 / n_slow as f64;
    }
    Ok(out)
}

/// Adds `publisher_lag_p50_us` and `_p99_us` to `r` (none without samples): how late the
/// publisher sent each message after it fell due. The generator's own lateness is inside every
/// latency measured from the due time: shown, so a reader can tell the server's share from the
/// load generator's.
pub(crate) fn report_lag(r: &mut RunResult, lag: &Histogram<u64>) {
    if lag.is_empty() {
        return;
    }
    let l = Latency::of(lag);
    r.extra
        .insert("publisher_lag_p50_us".into(), l.p50_us as f64);
    r.extra
        .insert("publisher_lag_p99_us".into(), l.p99_us as f64);
}

/// Whether a subscriber ended holding the newest published value of every symbol it is on:
/// `held` and `published` are the newest sequence number per symbol that it received and
/// that the publisher sent. Symbols it is not on do not count.
fn converged(symbols: &[usize], held: &[u64], published: &[u64]) -> bool {
    symbols
        .iter()
        .all(|&s| held.get(s).is_some_and(|h| published.get(s) == Some(h)))
}

/// The figures every fan-out shaped run reports: rates over the measured window and the fast
/// clients' latency.
fn fanout_result(a: &RunArgs, o: &FanoutOutcome) -> RunResult {
    let mut r = RunResult::new(a);
    r.measured_s = o.measured_s;
    r.published_per_s = o.published as f64 / o.measured_s;
    r.delivered_per_s = o.delivered_fast as f64 / o.measured_s;
    r.mb_per_s = o.bytes as f64 / o.measured_s / 1e6;
    r.latency = Latency::of(&o.fast);
    if !o.stale_fast.is_empty() {
        let st = Latency::of(&o.stale_fast);
        r.extra.insert("staleness_p50_us".into(), st.p50_us as f64);
        r.extra.insert("staleness_p99_us".into(), st.p99_us as f64);
        r.extra.insert("staleness_max_us".into(), st.max_us as f64);
    }
    if !o.stale_slow.is_empty() {
        let st = Latency::of(&o.stale_slow);
        r.extra
            .insert("slow_staleness_p50_us".into(), st.p50_us as f64);
        r.extra
            .insert("slow_staleness_p99_us".into(), st.p99_us as f64);
        r.extra
            .insert("slow_staleness_max_us".into(), st.max_us as f64);
    }
    if let Some(lag) = &o.lag {
        report_lag(&mut r, lag);
    }
    r
}

pub async fn fanout_run(a: &RunArgs) -> Result<RunResult> {
    let o = fanout(a, 0).await?;
    let mut r = fanout_result(a, &o);
    r.server = o.server;
    r.extra.insert("converged".into(), o.all_converged);
    r.extra.insert(
        "delivered_per_published".into(),
        o.delivered_fast as f64 / (o.published.max(1)) as f64,
    );
    Ok(r)
}

/// One connection publishing one message per command (WebSocket `publish`, MQTT PUBLISH at
/// `--qos`, a gRPC `PublishRequest`, a JetStream PUB), acks pipelined up to `--window`, at
/// `--rate` (0: as fast as the acks allow), with `--clients` subscribers (0 for the throughput
/// rows) exactly as in fanout.
///
/// published/s is acknowledged messages per second (QoS 0: accepted, read through PINGREQ
/// barriers); latency is tick-to-client with subscribers and publish-to-ack without.
pub async fn ws_publish(a: &RunArgs) -> Result<RunResult> {
    if a.target == Target::JetStream {
        js_create_stream(a).await?;
    }
    let o = fanout(a, 0).await?;
    let mut r = fanout_result(a, &o);
    r.server = o.server.clone();
    if let Some(p) = o.server_published_per_s {
        // Includes what the server publishes itself (live candle bars, up to one per symbol
        // and resolution per second).
        r.extra.insert("server_published_per_s".into(), p);
    }
    let Some(acks) = &o.acks else {
        return Err(BenchError::proto(
            "bench",
            "the ws-publish publisher reported no acks",
        ));
    };
    r.published_per_s = acks.acked as f64 / acks.acked_over_s.unwrap_or(o.measured_s).max(1e-9);
    r.extra
        .insert("sent_per_s".into(), acks.sent as f64 / o.measured_s);
    r.extra.insert("errors".into(), acks.errors as f64);
    if let Some(cpu) = acks.cpu_s {
        r.extra
            .insert("publisher_cpu_pct".into(), cpu / o.measured_s * 100.0);
    }
    if !acks.hist.is_empty() {
        let l = Latency::of(&acks.hist);
        r.extra.insert("ack_p50_us".into(), l.p50_us as f64);
        r.extra.insert("ack_p99_us".into(), l.p99_us as f64);
    }
    if a.clients > 0 {
        r.extra.insert("converged".into(), o.all_converged);
    } else {
        r.latency = Latency::of(&acks.hist);
        r.mb_per_s = r.published_per_s * a.size as f64 / 1e6;
    }
    Ok(r)
}

/// Fanout without slow clients, then the same with `slow_pct`% slow ones, in one run.
pub async fn slow(a: &RunArgs) -> Result<RunResult> {
    let base = fanout(a, 0).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let o = fanout(a, a.slow_pct).await?;
    let mut r = fanout_result(a, &o);
    let bl = Latency::of(&base.fast);
    r.extra.insert("baseline_p99_us".into(), bl.p99_us as f64);
    r.extra.insert(
        "p99_vs_baseline".into(),
        r.latency.p99_us as f64 / bl.p99_us.max(1) as f64,
    );
    r.extra.insert(
        "slow_delivered_per_s".into(),
        o.delivered_slow as f64 / o.measured_s,
    );
    r.extra.insert("slow_converged".into(), o.slow_converged);
    // A slow client the server dropped for taking nothing cannot converge: say how many were
    // (Tickwire only; best effort, as for server_published_per_s).
    if let Some(http) = a.tickwire_http() {
        match tickwire_counter(http, "tickwire_write_timeout_disconnects_total").await {
            Ok(n) => {
                r.extra.insert("write_timeout_disconnects".into(), n);
            }
            Err(e) => eprintln!("tickwire bench: no write_timeout_disconnects: {e}"),
        }
    }
    if let Some(u) = &o.server {
        // Flat memory: the second half of the window peaks no higher than the first (+5%).
        let half = u.rss_samples_kb.len() / 2;
        let first = u.rss_samples_kb[..half].iter().copied().max().unwrap_or(0);
        let second = u.rss_samples_kb[half..].iter().copied().max().unwrap_or(0);
        r.extra.insert(
            "rss_growth_2nd_half_pct".into(),
            (second as f64 / first.max(1) as f64 - 1.0) * 100.0,
        );
    }
    r.server = o.server;
    Ok(r)
}

/// Opens `clients` connections that do nothing (after subscribing, with `--idle-subscribe`),
/// and reports the server's memory per connection.
pub async fn idle(a: &RunArgs) -> Result<RunResult> {
    let pid = a
        .server_pid
        .ok_or_else(|| BenchError::Usage("idle needs --server-pid".into()))?;
    let before = crate::stats::rss_kb(pid).unwrap_or(0);
    let sampler = Sampler::start(Some(pid), Duration::from_millis(500));
    let t0 = Instant::now();
    let conns = connect_all(a, a.clients, a.idle_subscribe).await?;
    let connect_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(a.duration.clamp(1.0, 30.0))).await;
    let after = crate::stats::rss_kb(pid).unwrap_or(0);
    let mut r = RunResult::new(a);
    r.measured_s = a.duration;
    r.server = sampler.stop().await;
    r.extra.insert("connections".into(), conns.len() as f64);
    r.extra.insert("connect_s".into(), connect_s);
    r.extra
        .insert("rss_before_mb".into(), before as f64 / 1024.0);
    r.extra.insert("rss_after_mb".into(), after as f64 / 1024.0);
    r.extra.insert(
        "bytes_per_conn".into(),
        (after.saturating_sub(before) * 1024) as f64 / conns.len().max(1) as f64,
    );
    drop(conns);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_converged_only_if_it_holds_every_newest_value_it_is_on() {
        let published = [7, 8, 9, 10];
        // On symbols 1 and 3, holding their newest values; symbol 0 differs but is not its.
        assert!(converged(&[1, 3], &[0, 8, 0, 10], &published));
        // One value behind on one symbol (the newest quote never arrived).
        assert!(!converged(&[1, 3], &[0, 8, 0, 6], &published));
        // Nothing at all on a symbol it is on.
        assert!(!converged(&[1, 3], &[0, 8, 0, 0], &published));
        // A symbol index outside what was published is never converged.
        assert!(!converged(&[9], &[0; 10], &published));
    }

    #[test]
    fn metric_of_reads_the_unlabelled_sample_of_that_name_only() {
        let text = "# HELP tickwire_published_total x\n# TYPE tickwire_published_total counter\n\
                    tickwire_published_total_bytes 7\ntickwire_published_total 1234\n\
                    tickwire_write_timeout_disconnects_total 3\n";
        assert_eq!(metric_of(text, "tickwire_published_total"), Some(1234.0));
        assert_eq!(
            metric_of(text, "tickwire_write_timeout_disconnects_total"),
            Some(3.0)
        );
        assert_eq!(metric_of(text, "tickwire_missing_total"), None);
        assert_eq!(
            metric_of("tickwire_published_total x\n", "tickwire_published_total"),
            None
        );
    }
}
