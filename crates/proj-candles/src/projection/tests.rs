use super::*;
use crate::tick::tests::{lcg, parse_tick};
use crate::LiveBar;
use tickwire_candles::Decimal;

/// The live slots (a bit per resolution, bars read at the flush) publish exactly what the
/// former eager copies published: the bar as of its last live change, per series, once per
/// flush; and closed/corrected bars are the aggregator's changes, in order. Random ticks
/// for 3 symbols with late ticks (within and beyond the tolerance), jumps, quiet-bar
/// closes and flushes in between, checked against an eager reference over `update_into`.
#[test]
fn lazy_live_slots_publish_what_eager_copies_did() {
    let dir = tempfile::tempdir().unwrap();
    let mut bench = DriverBench::open(dir.path()).unwrap();
    let cfg = bench.driver.agg_config.clone();
    let syms = ["AAA", "BBB", "CCC"];
    let channels: Vec<Channel> = syms
        .iter()
        .map(|s| Channel::parse(&format!("quotes.{s}")).unwrap())
        .collect();
    let mut shadow: Vec<Aggregator> = syms
        .iter()
        .map(|_| Aggregator::new(cfg.clone()).unwrap())
        .collect();
    let mut lags: Vec<Option<i64>> = vec![None; syms.len()];
    let mut eager: BTreeMap<(String, Resolution), Candle> = BTreeMap::new();
    let mut closed: Vec<(String, Resolution, Candle)> = Vec::new();
    let mut rng = lcg(1);
    let mut next = move |n: u64| (rng() >> 33) % n;
    let mut ts: i64 = 1_704_067_200_000;
    let mut flushes = 0;
    for step in 0..20_000 {
        match next(100) {
            0..=84 => {
                let s = next(3) as usize;
                ts += next(700) as i64;
                // Mostly in order; some late within the 5 s tolerance, some beyond it.
                let t = match next(20) {
                    0 => ts - next(5_000) as i64,
                    1 => ts - 6_000 - next(5_000) as i64,
                    _ => ts,
                };
                let bid = 100_000 + next(50) as i64;
                let data = format!(
                    r#"{{"bid":"{}","ask":"{}","ts":{t}}}"#,
                    Decimal::new(bid, 5),
                    Decimal::new(bid + 1 + next(3) as i64, 5)
                );
                // Appended at `ts`: in-order ticks have lag 0, late ones more.
                bench.apply(&channels[s], data.as_bytes(), (ts as u64) * 1_000_000);
                let tick = parse_tick(SourceKind::Quote, data.as_bytes(), 0).unwrap();
                if shadow[s].watermark().is_none_or(|wm| t >= wm) {
                    lags[s] = Some(ts - t);
                }
                let mut out = Vec::new();
                shadow[s].update_into(&tick, &mut out);
                for c in out {
                    match c.kind {
                        ChangeKind::Live => {
                            eager.insert((syms[s].to_string(), c.resolution), c.candle);
                        }
                        _ => closed.push((syms[s].to_string(), c.resolution, c.candle)),
                    }
                }
            }
            85..=94 => {
                // Quiet-bar close on each symbol's feed clock (wall minus its lag); a symbol
                // without a tick yet is skipped.
                let wall = ts + next(3_000) as i64;
                bench.driver.close_quiet_bars_at(wall);
                for (s, agg) in shadow.iter_mut().enumerate() {
                    let Some(lag) = lags[s] else { continue };
                    let now = wall - lag;
                    if agg.watermark().is_some_and(|wm| wm < now) {
                        for c in agg.close_until(now) {
                            closed.push((syms[s].to_string(), c.resolution, c.candle));
                        }
                    }
                }
            }
            _ => {
                let groups = bench.driver.flush();
                let text = |r: &PublishRequest| {
                    (
                        r.channel.to_string(),
                        String::from_utf8(r.data.to_vec()).unwrap(),
                    )
                };
                // Every group but the last holds finals, at most one per channel.
                let (live_group, final_groups): (Vec<PublishRequest>, &[Vec<PublishRequest>]) =
                    match groups.split_last() {
                        Some((last, rest))
                            if last.iter().all(|r| {
                                !String::from_utf8_lossy(&r.data).contains("\"final\"")
                            }) =>
                        {
                            (last.clone(), rest)
                        }
                        _ => (Vec::new(), &groups[..]),
                    };
                for g in final_groups {
                    let mut chans: Vec<String> = g.iter().map(|r| r.channel.to_string()).collect();
                    let n = chans.len();
                    chans.sort();
                    chans.dedup();
                    assert_eq!(
                        chans.len(),
                        n,
                        "one value per channel per group at step {step}"
                    );
                }
                // Live: the newest live change of each series whose bar is still live.
                let mut got: Vec<(String, String)> = live_group.iter().map(text).collect();
                got.sort();
                let mut want: Vec<(String, String)> = std::mem::take(&mut eager)
                    .into_iter()
                    .filter(|((symbol, resolution), candle)| {
                        let s = syms.iter().position(|x| x == symbol).unwrap();
                        shadow[s]
                            .live_bar(*resolution)
                            .is_some_and(|l| l.start_ms == candle.start_ms)
                    })
                    .map(|((symbol, resolution), candle)| {
                        let bar = LiveBar {
                            symbol: symbol.clone(),
                            resolution,
                            closed: false,
                            corrected: false,
                            candle,
                        };
                        (
                            names::candles(&symbol, resolution),
                            serde_json::to_string(&bar).unwrap(),
                        )
                    })
                    .collect();
                want.sort();
                assert_eq!(got, want, "live bars at step {step}");
                // Finals: every closed or corrected bar, in order per series, its last
                // content (a bar changed twice before the flush is published once).
                let mut got_finals: Vec<(String, String, i64, String)> = Vec::new();
                for g in final_groups {
                    for r in g {
                        let bar: LiveBar = serde_json::from_slice(&r.data).unwrap();
                        assert!(bar.closed);
                        got_finals.push((
                            bar.symbol.clone(),
                            bar.resolution.to_string(),
                            bar.candle.start_ms,
                            serde_json::to_string(&bar.candle).unwrap(),
                        ));
                    }
                }
                let mut want_finals: Vec<(String, String, i64, String)> = Vec::new();
                for (sym, res, c) in &closed {
                    let key = (sym.clone(), res.to_string(), c.start_ms);
                    want_finals.retain(|w| (w.0.clone(), w.1.clone(), w.2) != key);
                    want_finals.push((
                        sym.clone(),
                        res.to_string(),
                        c.start_ms,
                        serde_json::to_string(c).unwrap(),
                    ));
                }
                // At most MAX_FINAL_ROUNDS per series: the newest (the rest are stored).
                let mut kept: Vec<(String, String, i64, String)> = Vec::new();
                for (k, w) in want_finals.iter().enumerate() {
                    let newer_same_series = want_finals[k + 1..]
                        .iter()
                        .filter(|o| o.0 == w.0 && o.1 == w.1)
                        .count();
                    if newer_same_series < MAX_FINAL_ROUNDS {
                        kept.push(w.clone());
                    }
                }
                let mut want_finals = kept;
                got_finals.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
                want_finals.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
                assert_eq!(got_finals, want_finals, "finals at step {step}");
                // Per symbol in order; across symbols the order is not part of the contract
                // (the store upserts by key; the driver once iterated a HashMap).
                let mut pending = std::mem::take(&mut bench.driver.pending.bars);
                pending.sort_by(|a, b| a.0.cmp(&b.0));
                closed.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(
                    pending,
                    std::mem::take(&mut closed),
                    "closed at step {step}"
                );
                flushes += 1;
            }
        }
    }
    assert!(flushes > 100);
}
