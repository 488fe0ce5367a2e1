//! chat: clients in rooms publish over their WebSocket and receive every message of their room;
//! they drop their connection at random and resume by offset. Checks lost = 0, duplicated = 0,
//! ordered per room; measures end-to-end latency.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use tokio::task::JoinSet;

use crate::{
    error::Result,
    msg::now_micros,
    proto::{ws_frame, Conn},
    stats::{histogram, Latency, Sampler},
    BenchError, RunArgs, RunResult,
};

struct ClientOutcome {
    room: usize,
    hist: Histogram<u64>,
    /// How late each publish went out after it fell due, while measuring (the generator's
    /// own share of the latency, with one publish in flight per client).
    lag: Histogram<u64>,
    /// Offsets this client's publishes got (first copy, duplicates resolved by msg_id).
    acked: Vec<u64>,
    received: Vec<u64>,
    /// Publishes sent inside the measured window and acknowledged (whenever the ack came).
    acked_in_window: u64,
    /// Messages received inside the measured window.
    received_in_window: u64,
    out_of_order: u64,
    reconnects: u64,
}

fn num_after(f: &Finder<'_>, m: &[u8]) -> Option<u64> {
    let at = f.find(m)? + f.needle().len();
    let mut v = 0u64;
    let mut any = false;
    for &c in &m[at..] {
        if !c.is_ascii_digit() {
            break;
        }
        any = true;
        v = v * 10 + u64::from(c - b'0');
    }
    any.then_some(v)
}

/// A tiny xorshift: random disconnect times without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Exponentially distributed delay with the given mean.
    fn exp_ms(&mut self, mean: u64) -> Duration {
        let u = (self.next() % 1_000_000 + 1) as f64 / 1_000_001.0;
        Duration::from_millis((-(u.ln()) * mean as f64) as u64 + 1)
    }
}

async fn connect_room(a: &RunArgs, channel: &str, from: u64) -> Result<Conn> {
    let mut c = Conn::connect(a.target, a.addr, None).await?;
    let mut out = Vec::new();
    ws_frame(
        &mut out,
        format!(r#"{{"id":0,"op":"subscribe","channel":"{channel}","from":{from}}}"#).as_bytes(),
    );
    c.send(&out).await?;
    Ok(c)
}

#[allow(clippy::too_many_arguments)]
async fn client(
    a: RunArgs,
    i: usize,
    room: usize,
    channel: String,
    per_client_rate: f64,
    stop_publishing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    window: Arc<AtomicBool>,
) -> Result<ClientOutcome> {
    let f_off = Finder::new(br#""offset":"#);
    let f_t = Finder::new(br#""t":""#);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut o = ClientOutcome {
        room,
        hist: histogram(),
        lag: histogram(),
        acked: Vec::new(),
        received: Vec::new(),
        acked_in_window: 0,
        received_in_window: 0,
        out_of_order: 0,
        reconnects: 0,
    };
    let mut next_from = 0u64;
    let mut conn = connect_room(&a, &channel, next_from).await?;
    let mut k = 0u64; // publishes acknowledged
    let mut inflight: Option<Vec<u8>> = None; // frame of the unacknowledged publish
    let mut inflight_in_window = false; // whether it was first sent inside the window

    // Each message is stamped with when it fell due (`next_pub`), not when it went out: one
    // publish is in flight at a time, and a slow acknowledgement delays the next one, which
    // its delivery latency must show (open loop, docs/benchmarks.md).
    let (t0, t0_us) = (Instant::now(), now_micros());
    let mut next_pub = t0;
    let mut next_drop = Instant::now() + rng.exp_ms(a.disconnect_ms);
    let gap = Duration::from_secs_f64(1.0 / per_client_rate.max(0.1));
    let mut cmd_id = 1u64;
    while !stop.load(Ordering::Acquire) {
        let publishing = !stop_publishing.load(Ordering::Acquire);
        if publishing && Instant::now() >= next_drop {
            // Drop without a close handshake, as a lost network would.
            drop(conn);
            o.reconnects += 1;
            conn = connect_room(&a, &channel, next_from).await?;
            next_drop = Instant::now() + rng.exp_ms(a.disconnect_ms);
            if let Some(f) = &inflight {
                // Retry with the same msg_id: the server answers with the first offset.
                conn.send(f).await?;
            }
        }
        if inflight.is_none() && (publishing && Instant::now() >= next_pub) {
            let due_us = t0_us + next_pub.duration_since(t0).as_micros() as u64;
            let mut frame = Vec::new();
            cmd_id += 1;
            ws_frame(
                &mut frame,
                format!(
                    r#"{{"id":{cmd_id},"op":"publish","channel":"{channel}","msg_id":"c{i}-{k}","data":{{"t":"{}","from":"c{i}"}}}}"#,
                    due_us
                )
                .as_bytes(),
            );
            conn.send(&frame).await?;
            if measuring.load(Ordering::Relaxed) {
                let _ = o.lag.record(now_micros().saturating_sub(due_us).max(1));
            }
            inflight = Some(frame);
            inflight_in_window = window.load(Ordering::Relaxed);
            next_pub += gap;
        }
        let meas = measuring.load(Ordering::Relaxed);
        let in_window = window.load(Ordering::Relaxed);
        let mut ack = None;
        let mut err = None;
        let read = conn.read_some(usize::MAX, |m: &[u8]| {
            if m.starts_with(br#"{"ch":"#) {
                let Some(off) = num_after(&f_off, m) else {
                    return;
                };
                if off < next_from {
                    o.out_of_order += 1;
                }
                next_from = next_from.max(off + 1);
                o.received.push(off);
                o.received_in_window += u64::from(in_window);
                if meas {
                    if let Some(t) = num_after(&f_t, m) {
                        let _ = o.hist.record(now_micros().saturating_sub(t).max(1));
                    }
                }
            } else if memchr::memmem::find(m, br#""ok":"#).is_some() {
                if memchr::memmem::find(m, br#""ok":false"#).is_some() {
                    err = Some(String::from_utf8_lossy(m).into_owned());
                } else if let Some(off) = num_after(&f_off, m) {
                    if memchr::memmem::find(m, br#""class""#).is_none() {
                        ack = Some(off);
                    }
                }
            }
        });
        let wait = if inflight.is_none() && publishing {
            next_pub
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50))
        } else {
            Duration::from_millis(50)
        };
        match tokio::time::timeout(wait.max(Duration::from_millis(1)), read).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                o.reconnects += 1;
                conn = connect_room(&a, &channel, next_from).await?;
                if let Some(f) = &inflight {
                    conn.send(f).await?;
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
        if let Some(e) = err {
            return Err(BenchError::proto("tickwire-ws", format!("chat: {e}")));
        }
        if let Some(off) = ack {
            if inflight.take().is_some() {
                o.acked.push(off);
                o.acked_in_window += u64::from(inflight_in_window);
                k += 1;
            }
        }
    }
    Ok(o)
}

pub async fn chat(a: &RunArgs) -> Result<RunResult> {
    // A fresh set of rooms per run: `from: 0` must not replay earlier runs.
    let nonce = now_micros();
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    // Rates count what happened inside the measured window only: the warm-up, and the drain
    // after it, are not divided by the window's length (that read 2,998/s for 2,000/s
    // offered). `measuring` stays on through the drain for latency, so late messages count.
    let window = Arc::new(AtomicBool::new(false));
    let per_client = a.rate as f64 / a.clients.max(1) as f64;
    let mut set = JoinSet::new();
    for i in 0..a.clients {
        let room = i % a.rooms.max(1);
        set.spawn(client(
            a.clone(),
            i,
            room,
            format!("chat.bench-{nonce}-{room}"),
            per_client,
            stop_publishing.clone(),
            stop.clone(),
            measuring.clone(),
            window.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let sampler = Sampler::start(a.server_pid, Duration::from_millis(250));
    measuring.store(true, Ordering::Release);
    window.store(true, Ordering::Release);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    window.store(false, Ordering::Release);
    stop_publishing.store(true, Ordering::Release);
    let measured_s = t0.elapsed().as_secs_f64();
    // In-flight publishes get their acks and everyone catches up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    measuring.store(false, Ordering::Release);
    stop.store(true, Ordering::Release);
    let server = sampler.stop().await;
    let mut outs = Vec::new();
    while let Some(r) = set.join_next().await {
        outs.push(r.map_err(|e| BenchError::proto("bench", e.to_string()))??);
    }
    let mut expected: HashMap<usize, Vec<u64>> = HashMap::new();
    for o in &outs {
        expected.entry(o.room).or_default().extend(&o.acked);
    }
    for v in expected.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    let (mut lost, mut dup, mut ooo, mut delivered, mut reconnects) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut hist = histogram();
    let mut lag = histogram();
    let mut published = 0u64;
    for o in &outs {
        published += o.acked_in_window;
        delivered += o.received_in_window;
        let mut got = o.received.clone();
        got.sort_unstable();
        let n = got.len();
        got.dedup();
        dup += (n - got.len()) as u64;
        let want = expected.get(&o.room).map_or(&[][..], |v| v.as_slice());
        lost += want
            .iter()
            .filter(|x| got.binary_search(x).is_err())
            .count() as u64;
        ooo += o.out_of_order;
        reconnects += o.reconnects;
        let _ = hist.add(&o.hist);
        let _ = lag.add(&o.lag);
    }
    let mut r = RunResult::new(a);
    r.measured_s = measured_s;
    r.published_per_s = published as f64 / measured_s;
    r.delivered_per_s = delivered as f64 / measured_s;
    r.latency = Latency::of(&hist);
    r.server = server;
    r.extra.insert("lost".into(), lost as f64);
    r.extra.insert("duplicated".into(), dup as f64);
    r.extra.insert("out_of_order".into(), ooo as f64);
    r.extra.insert("reconnects".into(), reconnects as f64);
    crate::scenario::report_lag(&mut r, &lag);
    Ok(r)
}
