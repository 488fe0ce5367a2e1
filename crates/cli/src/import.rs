//! `tickwire import FILE --format <csv|mt4|mt5>`: recorded ticks and bars into a data directory.
//!
//! # Why offline, straight into the log
//!
//! At the target rate (≥ 1M ticks/s) an HTTP batch path spends most of its time on JSON
//! framing, per-message schema validation and the publish round trip. Import instead opens the
//! data directory's stream backend itself (taking its exclusive lock, so no server or second
//! import can have it open), validates each row and appends to the namespace's stream through
//! the same stream seam the server uses, with the server's settings (`--config`), one write per
//! 64K rows. The next `tickwire serve` replays them into candles. Bar exports go straight into
//! the candle store, keyed by `(symbol, resolution, start)` and marked imported, so bars the
//! server builds from other ticks never replace them; importing ticks lifts the marks of the
//! bars they fall in, so those are rebuilt from the ticks: the later import wins (the rule in
//! docs/candles.md, "Imported bars").
//!
//! # Encodings
//!
//! MetaTrader 5 writes its exports as UTF-16LE with a byte order mark; spreadsheets write
//! UTF-8 with one. Every format takes UTF-8 (BOM or not) and UTF-16LE/BE (see [`text`]),
//! decoded as the file is read.
//!
//! # Idempotency
//!
//! A file is identified by a fingerprint (size + first and last MiB + format, symbol and
//! namespace). `<data>/imports/<fingerprint>.json` records how far it got after every durable
//! batch, and every record carries the msg_id `imp:<fp>:<line>`. Importing again: a complete
//! marker means nothing to do; a partial one resumes after the highest line found in the log
//! after the marker's position, so a crash between the log fsync and the marker write neither
//! loses nor repeats a row. Bars are upserts, so they are idempotent by construction.

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    hash::Hasher,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
    time::Instant,
};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tickwire_candles::{Candle, Decimal, Resolution};
use tickwire_model::{clock::now_nanos, is_decimal, Channel, DataDir};
use tickwire_store::{Batch, Store};
use tickwire_stream::{
    embedded::{Embedded, EmbeddedConfig},
    AppendItem, Appender, Stream,
};

mod parse;
mod text;

use parse::{Parser, Row};

/// Rows appended per log write (and per durable checkpoint).
const BATCH_ROWS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ImportFormat {
    /// `timestamp,symbol,bid,ask[,last,volume]`; header optional; timestamp in unix s/ms/us/ns
    /// or ISO 8601 UTC.
    Csv,
    /// MetaTrader 4 History Center bar export: `YYYY.MM.DD,HH:MM,open,high,low,close,volume`.
    Mt4,
    /// MetaTrader 5 export (tab separated, `<DATE> <TIME> ...` header): ticks
    /// (`<BID> <ASK> <LAST> <VOLUME> <FLAGS>`) or bars (`<OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> ...`).
    Mt5,
}

/// Arguments of `tickwire import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import.
    pub file: PathBuf,
    /// File layout.
    #[arg(long, value_enum)]
    pub format: ImportFormat,
    /// Data directory (must not be in use by a running server).
    #[arg(long, default_value = tickwire_server::DEFAULT_DATA)]
    pub data: PathBuf,
    /// The server's configuration file, for the namespace's settings (record size, retention)
    /// and the segment size; TICKWIRE_* variables apply as for `serve`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Symbol for formats that do not name it (MetaTrader exports).
    #[arg(long)]
    pub symbol: Option<String>,
    /// Namespace the ticks are written to.
    #[arg(long, default_value = "quotes")]
    pub namespace: String,
    /// Resolution of a bar export (default: inferred from the first two bars).
    #[arg(long)]
    pub resolution: Option<String>,
    /// Stop at the first bad row instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// How many bad rows to print (all are counted).
    #[arg(long, default_value_t = 20)]
    pub show_errors: usize,
    /// No progress bar (for scripts and tests).
    #[arg(long)]
    pub quiet: bool,
    /// Test hook, hidden from `--help`: rows per log write and progress marker instead of
    /// 65,536, so end-to-end tests cross batch boundaries with small files.
    #[arg(long, hide = true, default_value_t = BATCH_ROWS)]
    pub batch_rows: usize,
    /// Test hook, hidden from `--help`: abort the process right after batch N is durable (log
    /// fsynced, bars committed) and before its progress marker is written, the crash the
    /// resume logic exists for (crates/cli/tests/import.rs).
    #[arg(long, hide = true)]
    pub crash_after_batches: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct Marker {
    file: String,
    /// Lines (1-based count) fully handled and durable.
    lines_done: u64,
    /// The log's next offset when this marker was written: rows of this import after it may
    /// exist without the marker knowing.
    log_next: u64,
    rows: u64,
    bad: u64,
    complete: bool,
    /// The resolution of a bar file once known, so a resumed import that has only one bar
    /// left need not infer it again (absent in markers of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolution: Option<String>,
}

/// Runs the import; prints a summary; exit code 0 on success, 1 on failure.
pub fn run(args: ImportArgs) -> ExitCode {
    match import(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire import: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, String>;

fn io<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// FNV-1a, stable across Rust versions (unlike `DefaultHasher`), for the file fingerprint.
struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Opens the file to import, or says what is wrong with it, naming it.
fn open_input(path: &Path) -> Res<File> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!(
            "{} is a directory: give the file to import",
            path.display()
        ));
    }
    File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn fingerprint(f: &mut File, args: &ImportArgs, symbol: &str) -> Res<String> {
    let file_err = |e: std::io::Error| format!("reading {}: {e}", args.file.display());
    let len = f.metadata().map_err(file_err)?.len();
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(&len.to_le_bytes());
    h.write(format!("{:?}|{symbol}|{}", args.format, args.namespace).as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let n = read_full(f, &mut buf).map_err(file_err)?;
    h.write(&buf[..n]);
    if len > (2 << 20) {
        f.seek(SeekFrom::End(-(1 << 20))).map_err(file_err)?;
        let n = read_full(f, &mut buf).map_err(file_err)?;
        h.write(&buf[..n]);
    }
    f.seek(SeekFrom::Start(0)).map_err(file_err)?;
    Ok(format!("{:016x}", h.finish()))
}

/// Fills `buf` unless the file ends first (one `read` may return less on some filesystems,
/// and the fingerprint must not depend on that).
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn write_marker(path: &Path, m: &Marker) -> Res<()> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(m).map_err(io("encoding marker"))?;
    let mut f = File::create(&tmp).map_err(io("writing marker"))?;
    f.write_all(&body).map_err(io("writing marker"))?;
    f.sync_all().map_err(io("syncing marker"))?;
    std::fs::rename(&tmp, path).map_err(io("renaming marker"))
}

fn import(args: &ImportArgs) -> Res<()> {
    // The file first, before the data directory is touched: a missing, unreadable or
    // directory path is reported as such (naming it), not as whatever opening the data
    // directory would say, such as its lock when a server holds it.
    let mut file = open_input(&args.file)?;
    let symbol = args.symbol.clone().unwrap_or_default();
    if args.format != ImportFormat::Csv && symbol.is_empty() {
        return Err("MetaTrader exports do not name the symbol: pass --symbol".into());
    }
    let cfg = tickwire_server::Config::load(
        args.config.as_deref(),
        &tickwire_server::CliOverrides {
            data: Some(args.data.clone()),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let spec = cfg
        .namespace_specs()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.name == args.namespace)
        .ok_or_else(|| format!("namespace `{}` is not configured", args.namespace))?;
    let fp = fingerprint(&mut file, args, &symbol)?;
    let dir = DataDir::new(&args.data);
    let backend = Embedded::open(
        dir.clone(),
        EmbeddedConfig {
            segment_bytes: cfg.segment_bytes,
        },
    )
    .map_err(|e| e.to_string())?;
    let marker_dir = dir.imports();
    std::fs::create_dir_all(&marker_dir).map_err(io("creating imports dir"))?;
    let marker_path = marker_dir.join(format!("{fp}.json"));
    let (mut marker, fresh): (Marker, bool) = match std::fs::read(&marker_path) {
        Ok(b) => (
            serde_json::from_slice(&b).map_err(io("reading marker"))?,
            false,
        ),
        Err(_) => (
            Marker {
                file: args.file.display().to_string(),
                ..Marker::default()
            },
            true,
        ),
    };
    if marker.complete {
        println!(
            "{} was already imported ({} rows, {} bad; marker {}): nothing to do",
            args.file.display(),
            marker.rows,
            marker.bad,
            marker_path.display()
        );
        return Ok(());
    }
    let id_prefix = format!("imp:{}:", &fp[..12]);
    let (stream, mut appender) = backend
        .open_namespace(&spec)
        .map_err(io("opening the stream"))?;
    // Rows of this import the stream has beyond what the marker knows (crash after fsync).
    let mut resume_after = marker.lines_done;
    if !fresh {
        let mut at = marker.log_next.max(stream.start_offset());
        loop {
            let batch = stream
                .read(at, 8192, 8 << 20)
                .map_err(io("reading the stream"))?;
            if batch.next <= at {
                break;
            }
            at = batch.next;
            for p in &batch.publications {
                if let Some(line) = p
                    .msg_id
                    .as_deref()
                    .and_then(|id| id.strip_prefix(&id_prefix))
                    .and_then(|l| l.parse::<u64>().ok())
                {
                    resume_after = resume_after.max(line);
                }
            }
        }
    }
    if fresh {
        marker.log_next = appender.next_offset();
        write_marker(&marker_path, &marker)?;
    }
    let total = file
        .metadata()
        .map_err(|e| format!("reading {}: {e}", args.file.display()))?
        .len();
    let text::Text {
        lines: mut reader,
        encoding,
        raw_read,
    } = text::lines(file).map_err(|e| format!("reading {}: {e}", args.file.display()))?;
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut parser = Parser::new(args.format, symbol.clone());
    let started = Instant::now();
    let mut line = String::new();
    let mut lineno = 0u64;
    let batch_rows = args.batch_rows.max(1);
    // The data of one stream write, kept as one buffer plus ranges, with each row's channel
    // and msg_id.
    let mut vals: Vec<u8> = Vec::with_capacity(batch_rows.min(BATCH_ROWS) * 96);
    let mut spans: Vec<(Channel, String, usize, usize)> =
        Vec::with_capacity(batch_rows.min(BATCH_ROWS));
    let mut channels: HashMap<String, Channel> = Default::default();
    let mut bars: Vec<(i64, Candle)> = Vec::new();
    let (mut rows, mut bad) = (marker.rows, marker.bad);
    let ns_prefix = format!("{}.", args.namespace);
    // Bar files write the candle store; tick files only lift marks in one that exists.
    let store = if matches!(args.format, ImportFormat::Mt4 | ImportFormat::Mt5)
        || dir.candle_store().exists()
    {
        Some(Store::open(&dir.candle_store()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    // Series with bars imported from a bar file, by symbol: ticks imported into a namespace
    // the candles are built from lift the marks of the bars they fall in, so the server
    // rebuilds those bars from the ticks (docs/candles.md, "Imported bars").
    let mut marked: HashMap<String, Vec<Resolution>> = HashMap::new();
    let feeds_candles = cfg.candles.quote_namespaces.contains(&args.namespace)
        || cfg.candles.trade_namespaces.contains(&args.namespace);
    if let (Some(s), true) = (&store, feeds_candles && args.format != ImportFormat::Mt4) {
        for (sym, res) in s.imported_series().map_err(|e| e.to_string())? {
            marked.entry(sym).or_default().push(res);
        }
    }
    // This batch's ticks in marked series: symbol → (resolution, bar start).
    let mut touched: HashMap<String, BTreeSet<(Resolution, i64)>> = HashMap::new();
    let fixed_res = match (&args.resolution, &marker.resolution) {
        (Some(r), _) | (None, Some(r)) => Some(Resolution::parse(r).map_err(|e| e.to_string())?),
        (None, None) => None,
    };
    let mut res: Option<Resolution> = fixed_res;
    let stamp = now_nanos();
    let mut eof = false;
    let mut batches = 0u64;
    while !eof {
        // One batch.
        while spans.len() < batch_rows && bars.len() < batch_rows {
            line.clear();
            let n = reader.read_line(&mut line).map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::InvalidData {
                    " (import takes UTF-8, with or without a BOM, and UTF-16 with a BOM)"
                } else {
                    ""
                };
                format!("{}:{}: {e}{hint}", args.file.display(), lineno + 1)
            })?;
            if n == 0 {
                eof = true;
                break;
            }
            lineno += 1;
            let row = parser.parse(&line, lineno);
            if lineno <= resume_after {
                // Imported by an earlier, interrupted run. Rows it made durable after its last
                // marker still count in this run's totals.
                if lineno > marker.lines_done {
                    match row {
                        Ok(Row::Tick { .. } | Row::Bar { .. }) => rows += 1,
                        Ok(Row::Skip) => {}
                        Err(_) => bad += 1,
                    }
                }
                continue;
            }
            match row {
                Ok(Row::Skip) => {}
                Ok(Row::Tick {
                    ts,
                    symbol,
                    bid,
                    ask,
                    last,
                    volume,
                }) => {
                    let channel = match channels.get(symbol) {
                        Some(c) => c.clone(),
                        None => {
                            let c = Channel::parse(&format!("{ns_prefix}{symbol}"))
                                .map_err(|e| format!("line {lineno}: {e}"))?;
                            channels.insert(symbol.to_string(), c.clone());
                            c
                        }
                    };
                    // Usually nothing is marked: then this costs one branch per row.
                    let series = if marked.is_empty() {
                        None
                    } else {
                        marked.get(symbol)
                    };
                    if let Some(series) = series {
                        let starts = match touched.get_mut(symbol) {
                            Some(t) => t,
                            None => touched.entry(symbol.to_string()).or_default(),
                        };
                        for r in series {
                            starts.insert((*r, r.bucket_start(ts)));
                        }
                    }
                    let v0 = vals.len();
                    let id = format!("{id_prefix}{lineno}");
                    vals.push(b'{');
                    // A row with only `last` and `volume` is a trade of that size: the candle
                    // projection reads a last-only quote's `volume` as its size.
                    for (k, v) in [
                        ("bid", bid),
                        ("ask", ask),
                        ("last", last),
                        ("volume", volume),
                    ] {
                        if let Some(v) = v {
                            let _ = write!(vals, "\"{k}\":\"{v}\",");
                        }
                    }
                    let _ = write!(vals, "\"ts\":{ts}}}");
                    spans.push((channel, id, v0, vals.len()));
                    rows += 1;
                }
                Ok(Row::Bar { ts, candle }) => {
                    bars.push((ts, candle));
                    rows += 1;
                }
                Err(reason) => {
                    bad += 1;
                    if args.strict {
                        pb.abandon();
                        return Err(format!(
                            "{}:{lineno}: {reason} (aborting: --strict; {} rows before it are imported)",
                            args.file.display(),
                            rows - marker.rows
                        ));
                    }
                    if bad <= args.show_errors as u64 {
                        // suspend+eprintln works with a hidden bar too (println would not).
                        pb.suspend(|| {
                            eprintln!("{}:{lineno}: {reason} (skipped)", args.file.display())
                        });
                    }
                }
            }
        }
        if !touched.is_empty() {
            // Before the ticks are appended: a crash between the two leaves marks lifted for
            // rows the resumed import then appends; the other order could leave ticks in the
            // log (skipped on resume) whose bars stay marked.
            let mut batch = Batch::default();
            for (sym, starts) in touched.drain() {
                for (r, start) in starts {
                    batch.unmark.push((sym.clone(), r, start));
                }
            }
            if let Some(s) = &store {
                s.commit(&batch).map_err(|e| e.to_string())?;
            }
        }
        if !spans.is_empty() {
            let items: Vec<AppendItem<'_>> = spans
                .iter()
                .map(|(channel, id, v0, v1)| AppendItem {
                    channel,
                    msg_id: Some(id),
                    data: &vals[*v0..*v1],
                })
                .collect();
            appender.append(&items, stamp).map_err(io("appending"))?;
            appender.sync().map_err(io("fsync"))?;
            spans.clear();
            vals.clear();
        }
        if !bars.is_empty() {
            if res.is_none() {
                res = Some(infer_resolution(&bars)?);
            }
            let r = res.unwrap_or(Resolution::Min1);
            marker.resolution = Some(r.to_string());
            let mut batch = Batch::default();
            for (ts, mut c) in bars.drain(..) {
                c.start_ms = r.bucket_start(ts);
                batch.imported_bars.push((symbol.clone(), r, c));
            }
            batch.new_symbols.push((
                symbol.clone(),
                i64::try_from(now_nanos() / 1_000_000).unwrap_or(0),
            ));
            if let Some(s) = &store {
                s.commit(&batch).map_err(|e| e.to_string())?;
            }
        }
        batches += 1;
        if args.crash_after_batches == Some(batches) {
            // The test hook: this batch is durable, its marker is not.
            eprintln!("tickwire import: test hook: aborting after batch {batches}, before its progress marker");
            std::process::abort();
        }
        marker.lines_done = lineno;
        marker.log_next = appender.next_offset();
        marker.rows = rows;
        marker.bad = bad;
        marker.complete = eof;
        write_marker(&marker_path, &marker)?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        pb.set_position(raw_read.get());
        pb.set_message(format!(
            "{rows} rows, {:.0} rows/s, {bad} bad",
            rows as f64 / secs
        ));
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "imported {} rows from {} lines of {} ({encoding}) in {:.2}s ({:.0} rows/s); {} bad rows skipped{}",
        rows,
        lineno,
        args.file.display(),
        secs,
        rows as f64 / secs,
        bad,
        match res {
            Some(r) => format!("; bars stored at {r}"),
            None => String::new(),
        }
    );
    Ok(())
}

/// The smallest spacing between the first bars, as a resolution.
fn infer_resolution(bars: &[(i64, Candle)]) -> Res<Resolution> {
    let gap = bars
        .windows(2)
        .take(100)
        .map(|w| w[1].0 - w[0].0)
        .filter(|g| *g > 0)
        .min()
        .ok_or("cannot infer the bar resolution from one bar: pass --resolution")?;
    Resolution::ALL
        .iter()
        .copied()
        .find(|r| r.fixed_len_ms() == Some(gap))
        .or(match gap {
            g if (28 * 86_400_000..=31 * 86_400_000).contains(&g) => Some(Resolution::Month1),
            _ => None,
        })
        .ok_or_else(|| format!("bars are {gap} ms apart: no such resolution; pass --resolution"))
}
