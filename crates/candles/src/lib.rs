//! Pure OHLCV candle aggregation for Tickwire: no sockets, clocks or files.
//!
//! * [`Resolution`]: the 12 resolutions (`1s` … `1M`), UTC bucket alignment, native and
//!   TradingView names.
//! * [`Aggregator`]: live aggregation of ONE symbol over a set of resolutions. It turns each
//!   [`Tick`] into an [`Update`] saying which bars changed and how ([`ChangeKind`]).
//! * [`aggregate`]: the same rules in one shot over a slice, for import, rebuild and benches.
//!
//! # Driving it live (hub side)
//!
//! Keep one [`Aggregator`] per symbol. For every tick of that symbol call [`Aggregator::update`]
//! (or [`Aggregator::update_into`] with a reused buffer); from a periodic timer call
//! [`Aggregator::close_until`] so quiet symbols' bars still close. Route each [`BarChange`] by
//! its kind:
//!
//! | kind | meaning | do |
//! |---|---|---|
//! | [`ChangeKind::Live`] | the current bucket's bar changed | publish on `candles.<SYMBOL>.<res>` (latest wins) |
//! | [`ChangeKind::Closed`] | the bucket ended; reported once per bar | persist (insert or upsert) |
//! | [`ChangeKind::Corrected`] | a late tick changed or created an ended bar | upsert in the store; optionally republish |
//!
//! Every change carries the bar's full content, never a delta, so persisting is always an upsert
//! keyed by `(symbol, resolution, start_ms)`. [`Aggregator::live_bar`] is the snapshot for a new
//! subscriber; [`TickOutcome`] and [`Aggregator::stats`] feed metrics (`late_dropped` above all).
//!
//! ```
//! use tickwire_candles::{Aggregator, AggregatorConfig, ChangeKind, Decimal, Resolution, Tick};
//!
//! let mut eurusd = Aggregator::new(AggregatorConfig::default())?; // all 12, Mid, 5 s tolerance
//! let t0 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
//! let tick = Tick::quote(t0 + 1_500, Decimal::new(108_541, 5), Decimal::new(108_543, 5));
//! for change in eurusd.update(&tick).changes {
//!     let channel = format!("candles.EURUSD.{}", change.resolution); // e.g. candles.EURUSD.1m
//!     match change.kind {
//!         ChangeKind::Live => { /* hub.publish_state(&channel, &change.candle) */ }
//!         ChangeKind::Closed | ChangeKind::Corrected => { /* store.upsert(...) */ }
//!     }
//!     # let _ = channel;
//! }
//! // Timer, e.g. every 250 ms: now = wall clock minus the feed's expected delay.
//! let closed = eurusd.close_until(t0 + 2_000);
//! assert_eq!(closed[0].resolution, Resolution::Sec1);
//! assert_eq!(closed[0].kind, ChangeKind::Closed);
//! # Ok::<(), tickwire_candles::CandleError>(())
//! ```
//!
//! # The rules, exactly
//!
//! **Buckets.** A bar covers `[bucket_start, next_bucket_start)` in unix ms, UTC. Fixed
//! resolutions align to multiples of their length since the epoch (so `4h` bars start at 00, 04,
//! … 20 h), `1D` at 00:00, `1W` at Monday 00:00, `1M` at the 1st 00:00. A bucket without a
//! counted tick has no bar: gaps stay gaps, nothing is forward-filled.
//!
//! **Price.** Decided per bar: if at least one trade landed in the bar, its OHLC come from trade
//! prices only (the first trade discards whatever quotes had built; later quotes are ignored
//! by that bar). Otherwise the bar's OHLC come from its quotes via [`PriceSource`]: `Bid`, `Ask`
//! or `Mid` = `(bid + ask) / 2` in exact decimal. With [`PriceSource::Last`] quotes count for
//! nothing (not even time), so a trades-only symbol never gets quote bars.
//! A per-bar rule instead of a sticky "this symbol has traded" flag keeps every bar a pure
//! function of the ticks in its bucket: live, late-corrected and rebuilt bars are identical, which
//! a flag set by arrival order could not guarantee. Symbols that trade should use `Last`.
//!
//! **Open / close.** `open` is the price of the counted tick with the smallest timestamp,
//! `close` of the one with the largest; on equal timestamps the earlier arrival opens and the
//! later arrival closes (the same as a stable sort by timestamp). `high`/`low` are max/min.
//!
//! **Volume and ticks.** `ticks` = number of counted ticks (trades in a trade bar, quotes in a
//! quote bar). `volume` = sum of the sizes of the bar's trades if at least one of them has a
//! size (trades without a size then add 0); otherwise `volume = ticks` (tick volume, as FX feeds
//! report it). Sums saturate at `Decimal::MAX` instead of panicking.
//!
//! **Time, closing and late ticks.** The *watermark* is the largest timestamp seen (of merged
//! ticks and `close_until` instants). A bar closes when the watermark reaches its end. A tick
//! with `ts_ms >= watermark - late_tolerance_ms` is merged into the bar it belongs to, even one
//! already closed: that bar is reported as `Corrected` (also when the late tick creates a bar in
//! an empty bucket). Closed bars are retained only while a tick within the tolerance could still
//! reach them, so memory stays bounded by `tolerance / resolution + 2` bars per resolution. An
//! older tick is dropped whole (for every resolution, so the series stay consistent with each
//! other), reported as [`TickOutcome::Dropped`] and counted in `late_dropped`; it is never merged
//! silently. [`aggregate`] has no tolerance: it counts every tick, in any order.
//!
//! **Robustness.** Every function is total: any `i64` timestamp (pre-1970 included) and any
//! decimal are accepted without panicking; at the extremes of the `i64` range bucket bounds
//! saturate. Validation of prices and sizes (negative, crossed quotes) is the ingest's job.
//!
//! # Calendar
//!
//! Week and month math uses ~20 lines of Hinnant's civil-date algorithms (`calendar.rs`)
//! instead of chrono/time: UTC only, no time zones, so a dependency would buy nothing.
//!
//! # Restarting
//!
//! [`Aggregator`] is `Serialize + Deserialize`. A driver that persists, in ONE atomic write,
//! the closed bars, a snapshot of every aggregator that changed and the log position of the last
//! tick it merged can restart from that position with the restored aggregators and replay only
//! the ticks after it: live bars keep their pre-restart ticks, closed bars are upserted by key,
//! so nothing is lost or counted twice. (The snapshot's format is serde's view of the private
//! state: a new version of this crate may refuse an old snapshot, and the driver then rebuilds
//! from the log.)

mod aggregator;
mod batch;
mod calendar;
mod candle;
mod error;
#[cfg(test)]
mod legacy;
mod resolution;
mod tick;

pub use aggregator::{
    Aggregator, AggregatorConfig, AggregatorStats, BarChange, BarView, ChangeKind, TickOutcome,
    Update,
};
pub use batch::aggregate;
pub use calendar::days_from_civil;
pub use candle::Candle;
pub use error::CandleError;
pub use resolution::Resolution;
pub use rust_decimal::Decimal;
pub use tick::{PriceSource, Tick, TickKind};
