//! ingest: N publishers push quotes as fast as acknowledgements allow, through HTTP batches
//! (Tickwire) or the JetStream publishers of `jetstream.rs`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::{
    batch::Publisher,
    error::Result,
    jetstream::{js_atomic_publisher, js_create_stream, js_publisher, js_tail},
    msg::{now_micros, quote},
    scenario::Phase,
    stats::{histogram, Latency, Sampler},
    BenchError, RunArgs, RunResult, Target,
};

/// N publishers push quotes as fast as acknowledgements allow: Tickwire through HTTP batches
/// (each answered once durable under the server's fsync policy), JetStream through async
/// publishes with up to `window` acks outstanding per connection.
pub async fn ingest(a: &RunArgs) -> Result<RunResult> {
    if a.target == Target::JetStream {
        js_create_stream(a).await?;
    }
    let tailed = Arc::new(AtomicU64::new(0));
    // Stopped (dropped) once the window is measured: it reads until then.
    let tail = (a.target == Target::JetStream && a.js_tail).then(|| {
        let (a2, t) = (a.clone(), tailed.clone());
        tokio::spawn(async move { js_tail(&a2, &t).await })
    });
    let phase = Arc::new(Phase::default());
    let acked = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    let total = Duration::from_secs_f64(a.warmup + a.duration);
    for p in 0..a.publishers.max(1) {
        let a2 = a.clone();
        let ph = phase.clone();
        let ack = acked.clone();
        set.spawn(async move {
            if a2.target == Target::JetStream && a2.js_atomic_batch > 0 {
                js_atomic_publisher(&a2, p, &ph, &ack, total).await
            } else if a2.target == Target::JetStream {
                js_publisher(&a2, p, &ph, &ack, total)
                    .await
                    .map(|(st, _)| (st.hist, st.errors))
            } else {
                batch_publisher(&a2, p, &ph, &ack, total).await
            }
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let sampler = Sampler::start(a.server_pid, Duration::from_millis(250));
    let a0 = acked.load(Ordering::Acquire);
    let tail0 = tailed.load(Ordering::Acquire);
    phase.measuring.store(true, Ordering::Release);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    phase.measuring.store(false, Ordering::Release);
    let n = acked.load(Ordering::Acquire) - a0;
    let tail_n = tailed.load(Ordering::Acquire) - tail0;
    let measured_s = t0.elapsed().as_secs_f64();
    let server = sampler.stop().await;
    let mut hist = histogram();
    let mut errors = 0u64;
    while let Some(r) = set.join_next().await {
        let (h, e) = r.map_err(|e| BenchError::proto("bench", e.to_string()))??;
        let _ = hist.add(&h);
        errors += e;
    }
    let mut r = RunResult::new(a);
    r.measured_s = measured_s;
    r.published_per_s = n as f64 / measured_s;
    r.mb_per_s = n as f64 * a.size as f64 / measured_s / 1e6;
    r.latency = Latency::of(&hist);
    r.server = server;
    r.extra.insert("errors".into(), errors as f64);
    if let Some(tail) = tail {
        if tail.is_finished() {
            // It ended early: that is an error (a refused consumer, a closed connection).
            tail.await
                .map_err(|e| BenchError::proto("bench", e.to_string()))??;
        } else {
            tail.abort();
        }
        r.extra
            .insert("tail_per_s".into(), tail_n as f64 / measured_s);
    }
    Ok(r)
}

async fn batch_publisher(
    a: &RunArgs,
    p: usize,
    phase: &Phase,
    acked: &AtomicU64,
    total: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let mut pb = Publisher::connect(a.target, a.addr, a.encoding).await?;
    let mut hist = histogram();
    let mut payload = Vec::with_capacity(a.size + 64);
    let start = Instant::now();
    let mut seq = (p as u64 + 1) << 40;
    let mut sent = 0u64;
    while start.elapsed() < total && sent < a.max_messages {
        let t = now_micros();
        for _ in 0..a.batch {
            let sym = (seq % a.symbols as u64) as usize;
            payload.clear();
            quote(&mut payload, t, seq, sym, a.size);
            pb.add(sym, &payload);
            seq += 1;
        }
        let n = pb.pending() as u64;
        pb.flush().await?;
        sent += n;
        acked.fetch_add(n, Ordering::AcqRel);
        if phase.measuring.load(Ordering::Relaxed) {
            let _ = hist.record_n(now_micros().saturating_sub(t).max(1), n);
        }
    }
    Ok((hist, 0))
}
