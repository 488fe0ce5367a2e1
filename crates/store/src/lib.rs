//! Tickwire's persisted candle projection: closed OHLCV bars, the aggregator snapshots and the
//! log position they correspond to, all in one embedded file.
//!
//! # Why redb
//!
//! The candle driver needs exactly three things from storage: an atomic multi-table write (the
//! bars, the aggregator snapshots and "processed up to offset N" must land together, or a
//! restart would skip or double-count ticks), ordered range scans by `(symbol, resolution,
//! start)` for history queries, and readers that never block the writer. redb gives all three
//! with a copy-on-write B-tree in a single file, fully in Rust (no C/C++ build), with ACID
//! transactions and a checksummed commit that survives a crash at any point. fjall (an LSM) is
//! built for write-heavy workloads and would add a journal, compaction threads and more moving
//! parts for a write rate we do not have: closed bars arrive at most a few thousand per second
//! and are committed in batches every flush interval. Own files would mean re-implementing
//! atomic commit and an index, which is what redb already is.
//!
//! # Layout
//!
//! | table | key | value |
//! |---|---|---|
//! | `bars` | `(symbol, resolution index, start_ms)` | [`Candle`] as JSON (decimal strings) |
//! | `snapshots` | symbol | the symbol's serialized `Aggregator` |
//! | `positions` | log namespace | next offset to process |
//! | `symbols` | symbol | first-seen time, unix ms |
//! | `imported_bars` | `(symbol, resolution index, start_ms)` | nothing: the bar under this key in `bars` came from a bar file |
//! | `imported_series` | `(symbol, resolution index)` | how many bars of the series are marked in `imported_bars` |
//!
//! Every bar write is an upsert by key, so replaying ticks that were already persisted cannot
//! duplicate a bar.
//!
//! # Imported bars
//!
//! A bar file (`tickwire import` of an MT4/MT5 bar export) holds bars the server has no ticks
//! for, so a bar the projection builds from a few ticks in the same interval must not replace
//! it: an imported bar is written with [`Batch::imported_bars`], which marks its key, and
//! [`Batch::bars`] (the projection's) skips marked keys. Importing ticks lifts the marks of
//! the bars they fall in ([`Batch::unmark`]), so the bars are rebuilt from those ticks: the
//! later import wins. `imported_series` lets the projection and the importer ask "does this
//! series have marks at all" without scanning every mark. The two tables were added after
//! `candles-v1`: a store without them gets them empty when it is opened, and no existing
//! table changed, so v1 stores read as before.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::RwLock,
};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use tickwire_candles::{Candle, Resolution};

const BARS: TableDefinition<(&str, u8, i64), &[u8]> = TableDefinition::new("bars");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const POSITIONS: TableDefinition<&str, u64> = TableDefinition::new("positions");
const SYMBOLS: TableDefinition<&str, i64> = TableDefinition::new("symbols");
const IMPORTED: TableDefinition<(&str, u8, i64), ()> = TableDefinition::new("imported_bars");
const IMPORTED_SERIES: TableDefinition<(&str, u8), u64> = TableDefinition::new("imported_series");

/// Everything that can fail in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened, read or written.
    #[error("candle store {op}: {reason}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        reason: String,
    },
    /// A stored bar could not be decoded (written by an incompatible version).
    #[error("candle store: bar {symbol} {resolution} {start_ms} is unreadable: {reason}")]
    Corrupt {
        /// Symbol of the bar.
        symbol: String,
        /// Its resolution.
        resolution: Resolution,
        /// Its start.
        start_ms: i64,
        /// Why.
        reason: String,
    },
}

fn db_err(op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StoreError {
    move |e| StoreError::Db {
        op,
        reason: e.to_string(),
    }
}

macro_rules! db {
    ($op:literal, $e:expr) => {
        $e.map_err(|e| db_err($op)(&e))
    };
}

/// One atomic write: bars to upsert, snapshots to replace, positions to move forward.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Closed or corrected bars built from ticks, upserted by `(symbol, resolution,
    /// start_ms)` unless an imported bar has that key (see the crate docs).
    pub bars: Vec<(String, Resolution, Candle)>,
    /// Bars from a bar file: upserted, and marked imported so `bars` never replace them.
    pub imported_bars: Vec<(String, Resolution, Candle)>,
    /// `(symbol, resolution, start_ms)` of imported bars whose mark is lifted because ticks
    /// for them were imported; applied before this batch's bars.
    pub unmark: Vec<(String, Resolution, i64)>,
    /// Serialized aggregators by symbol, replaced whole.
    pub snapshots: Vec<(String, Vec<u8>)>,
    /// Next offset to process, by log namespace.
    pub positions: Vec<(String, u64)>,
    /// Symbols seen for the first time, with the time they were seen (unix ms).
    pub new_symbols: Vec<(String, i64)>,
}

impl Batch {
    /// True when committing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.bars.is_empty()
            && self.imported_bars.is_empty()
            && self.unmark.is_empty()
            && self.snapshots.is_empty()
            && self.positions.is_empty()
            && self.new_symbols.is_empty()
    }
}

/// The candle store. `Send + Sync`; reads run concurrently with the single writer.
///
/// After a failed write (a full disk) redb refuses every later transaction until the file is
/// opened again ("Previous I/O error occurred"), so the store reopens itself after a failure
/// and the next commit, once there is room again, goes through.
pub struct Store {
    path: PathBuf,
    /// `None` while a reopen after a failure has not succeeded yet.
    db: RwLock<Option<Database>>,
}

/// A resolution's key byte: [`Resolution::index`] (its position in [`Resolution::ALL`]),
/// stable because new resolutions would only ever be appended.
fn res_key(r: Resolution) -> u8 {
    u8::try_from(r.index()).unwrap_or(u8::MAX)
}

impl Store {
    /// Opens or creates the store file (recovering it after a crash).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Self::open_db(path)?;
        Ok(Store {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
        })
    }

    fn open_db(path: &Path) -> Result<Database, StoreError> {
        if let Some(dir) = path.parent() {
            db!("create dir", std::fs::create_dir_all(dir))?;
        }
        let db = db!("open", Database::create(path))?;
        // Create the tables up front so readers never see "table does not exist".
        let tx = db!("begin", db.begin_write())?;
        {
            db!("open table", tx.open_table(BARS))?;
            db!("open table", tx.open_table(SNAPSHOTS))?;
            db!("open table", tx.open_table(POSITIONS))?;
            db!("open table", tx.open_table(SYMBOLS))?;
            db!("open table", tx.open_table(IMPORTED))?;
            db!("open table", tx.open_table(IMPORTED_SERIES))?;
        }
        db!("commit", tx.commit())?;
        Ok(db)
    }

    /// Runs `f` on the open database; after an error, the database is opened again (see
    /// [`Store`]) and the error returned: the caller's next attempt uses the fresh handle.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = {
            let guard = self
                .db
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.as_ref() {
                Some(db) => f(db),
                None => Err(StoreError::Db {
                    op: "open",
                    reason: "the store could not be opened again after an I/O error; retrying"
                        .into(),
                }),
            }
        };
        // A bar that does not decode is not the database's fault; every other failure may have
        // left redb refusing transactions until it is opened again.
        if matches!(result, Err(StoreError::Db { .. })) {
            self.reopen();
        }
        result
    }

    /// Drops the database handle and opens the file again (redb allows one handle per file).
    fn reopen(&self) {
        let mut guard = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(guard.take());
        match Self::open_db(&self.path) {
            Ok(db) => {
                *guard = Some(db);
                tracing::info!(file = %self.path.display(), "candle store opened again after an error");
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "candle store cannot be opened again yet")
            }
        }
    }

    /// Writes `batch` atomically and durably (fsynced before returning).
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_db(|db| Self::commit_to(db, batch))
    }

    fn commit_to(db: &Database, batch: &Batch) -> Result<(), StoreError> {
        let mut tx = db!("begin", db.begin_write())?;
        tx.set_durability(Durability::Immediate);
        {
            let mut bars = db!("open table", tx.open_table(BARS))?;
            let mut marks = db!("open table", tx.open_table(IMPORTED))?;
            let mut series = db!("open table", tx.open_table(IMPORTED_SERIES))?;
            // Lifted marks first: ticks imported for a bar win over the bar file (whichever
            // import came later), so a batch that unmarks and rebuilds a bar rebuilds it.
            for (symbol, res, start) in &batch.unmark {
                let r = res_key(*res);
                if db!("remove mark", marks.remove((symbol.as_str(), r, *start)))?.is_some() {
                    let left = db!("read series", series.get((symbol.as_str(), r)))?
                        .map_or(0, |v| v.value())
                        .saturating_sub(1);
                    if left == 0 {
                        db!("remove series", series.remove((symbol.as_str(), r)))?;
                    } else {
                        db!("insert series", series.insert((symbol.as_str(), r), left))?;
                    }
                }
            }
            for (symbol, res, candle) in &batch.imported_bars {
                let r = res_key(*res);
                let value = db!("encode", serde_json::to_vec(candle))?;
                db!(
                    "insert bar",
                    bars.insert((symbol.as_str(), r, candle.start_ms), value.as_slice())
                )?;
                if db!(
                    "insert mark",
                    marks.insert((symbol.as_str(), r, candle.start_ms), ())
                )?
                .is_none()
                {
                    let n = db!("read series", series.get((symbol.as_str(), r)))?
                        .map_or(0, |v| v.value());
                    db!("insert series", series.insert((symbol.as_str(), r), n + 1))?;
                }
            }
            for (symbol, res, candle) in &batch.bars {
                let key = (symbol.as_str(), res_key(*res), candle.start_ms);
                if db!("read mark", marks.get(key))?.is_some() {
                    continue;
                }
                let value = db!("encode", serde_json::to_vec(candle))?;
                db!("insert bar", bars.insert(key, value.as_slice()))?;
            }
            let mut snaps = db!("open table", tx.open_table(SNAPSHOTS))?;
            for (symbol, snap) in &batch.snapshots {
                db!(
                    "insert snapshot",
                    snaps.insert(symbol.as_str(), snap.as_slice())
                )?;
            }
            let mut pos = db!("open table", tx.open_table(POSITIONS))?;
            for (ns, next) in &batch.positions {
                db!("insert position", pos.insert(ns.as_str(), *next))?;
            }
            let mut syms = db!("open table", tx.open_table(SYMBOLS))?;
            for (symbol, seen) in &batch.new_symbols {
                if db!("read symbol", syms.get(symbol.as_str()))?.is_none() {
                    db!("insert symbol", syms.insert(symbol.as_str(), *seen))?;
                }
            }
        }
        db!("commit", tx.commit())
    }

    /// Writes a copy of the whole store, as of one read transaction, to a new file at `dest`
    /// (which must not exist): the bars, snapshots and positions in the copy belong together
    /// however the projection commits meanwhile. Returns the positions the copy holds.
    pub fn backup_to(&self, dest: &Path) -> Result<BTreeMap<String, u64>, StoreError> {
        self.with_db(|db| {
            let rx = db!("begin", db.begin_read())?;
            let copy = db!("create backup", Database::create(dest))?;
            let mut tx = db!("begin", copy.begin_write())?;
            tx.set_durability(Durability::Immediate);
            let mut positions = BTreeMap::new();
            {
                macro_rules! copy_table {
                    ($def:expr) => {{
                        let from = db!("open table", rx.open_table($def))?;
                        let mut to = db!("open table", tx.open_table($def))?;
                        for row in db!("scan", from.iter())? {
                            let (k, v) = db!("scan", row)?;
                            db!("insert", to.insert(k.value(), v.value()))?;
                        }
                    }};
                }
                copy_table!(BARS);
                copy_table!(SNAPSHOTS);
                copy_table!(POSITIONS);
                copy_table!(SYMBOLS);
                copy_table!(IMPORTED);
                copy_table!(IMPORTED_SERIES);
                let t = db!("open table", rx.open_table(POSITIONS))?;
                for row in db!("scan", t.iter())? {
                    let (k, v) = db!("scan", row)?;
                    positions.insert(k.value().to_string(), v.value());
                }
            }
            db!("commit", tx.commit())?;
            Ok(positions)
        })
    }

    /// Next offset to process per namespace (absent: from the start of the log).
    pub fn positions(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.with_db(|db| {
            let tx = db!("begin", db.begin_read())?;
            let t = db!("open table", tx.open_table(POSITIONS))?;
            let mut out = BTreeMap::new();
            for row in db!("scan", t.iter())? {
                let (k, v) = db!("scan", row)?;
                out.insert(k.value().to_string(), v.value());
            }
            Ok(out)
        })
    }

    /// Every stored aggregator snapshot, by symbol.
    pub fn snapshots(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_db(|db| {
            let tx = db!("begin", db.begin_read())?;
            let t = db!("open table", tx.open_table(SNAPSHOTS))?;
            let mut out = Vec::new();
            for row in db!("scan", t.iter())? {
                let (k, v) = db!("scan", row)?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Known symbols with their first-seen time (unix ms), sorted by name.
    pub fn symbols(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.with_db(|db| {
            let tx = db!("begin", db.begin_read())?;
            let t = db!("open table", tx.open_table(SYMBOLS))?;
            let mut out = Vec::new();
            for row in db!("scan", t.iter())? {
                let (k, v) = db!("scan", row)?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
    }

    /// Bars of `symbol`/`res` with `from_ms <= start < to_ms`, ascending. With `limit`, only the
    /// LAST `limit` of them (TradingView's `countback` and a chart's "most recent N").
    pub fn bars(
        &self,
        symbol: &str,
        res: Resolution,
        from_ms: i64,
        to_ms: i64,
        limit: Option<usize>,
    ) -> Result<Vec<Candle>, StoreError> {
        self.with_db(|db| {
            let tx = db!("begin", db.begin_read())?;
            let t = db!("open table", tx.open_table(BARS))?;
            let r = res_key(res);
            if to_ms <= from_ms {
                return Ok(Vec::new());
            }
            let range = db!("range", t.range((symbol, r, from_ms)..(symbol, r, to_ms)))?;
            let mut out = Vec::new();
            let decode = |start: i64, bytes: &[u8]| -> Result<Candle, StoreError> {
                serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
                    symbol: symbol.to_string(),
                    resolution: res,
                    start_ms: start,
                    reason: e.to_string(),
                })
            };
            match limit {
                Some(n) => {
                    for row in range.rev().take(n) {
                        let (k, v) = db!("range", row)?;
                        out.push(decode(k.value().2, v.value())?);
                    }
                    out.reverse();
                }
                None => {
                    for row in range {
                        let (k, v) = db!("range", row)?;
                        out.push(decode(k.value().2, v.value())?);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Series (symbol and resolution) with at least one imported bar, sorted.
    pub fn imported_series(&self) -> Result<Vec<(String, Resolution)>, StoreError> {
        self.with_db(|db| {
            let tx = db!("begin", db.begin_read())?;
            let t = db!("open table", tx.open_table(IMPORTED_SERIES))?;
            let mut out = Vec::new();
            for row in db!("scan", t.iter())? {
                let (k, _) = db!("scan", row)?;
                let (symbol, r) = k.value();
                // A key byte no resolution has would be a newer writer's: not ours to judge.
                if let Some(res) = Resolution::ALL.get(usize::from(r)) {
                    out.push((symbol.to_string(), *res));
                }
            }
            Ok(out)
        })
    }

    /// The stored bar of `symbol`/`res` starting at `start_ms` if it is an imported one
    /// (marked, see the crate docs); `None` if it is not marked or not stored.
    pub fn imported_bar(
        &self,
        symbol: &str,
        res: Resolution,
        start_ms: i64,
    ) -> Result<Option<Candle>, StoreError> {
        self.with_db(|db| {
            let tx = db!("begin", db.begin_read())?;
            let key = (symbol, res_key(res), start_ms);
            let marks = db!("open table", tx.open_table(IMPORTED))?;
            if db!("read mark", marks.get(key))?.is_none() {
                return Ok(None);
            }
            let bars = db!("open table", tx.open_table(BARS))?;
            let Some(v) = db!("read bar", bars.get(key))? else {
                return Ok(None);
            };
            serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    symbol: symbol.to_string(),
                    resolution: res,
                    start_ms,
                    reason: e.to_string(),
                })
        })
    }

    /// Start of the newest bar of `symbol`/`res` that starts before `before_ms`: TradingView's
    /// `nextTime` when a requested range holds no bar.
    pub fn last_start_before(
        &self,
        symbol: &str,
        res: Resolution,
        before_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.with_db(|db| {
            let tx = db!("begin", db.begin_read())?;
            let t = db!("open table", tx.open_table(BARS))?;
            let r = res_key(res);
            let mut range = db!(
                "range",
                t.range((symbol, r, i64::MIN)..(symbol, r, before_ms))
            )?;
            match range.next_back() {
                Some(row) => {
                    let (k, _) = db!("range", row)?;
                    Ok(Some(k.value().2))
                }
                None => Ok(None),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_candles::Decimal;

    fn bar(start: i64, c: i64) -> Candle {
        Candle {
            start_ms: start,
            open: Decimal::new(c, 2),
            high: Decimal::new(c + 1, 2),
            low: Decimal::new(c - 1, 2),
            close: Decimal::new(c, 2),
            volume: Decimal::new(3, 0),
            ticks: 3,
        }
    }

    #[test]
    fn upsert_range_positions_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.redb");
        {
            let s = Store::open(&path).unwrap();
            let mut b = Batch::default();
            for i in 0..10 {
                b.bars
                    .push(("EURUSD".into(), Resolution::Min1, bar(i * 60_000, 100 + i)));
            }
            // Another series with keys interleaving numerically must not leak into ranges.
            b.bars.push(("EURUSD".into(), Resolution::Min5, bar(0, 1)));
            b.bars
                .push(("EURUSDX".into(), Resolution::Min1, bar(60_000, 1)));
            b.positions.push(("quotes".into(), 42));
            b.new_symbols.push(("EURUSD".into(), 5));
            b.snapshots.push(("EURUSD".into(), b"{}".to_vec()));
            s.commit(&b).unwrap();
            // Upsert: the same key again replaces, never duplicates.
            let mut b = Batch::default();
            b.bars
                .push(("EURUSD".into(), Resolution::Min1, bar(120_000, 999)));
            b.positions.push(("quotes".into(), 50));
            b.new_symbols.push(("EURUSD".into(), 99));
            s.commit(&b).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all = s
            .bars("EURUSD", Resolution::Min1, i64::MIN, i64::MAX, None)
            .unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[2].open, Decimal::new(999, 2));
        let last3 = s
            .bars("EURUSD", Resolution::Min1, 0, 600_000, Some(3))
            .unwrap();
        let starts: Vec<i64> = last3.iter().map(|c| c.start_ms).collect();
        assert_eq!(starts, vec![420_000, 480_000, 540_000]);
        let mid = s
            .bars("EURUSD", Resolution::Min1, 60_000, 180_000, None)
            .unwrap();
        assert_eq!(mid.len(), 2);
        assert_eq!(
            s.last_start_before("EURUSD", Resolution::Min1, 60_001)
                .unwrap(),
            Some(60_000)
        );
        assert_eq!(
            s.last_start_before("EURUSD", Resolution::Min1, 0).unwrap(),
            None
        );
        assert_eq!(s.positions().unwrap().get("quotes"), Some(&50));
        // First-seen time is kept from the first sighting.
        assert_eq!(s.symbols().unwrap()[0], ("EURUSD".to_string(), 5));
        assert_eq!(s.snapshots().unwrap().len(), 1);
    }

    /// An imported bar is not replaced by a bar built from ticks (what the projection commits
    /// when it replays or closes a bar); lifting its mark (ticks for it were imported) lets the
    /// next tick-built bar in; the series list follows the marks.
    #[test]
    fn imported_bars_are_kept_until_unmarked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.redb");
        let s = Store::open(&path).unwrap();
        let imported = |start: i64| {
            let mut c = bar(start, 110_345);
            c.volume = Decimal::new(120, 0);
            c.ticks = 0;
            c
        };
        let mut b = Batch::default();
        for i in 0..3 {
            b.imported_bars
                .push(("EURUSD".into(), Resolution::Min1, imported(i * 60_000)));
        }
        s.commit(&b).unwrap();
        // Importing the same file again marks nothing twice.
        s.commit(&b).unwrap();
        assert_eq!(
            s.imported_series().unwrap(),
            vec![("EURUSD".to_string(), Resolution::Min1)]
        );
        // The projection's bars: the imported keys keep the file's bars, the others go in.
        let mut b = Batch::default();
        for i in 0..4 {
            b.bars
                .push(("EURUSD".into(), Resolution::Min1, bar(i * 60_000, 7)));
        }
        b.bars.push(("EURUSD".into(), Resolution::Min5, bar(0, 7)));
        s.commit(&b).unwrap();
        let all = s
            .bars("EURUSD", Resolution::Min1, i64::MIN, i64::MAX, None)
            .unwrap();
        assert_eq!(all.len(), 4);
        for c in &all[..3] {
            assert_eq!(c, &imported(c.start_ms));
        }
        assert_eq!(all[3], bar(180_000, 7));
        assert_eq!(
            s.imported_bar("EURUSD", Resolution::Min1, 60_000).unwrap(),
            Some(imported(60_000))
        );
        assert_eq!(
            s.imported_bar("EURUSD", Resolution::Min1, 180_000).unwrap(),
            None
        );
        assert_eq!(s.imported_bar("EURUSD", Resolution::Min5, 0).unwrap(), None);
        // Ticks imported for the first bar lift its mark; a rebuilt bar in the same batch
        // replaces it, the other imported bars stay.
        let mut b = Batch::default();
        b.unmark.push(("EURUSD".into(), Resolution::Min1, 0));
        b.unmark.push(("EURUSD".into(), Resolution::Min1, 999)); // never marked: no-op
        b.bars.push(("EURUSD".into(), Resolution::Min1, bar(0, 8)));
        b.bars
            .push(("EURUSD".into(), Resolution::Min1, bar(60_000, 8)));
        s.commit(&b).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        let all = s
            .bars("EURUSD", Resolution::Min1, i64::MIN, i64::MAX, None)
            .unwrap();
        assert_eq!(all[0], bar(0, 8));
        assert_eq!(all[1], imported(60_000));
        assert_eq!(s.imported_bar("EURUSD", Resolution::Min1, 0).unwrap(), None);
        // The series stays listed while any mark is left, and goes with the last one.
        let mut b = Batch::default();
        b.unmark.push(("EURUSD".into(), Resolution::Min1, 60_000));
        s.commit(&b).unwrap();
        assert_eq!(s.imported_series().unwrap().len(), 1);
        let mut b = Batch::default();
        b.unmark.push(("EURUSD".into(), Resolution::Min1, 120_000));
        s.commit(&b).unwrap();
        assert!(s.imported_series().unwrap().is_empty());
    }
}
