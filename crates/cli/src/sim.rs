//! `tickwire sim`: realistic quotes for demos and benchmarks, published to a running server over
//! HTTP in batches.
//!
//! Prices are integers of "points" (the symbol's smallest increment) formatted with the
//! symbol's decimals, so every published price is an exact decimal. Each symbol does a random
//! walk whose step scales with its volatility; the spread is a few points and widens during
//! bursts; every few seconds a random symbol bursts (5x its rate and 3x its volatility for a
//! second), as news does to a real feed.

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Args;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::sync::Semaphore;

/// Arguments of `tickwire sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of symbols (well-known FX/metals/crypto/index names first, then SIM<n>).
    #[arg(long, default_value_t = 10)]
    pub symbols: usize,
    /// Quotes per second, all symbols together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// The server and the key to publish with (`--token`, else a key with the `publish`
    /// scope from `--config` or TICKWIRE_API_KEYS, as the server reads them).
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Fraction of ticks that are also published as a trade on `trades.<SYMBOL>` (0 = quotes only).
    #[arg(long, default_value_t = 0.0)]
    pub trades: f64,
    /// Random seed, for reproducible runs.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// HTTP requests in flight at most.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Levels per side of an L2 book published with each quote on `depth.<SYMBOL>` (the book
    /// projection builds `book.<SYMBOL>` from it, docs/books.md); 0 = no books.
    #[arg(long, default_value_t = 0)]
    pub depth: u32,
}

struct Sym {
    name: String,
    decimals: u32,
    /// Mid price in points (10^-decimals).
    mid: i64,
    /// Typical step per tick, points.
    vol: i64,
    /// Typical spread, points.
    spread: i64,
    burst_until: Option<Instant>,
    /// The last quote, points: the book is laid out from it.
    bid: i64,
    ask: i64,
}

/// Name, start price, decimals, step and spread (points) of the well-known symbols.
const PRESETS: &[(&str, &str, u32, i64, i64)] = &[
    ("EURUSD", "1.08500", 5, 2, 2),
    ("GBPUSD", "1.27100", 5, 3, 3),
    ("USDJPY", "151.200", 3, 3, 2),
    ("AUDUSD", "0.65800", 5, 2, 3),
    ("USDCHF", "0.90500", 5, 2, 3),
    ("USDCAD", "1.36200", 5, 2, 3),
    ("XAUUSD", "2350.00", 2, 8, 20),
    ("BTCUSD", "65000.00", 2, 900, 1500),
    ("ETHUSD", "3200.00", 2, 60, 80),
    ("US500", "5200.0", 1, 2, 4),
    ("EURGBP", "0.85400", 5, 1, 2),
    ("EURJPY", "164.100", 3, 3, 3),
];

fn make_symbols(n: usize, rng: &mut StdRng) -> Vec<Sym> {
    (0..n)
        .map(|i| match PRESETS.get(i) {
            Some(&(name, price, decimals, vol, spread)) => {
                let mid = price.replace('.', "").parse::<i64>().unwrap_or(100_000);
                Sym {
                    name: name.into(),
                    decimals,
                    mid,
                    vol,
                    spread,
                    burst_until: None,
                    bid: 0,
                    ask: 0,
                }
            }
            None => {
                let decimals = rng.gen_range(2..=5);
                Sym {
                    name: format!("SIM{i}"),
                    decimals,
                    mid: rng.gen_range(1_000..1_000_000),
                    vol: rng.gen_range(1..10),
                    spread: rng.gen_range(1..10),
                    burst_until: None,
                    bid: 0,
                    ask: 0,
                }
            }
        })
        .collect()
}

fn fmt_points(points: i64, decimals: u32) -> String {
    let neg = points < 0;
    let p = points.unsigned_abs();
    let scale = 10u64.pow(decimals);
    let s = if decimals == 0 {
        format!("{p}")
    } else {
        format!(
            "{}.{:0width$}",
            p / scale,
            p % scale,
            width = decimals as usize
        )
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

impl Sym {
    /// Advances the walk one tick; returns (bid, ask) text.
    fn step(&mut self, rng: &mut StdRng, now: Instant) -> (String, String) {
        let bursting = self.burst_until.is_some_and(|t| now < t);
        let vol = if bursting { self.vol * 3 } else { self.vol };
        // Sum of three uniforms: a cheap bell-shaped step.
        let step: i64 = (0..3).map(|_| rng.gen_range(-vol..=vol)).sum::<i64>() / 2;
        // Mild mean reversion keeps long demos in a sane range.
        self.mid = (self.mid + step).max(self.spread * 10 + 10);
        let spread = if bursting {
            self.spread * rng.gen_range(2..=4)
        } else {
            self.spread + rng.gen_range(0..=self.spread / 2 + 1) - 1
        }
        .max(1);
        let bid = self.mid - spread / 2;
        let ask = bid + spread;
        (self.bid, self.ask) = (bid, ask);
        (
            fmt_points(bid, self.decimals),
            fmt_points(ask, self.decimals),
        )
    }
}

impl Sym {
    /// A depth snapshot of `levels` per side around the last quote, one spread apart, sizes
    /// growing away from the top: the book projection turns successive ones into deltas.
    fn depth(&self, rng: &mut StdRng, levels: u32) -> String {
        let step = self.spread.max(1);
        let mut out = String::with_capacity(64 * levels as usize);
        for k in 0..i64::from(levels) {
            for (side, px) in [("bid", self.bid - k * step), ("ask", self.ask + k * step)] {
                if px <= 0 {
                    continue;
                }
                if !out.is_empty() {
                    out.push(',');
                }
                let size = rng.gen_range(1..=100) * (k + 1);
                out.push_str(&format!(
                    r#"{{"side":"{side}","price":"{}","size":"{size}"}}"#,
                    fmt_points(px, self.decimals)
                ));
            }
        }
        format!(
            r#"{{"channel":"depth.{}","data":{{"snapshot":[{out}]}}}}"#,
            self.name
        )
    }
}

/// Runs until the duration ends or Ctrl-C.
pub fn run(args: SimArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickwire sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(sim(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire sim: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sim(args: SimArgs) -> Result<(), String> {
    if args.symbols == 0 || args.rate == 0 {
        return Err("--symbols and --rate must be at least 1".into());
    }
    let target = args.client.resolve(tickwire_gateway::Scope::Publish)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut syms = make_symbols(args.symbols, &mut rng);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/v1/publish", target.base);
    let inflight = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tick = Duration::from_millis(20);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut owed = 0.0f64;
    let mut next_burst = Instant::now() + Duration::from_secs(3);
    println!(
        "simulating {} symbols at {} quotes/s into {}",
        args.symbols, args.rate, target.base
    );
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let now = Instant::now();
        if args
            .duration
            .is_some_and(|d| started.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        if now >= next_burst {
            let i = rng.gen_range(0..syms.len());
            syms[i].burst_until = Some(now + Duration::from_secs(1));
            next_burst = now + Duration::from_millis(rng.gen_range(2_000..8_000));
        }
        owed += args.rate as f64 * tick.as_secs_f64();
        let n = owed.floor() as usize;
        owed -= n as f64;
        let mut items: Vec<String> = Vec::with_capacity(n);
        for _ in 0..n {
            // Bursting symbols get 5x their share.
            let mut i = rng.gen_range(0..syms.len());
            if let Some(b) = syms
                .iter()
                .position(|s| s.burst_until.is_some_and(|t| now < t))
            {
                if rng.gen_bool(0.5) {
                    i = b;
                }
            }
            let s = &mut syms[i];
            let (bid, ask) = s.step(&mut rng, now);
            items.push(format!(
                r#"{{"channel":"quotes.{}","data":{{"bid":"{bid}","ask":"{ask}"}}}}"#,
                s.name
            ));
            if args.depth > 0 {
                items.push(s.depth(&mut rng, args.depth));
            }
            if args.trades > 0.0 && rng.gen_bool(args.trades.min(1.0)) {
                let size = rng.gen_range(1..=100);
                let price = if rng.gen_bool(0.5) { &bid } else { &ask };
                items.push(format!(
                    r#"{{"channel":"trades.{}","data":{{"price":"{price}","size":"{size}"}}}}"#,
                    s.name
                ));
            }
        }
        for chunk in items.chunks(10_000) {
            let body = format!("[{}]", chunk.join(","));
            let count = chunk.len() as u64;
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                break;
            };
            let mut req = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(k) = &target.token {
                req = req.bearer_auth(k);
            }
            let (sent, failed) = (sent.clone(), failed.clone());
            tokio::spawn(async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        sent.fetch_add(count, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        if failed.fetch_add(count, Ordering::Relaxed) == 0 {
                            eprintln!("publish refused: {status} {text}");
                        }
                    }
                    Err(e) => {
                        if failed.fetch_add(count, Ordering::Relaxed) == 0 {
                            eprintln!("publish failed: {e}");
                        }
                    }
                }
                drop(permit);
            });
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{:.0}s: {} published ({:.0}/s), {} failed",
                secs,
                sent.load(Ordering::Relaxed),
                sent.load(Ordering::Relaxed) as f64 / secs,
                failed.load(Ordering::Relaxed)
            );
        }
    }
    // Let in-flight batches finish.
    let _ = inflight.acquire_many(args.concurrency.max(1) as u32).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "done: {} published in {:.1}s ({:.0}/s), {} failed",
        sent.load(Ordering::Relaxed),
        secs,
        sent.load(Ordering::Relaxed) as f64 / secs.max(1e-9),
        failed.load(Ordering::Relaxed)
    );
    if failed.load(Ordering::Relaxed) > 0 && sent.load(Ordering::Relaxed) == 0 {
        return Err("nothing could be published".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_format_exactly() {
        assert_eq!(fmt_points(108_500, 5), "1.08500");
        assert_eq!(fmt_points(7, 3), "0.007");
        assert_eq!(fmt_points(-15, 1), "-1.5");
        assert_eq!(fmt_points(42, 0), "42");
    }

    #[test]
    fn walk_keeps_bid_below_ask() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut syms = make_symbols(20, &mut rng);
        let now = Instant::now();
        for s in &mut syms {
            s.burst_until = Some(now + Duration::from_secs(1));
            for _ in 0..1000 {
                let (b, a) = s.step(&mut rng, now);
                let (b, a): (f64, f64) = (b.parse().unwrap(), a.parse().unwrap());
                assert!(b < a && b > 0.0, "{} {b} {a}", s.name);
            }
        }
    }
}
