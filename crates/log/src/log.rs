//! The single writer: open + recovery, append, group-commit sync, roll, retention.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::io_err;
use crate::reader::LogReader;
use crate::record;
use crate::segment::{self, IndexEntry, Segment, SEGMENT_HEADER_LEN};
use crate::vfs::{StdFs, VFile, Vfs};
use crate::{Entry, Error, LogConfig, Offset, Result};

/// State shared by the writer and all readers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Oldest first; the last one is the active segment.
    pub segments: RwLock<Vec<Arc<Segment>>>,
    /// Published with Release after the bytes are written, so a reader that loads it with Acquire
    /// never looks at a record still being written.
    pub next_offset: AtomicU64,
    pub start_offset: AtomicU64,
    /// Lets readers size their first read to cover the skip from an index entry.
    pub index_interval: usize,
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments present after recovery.
    pub segments: usize,
    /// Records whose checksum was verified during recovery.
    pub records_scanned: u64,
    /// Bytes cut from the tail of the active segment: a torn last write, or damage with no
    /// valid record after it (trailing garbage, zeroes).
    pub truncated_bytes: u64,
    /// Segment file and byte position where the tail was cut, if it was.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Why the tail was cut.
    pub truncation_reason: Option<String>,
    /// Damaged ranges of the active segment with valid records after them: not a torn tail, so
    /// each was copied to the quarantine directory and its records replaced by placeholders;
    /// every record after it was kept at its offset.
    pub quarantined: Vec<Quarantined>,
    /// Sparse indexes rebuilt because they were missing or inconsistent.
    pub indexes_rebuilt: usize,
    /// Orphan index files removed (their segment was deleted).
    pub orphans_removed: usize,
    /// True when the directory held no log and a new one was created.
    pub created: bool,
}

impl RecoveryReport {
    /// Bytes moved to quarantine, all ranges.
    pub fn quarantined_bytes(&self) -> u64 {
        self.quarantined
            .iter()
            .map(|q| q.bytes.end - q.bytes.start)
            .sum()
    }

    /// Records lost in quarantined ranges (now placeholders), all ranges.
    pub fn lost_records(&self) -> u64 {
        self.quarantined
            .iter()
            .map(|q| q.offsets.end - q.offsets.start)
            .sum()
    }
}

/// One damaged range recovery found in the active segment, with valid records after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The segment file.
    pub segment: PathBuf,
    /// The damaged bytes, `[start, end)` in the segment; `end` is where valid records resume.
    /// A range starting at 0 includes a damaged segment header (rewritten).
    pub bytes: Range<u64>,
    /// The offsets whose records were in those bytes, now placeholders
    /// ([`crate::Record::is_lost`]); empty when only the segment header was damaged.
    pub offsets: Range<Offset>,
    /// Where the damaged bytes were copied: `<log dir>/quarantine/<base>-<start>.bad`.
    pub copy: PathBuf,
    /// What was wrong at `bytes.start`.
    pub reason: String,
}

/// The append-only log. Single writer: owned by one thread (it is `Send`, not shared).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// The file system: the real one, or the power-loss simulation's in tests.
    fs: Arc<dyn Vfs>,
    cfg: LogConfig,
    shared: Arc<Shared>,
    active: Arc<Segment>,
    /// Where the next record goes in the active segment.
    active_pos: u64,
    /// Bytes written since the last sparse index entry of the active segment.
    since_index: u64,
    next_offset: Offset,
    /// Reused for every batch so append does not allocate in steady state.
    buf: Vec<u8>,
    new_index: Vec<IndexEntry>,
    /// A segment was created or deleted since the last directory fsync.
    dir_dirty: bool,
    /// Shared with [`SyncPoint`]s: an fsync that fails on the sync thread must stop the
    /// writer's next append.
    poisoned: Arc<AtomicBool>,
    report: RecoveryReport,
}

/// Everything appended up to [`SyncPoint::upto`], to be made durable by [`SyncPoint::run`],
/// possibly on another thread. Running an older point after a newer one is harmless.
#[derive(Debug)]
pub struct SyncPoint {
    segment: Arc<Segment>,
    /// The directory to fsync too, when a segment was created or deleted since the last point.
    dir: Option<(PathBuf, Arc<dyn Vfs>)>,
    upto: Offset,
    poisoned: Arc<AtomicBool>,
}

impl SyncPoint {
    /// Every offset below this is durable once [`SyncPoint::run`] succeeds.
    pub fn upto(&self) -> Offset {
        self.upto
    }

    /// Folds an older point into this newer one so one fsync covers both: the older segment
    /// was fsynced when it was sealed, but a directory change it carries must not be lost.
    pub fn absorb(&mut self, older: SyncPoint) {
        if self.dir.is_none() {
            self.dir = older.dir;
        }
    }

    /// fdatasync of the segment (and the directory when it changed). A failure poisons the log
    /// (see [`Log::sync`]) and is returned; so does running a point of a poisoned log, because
    /// an earlier failure may have dropped pages this point covers.
    pub fn run(self) -> Result<Offset> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        if let Err(source) = self.segment.file.sync_data() {
            self.poisoned.store(true, Ordering::Release);
            return Err(Error::Io {
                path: self.segment.path.clone(),
                op: "fdatasync",
                source,
            });
        }
        if let Some((dir, fs)) = &self.dir {
            if let Err(e) = segment::sync_dir(fs.as_ref(), dir) {
                self.poisoned.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(self.upto)
    }
}

/// One segment as found by recovery, before it is shared.
struct Recovered {
    seg: Segment,
    next_offset: Offset,
    since_index: u64,
}

impl Log {
    /// Opens or creates the log in `dir` and recovers it.
    ///
    /// The active (last) segment is scanned completely and any torn or corrupt tail is cut off.
    /// Sealed segments were fsynced when they were sealed, so only their index and their last
    /// index interval are checked (a full scan runs when the index is missing or inconsistent);
    /// corruption inside a sealed segment is an error, never silently dropped.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<Log> {
        Log::open_with(dir, cfg, StdFs::shared())
    }

    /// [`Log::open`] over a given file system (the power-loss simulation's, in tests).
    pub(crate) fn open_with(dir: &Path, cfg: LogConfig, fs: Arc<dyn Vfs>) -> Result<Log> {
        cfg.validate()?;
        let vfs = fs.as_ref();
        // Directories on the way to the log that do not exist yet, deepest first.
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !vfs.is_dir(d)).collect();
        vfs.create_dir_all(dir)
            .map_err(io_err("create log directory", dir))?;
        let mut report = RecoveryReport::default();
        let mut bases = Vec::new();
        let mut index_bases = Vec::new();
        let listing = vfs.list(dir).map_err(io_err("list log directory", dir))?;
        for name in &listing {
            if let Some(base) = segment::parse_name(name, "log") {
                bases.push(base);
            } else if let Some(base) = segment::parse_name(name, "index") {
                index_bases.push(base);
            }
        }
        bases.sort_unstable();

        // Index files whose segment is gone (retention crashed between the two unlinks).
        for base in index_bases {
            if bases.binary_search(&base).is_err() {
                let p = segment::index_path(dir, base);
                remove_if_exists(vfs, &p)?;
                report.orphans_removed += 1;
            }
        }

        let mut dir_dirty = false;
        if bases.is_empty() {
            // A file's fsync does not make the entries of the directories above it durable: a
            // new log's directory (and any directory created on the way to it) is fsynced into
            // its parent now, or a power loss could take the whole log, acknowledged records
            // and all (found by the power-loss simulation).
            let mut parents: Vec<&Path> = missing.iter().filter_map(|d| d.parent()).collect();
            parents.extend(dir.parent());
            parents.sort_unstable();
            parents.dedup();
            for parent in parents.into_iter().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(vfs, parent)?;
            }
            segment::create_segment(vfs, &segment::segment_path(dir, 0), 0)?;
            bases.push(0);
            report.created = true;
            dir_dirty = true;
        }

        let mut segments = Vec::with_capacity(bases.len());
        let mut expected_base: Option<Offset> = None;
        let last = bases.len() - 1;
        let mut tail = None;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::segment_path(dir, base);
            if let Some(expected) = expected_base {
                if expected != base {
                    return Err(Error::Corrupt {
                        path,
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base} but the previous one ends at {expected}"
                        ),
                    });
                }
            }
            let rec = if i == last {
                recover_active(vfs, dir, base, &cfg, &mut report)?
            } else {
                recover_sealed(vfs, dir, base, &cfg, &mut report)?
            };
            expected_base = Some(rec.next_offset);
            if i == last {
                tail = Some((rec.next_offset, rec.since_index));
            }
            segments.push(Arc::new(rec.seg));
        }
        let (next_offset, since_index) = tail.unwrap_or((0, 0));
        let Some(active) = segments.last().cloned() else {
            return Err(Error::Corrupt {
                path: dir.to_path_buf(),
                position: 0,
                reason: "no segment after recovery".into(),
            });
        };
        let start_offset = segments.first().map_or(0, |s| s.base);
        report.segments = segments.len();
        let active_pos = active.size.load(Ordering::Relaxed);
        let index_interval = cfg.index_interval_bytes as usize;
        Ok(Log {
            dir: dir.to_path_buf(),
            fs,
            cfg,
            shared: Arc::new(Shared {
                segments: RwLock::new(segments),
                next_offset: AtomicU64::new(next_offset),
                start_offset: AtomicU64::new(start_offset),
                index_interval,
            }),
            active,
            active_pos,
            since_index,
            next_offset,
            buf: Vec::new(),
            new_index: Vec::new(),
            dir_dirty,
            poisoned: Arc::new(AtomicBool::new(false)),
            report,
        })
    }

    /// What recovery found when this log was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// Appends a batch with consecutive offsets and returns the offset of the first.
    ///
    /// The whole batch goes to the OS in one positional write but is not fsynced (see
    /// [`Log::sync`]); readers see it once this returns. An empty batch returns `next_offset`.
    pub fn append(&mut self, entries: &[Entry<'_>]) -> Result<Offset> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if entries.is_empty() {
            return Ok(self.next_offset);
        }
        let max = self.cfg.max_record_bytes;
        let mut batch_len = 0u64;
        for (index, e) in entries.iter().enumerate() {
            let size = e.key.len() + e.value.len();
            if size > max as usize {
                return Err(Error::RecordTooLarge { index, size, max });
            }
            if record::is_lost(e.timestamp, e.key) {
                return Err(Error::ReservedRecord { index });
            }
            batch_len += record::encoded_len(e) as u64;
        }
        // A batch never straddles segments, so one write covers it; an oversized batch gets a
        // segment of its own rather than being split.
        if self.active_pos > SEGMENT_HEADER_LEN
            && self.active_pos + batch_len > self.cfg.segment_bytes
        {
            self.roll()?;
        }

        let first = self.next_offset;
        let interval = u64::from(self.cfg.index_interval_bytes);
        self.buf.clear();
        self.new_index.clear();
        let mut pos = self.active_pos;
        let mut since_index = self.since_index;
        let mut max_ts = 0u64;
        for (i, e) in entries.iter().enumerate() {
            let offset = first + i as u64;
            if since_index >= interval {
                self.new_index.push(IndexEntry {
                    offset,
                    position: pos,
                });
                since_index = 0;
            }
            record::encode(offset, e, &mut self.buf);
            let len = record::encoded_len(e) as u64;
            pos += len;
            since_index += len;
            max_ts = max_ts.max(e.timestamp);
        }

        if let Err(source) = self.active.file.write_all_at(&self.buf, self.active_pos) {
            // A partial batch may be on disk. Cut it off so later batches do not land behind
            // garbage (recovery would then drop them); if even that fails, stop writing.
            if self.active.file.set_len(self.active_pos).is_err() {
                self.poison();
            }
            return Err(Error::Io {
                path: self.active.path.clone(),
                op: "write",
                source,
            });
        }
        if !self.new_index.is_empty() {
            self.active
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&self.new_index);
        }
        self.active.size.store(pos, Ordering::Relaxed);
        self.active
            .max_timestamp
            .fetch_max(max_ts, Ordering::Relaxed);
        self.active_pos = pos;
        self.since_index = since_index;
        self.next_offset = first + entries.len() as u64;
        self.shared
            .next_offset
            .store(self.next_offset, Ordering::Release);
        Ok(first)
    }

    /// Makes every appended record durable: fdatasync of the active segment, then of the
    /// directory if a segment was created or deleted since the last sync.
    ///
    /// After a failed fsync the kernel may have dropped the dirty pages and cleared the error,
    /// so a retry could falsely succeed; the log is poisoned instead and every later
    /// `append`/`sync` returns [`Error::Poisoned`].
    pub fn sync(&mut self) -> Result<()> {
        self.sync_point()?.run().map(|_| ())
    }

    /// Captures what [`Log::sync`] would make durable, to run on another thread while this one
    /// keeps appending (pipelined group commit: batch N+1 is written while batch N is being
    /// fsynced). Earlier segments were fsynced when they were sealed, so the active segment and,
    /// if it changed, the directory are all a point needs.
    pub fn sync_point(&mut self) -> Result<SyncPoint> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let dir =
            std::mem::take(&mut self.dir_dirty).then(|| (self.dir.clone(), Arc::clone(&self.fs)));
        Ok(SyncPoint {
            segment: Arc::clone(&self.active),
            dir,
            upto: self.next_offset,
            poisoned: Arc::clone(&self.poisoned),
        })
    }

    /// True after a failed write or fsync (see [`Log::sync`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Offset the next appended record will get.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Oldest offset still retained.
    pub fn start_offset(&self) -> Offset {
        self.shared.start_offset.load(Ordering::Acquire)
    }

    /// A reader handle; cheap to clone and usable from any thread.
    pub fn reader(&self) -> LogReader {
        LogReader::new(Arc::clone(&self.shared))
    }

    /// Deletes whole segments from the oldest while the total size exceeds `retention_bytes` or
    /// the oldest segment's newest record is older than `retention_age`. The active segment is
    /// never deleted. Returns how many segments were removed.
    /// The start offset `enforce_retention(now)` would leave, without deleting anything, so a
    /// caller can first copy forward what it must keep (the hub re-appends the newest value of
    /// state channels that live only in doomed segments).
    pub fn retention_cutoff(&self, now_unix_nanos: u64) -> Offset {
        let age_nanos = self
            .cfg
            .retention_age
            .map(|a| u64::try_from(a.as_nanos()).unwrap_or(u64::MAX));
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut total: u64 = segs.iter().map(|s| s.size.load(Ordering::Relaxed)).sum();
        let mut cut = 0;
        // Same rule as enforce_retention: oldest first, never the active (last) segment.
        while cut + 1 < segs.len() {
            let seg = &segs[cut];
            let by_bytes = self.cfg.retention_bytes.is_some_and(|b| total > b);
            let by_age = age_nanos.is_some_and(|age| {
                seg.max_timestamp
                    .load(Ordering::Relaxed)
                    .saturating_add(age)
                    < now_unix_nanos
            });
            if !by_bytes && !by_age {
                break;
            }
            total -= seg.size.load(Ordering::Relaxed);
            cut += 1;
        }
        segs.get(cut).map_or(self.next_offset, |s| s.base)
    }

    pub fn enforce_retention(&mut self, now_unix_nanos: u64) -> Result<usize> {
        let age_nanos = self
            .cfg
            .retention_age
            .map(|a| u64::try_from(a.as_nanos()).unwrap_or(u64::MAX));
        let mut removed = 0;
        loop {
            let oldest = {
                let segs = self
                    .shared
                    .segments
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                if segs.len() <= 1 {
                    break;
                }
                let total: u64 = segs.iter().map(|s| s.size.load(Ordering::Relaxed)).sum();
                let oldest = Arc::clone(&segs[0]);
                let by_bytes = self.cfg.retention_bytes.is_some_and(|b| total > b);
                let by_age = age_nanos.is_some_and(|age| {
                    oldest
                        .max_timestamp
                        .load(Ordering::Relaxed)
                        .saturating_add(age)
                        < now_unix_nanos
                });
                if !by_bytes && !by_age {
                    break;
                }
                oldest
            };
            {
                let mut segs = self
                    .shared
                    .segments
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                segs.remove(0);
                let start = segs.first().map_or(self.next_offset, |s| s.base);
                self.shared.start_offset.store(start, Ordering::Release);
            }
            // Readers holding the Arc keep reading through the open handle after the unlink.
            // The .log goes first: an orphan .index is harmless and removed on the next open.
            remove_if_exists(self.fs.as_ref(), &oldest.path)?;
            remove_if_exists(self.fs.as_ref(), &oldest.index_path)?;
            self.dir_dirty = true;
            removed += 1;
        }
        Ok(removed)
    }

    /// Seals the active segment and starts a new one at `next_offset`.
    fn roll(&mut self) -> Result<()> {
        // Sealed segments are durable before the next one exists; this is what lets recovery
        // trust them with a cheap check instead of a full scan.
        if let Err(source) = self.active.file.sync_data() {
            self.poison();
            return Err(Error::Io {
                path: self.active.path.clone(),
                op: "fdatasync (roll)",
                source,
            });
        }
        {
            let index = self
                .active
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            // The index is a cache: if it cannot be written, open rebuilds it by scanning.
            let written = segment::write_index(
                self.fs.as_ref(),
                &self.active.index_path,
                self.active.base,
                self.active.max_timestamp.load(Ordering::Relaxed),
                &index,
            );
            if written.is_err() {
                let _ = self.fs.remove_file(&self.active.index_path);
            }
        }
        let base = self.next_offset;
        let path = segment::segment_path(&self.dir, base);
        let file = segment::create_segment(self.fs.as_ref(), &path, base)?;
        let seg = Arc::new(Segment {
            base,
            index_path: segment::index_path(&self.dir, base),
            path,
            file,
            index: RwLock::new(Vec::new()),
            size: AtomicU64::new(SEGMENT_HEADER_LEN),
            max_timestamp: AtomicU64::new(0),
        });
        self.shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&seg));
        self.active = seg;
        self.active_pos = SEGMENT_HEADER_LEN;
        self.since_index = 0;
        self.dir_dirty = true;
        Ok(())
    }
}

fn remove_if_exists(fs: &dyn Vfs, path: &Path) -> Result<()> {
    match fs.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            path: path.to_path_buf(),
            op: "remove",
            source: e,
        }),
    }
}

fn file_len(file: &dyn VFile, path: &Path) -> Result<u64> {
    file.size().map_err(io_err("stat segment", path))
}

/// Name of the directory, inside a log directory, that keeps damaged bytes recovery removed.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// Full scan of the last segment. A torn tail (damage with no valid record after it: the last
/// write was cut short) is cut off; damage followed by valid records is corruption, not a torn
/// write, so it is quarantined instead and every record after it kept (see [`quarantine`]).
fn recover_active(
    fs: &dyn Vfs,
    dir: &Path,
    base: Offset,
    cfg: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Recovered> {
    let path = segment::segment_path(dir, base);
    let index_path = segment::index_path(dir, base);
    // The active segment's index lives in memory and is rebuilt by this scan; a file left from a
    // crash right after sealing could be stale once appends resume here.
    remove_if_exists(fs, &index_path)?;
    let mut file = segment::open_rw(fs, &path)?;
    let mut len = file_len(file.as_ref(), &path)?;
    let start = IndexEntry {
        offset: base,
        position: SEGMENT_HEADER_LEN,
    };
    if let Err(reason) = segment::check_segment_header(file.as_ref(), base) {
        if let Some(version) = segment::other_version(file.as_ref()) {
            // Not damage: a format this build does not know. Never "repair" it.
            return Err(Error::Corrupt {
                path,
                position: 4,
                reason: format!(
                    "segment format version {version}, this build reads {}",
                    segment::FORMAT_VERSION
                ),
            });
        }
        match segment::find_resync(file.as_ref(), &path, len, SEGMENT_HEADER_LEN, base)? {
            // Records follow, so this is a damaged header, not a torn segment creation.
            Some(resync) => {
                let damage = Damage {
                    bytes: 0..resync.position,
                    offsets: base..resync.offset,
                    reason,
                };
                report
                    .quarantined
                    .push(quarantine(fs, dir, file.as_ref(), &path, base, damage)?);
            }
            None => {
                // A torn segment creation: nothing in it was ever acknowledged (the directory
                // fsync that would make it durable comes after the header write).
                report.truncated_bytes += len;
                report.truncated_at = Some((path.clone(), 0));
                report.truncation_reason = Some(reason);
                file = segment::create_segment(fs, &path, base)?;
                len = SEGMENT_HEADER_LEN;
            }
        }
    }
    let interval = u64::from(cfg.index_interval_bytes);
    let mut scan = segment::ScanOutcome::at(start);
    loop {
        segment::scan_more(file.as_ref(), &path, len, &mut scan, interval)?;
        let Some((position, reason)) = scan.stop.take() else {
            break;
        };
        if let Some(resync) =
            segment::find_resync(file.as_ref(), &path, len, position, scan.next_offset)?
        {
            let damage = Damage {
                bytes: position..resync.position,
                offsets: scan.next_offset..resync.offset,
                reason,
            };
            report
                .quarantined
                .push(quarantine(fs, dir, file.as_ref(), &path, base, damage)?);
            // The placeholders are valid records now: the scan goes on through them.
            continue;
        }
        file.set_len(scan.end_position)
            .map_err(io_err("truncate torn tail", &path))?;
        // Make the cut durable now, so a later crash cannot resurrect bytes after records that
        // are appended (and acknowledged) behind it.
        file.sync_data()
            .map_err(io_err("fdatasync after truncate", &path))?;
        report.truncated_bytes += len - scan.end_position;
        report.truncated_at = Some((path.clone(), position));
        report.truncation_reason = Some(reason);
        break;
    }
    report.records_scanned += scan.records;
    Ok(Recovered {
        next_offset: scan.next_offset,
        since_index: scan.since_index,
        seg: Segment {
            base,
            path,
            index_path,
            file,
            index: RwLock::new(scan.index),
            size: AtomicU64::new(scan.end_position),
            max_timestamp: AtomicU64::new(scan.max_timestamp),
        },
    })
}

/// A damaged range of a segment, as recovery found it.
struct Damage {
    /// `[start, where valid records resume)`; starts at 0 when the segment header is damaged.
    bytes: Range<u64>,
    /// Offsets whose records were in `bytes`.
    offsets: Range<Offset>,
    reason: String,
}

/// Moves a damaged range out of a segment: copies its bytes durably to
/// `<dir>/quarantine/<base>-<start>.bad`, then overwrites the range with one placeholder per
/// lost offset (and the segment header, when the range starts at 0), so every later record
/// keeps its offset and its position, and fdatasyncs.
///
/// The copy is durable before the segment changes, so a crash in between loses nothing: the next
/// open finds the same damage (or, after a torn overwrite, the rest of it) and does it again.
fn quarantine(
    fs: &dyn Vfs,
    dir: &Path,
    file: &dyn VFile,
    path: &Path,
    base: Offset,
    damage: Damage,
) -> Result<Quarantined> {
    let Damage {
        bytes,
        offsets,
        reason,
    } = damage;
    let inconsistent = |why: &str| Error::Corrupt {
        path: path.to_path_buf(),
        position: bytes.start,
        reason: format!("cannot quarantine {}..{}: {why}", bytes.start, bytes.end),
    };
    let len = usize::try_from(bytes.end - bytes.start)
        .map_err(|_| inconsistent("range too large for memory"))?;
    let mut damaged = vec![0u8; len];
    let got = segment::read_full_at(file, &mut damaged, bytes.start)
        .map_err(io_err("read damaged range", path))?;
    damaged.truncate(got);

    let qdir = dir.join(QUARANTINE_DIR);
    fs.create_dir_all(&qdir)
        .map_err(io_err("create quarantine directory", &qdir))?;
    segment::sync_dir(fs, dir)?;
    let copy = write_quarantine_copy(fs, &qdir, base, bytes.start, &damaged)?;
    segment::sync_dir(fs, &qdir)?;

    let mut out = Vec::with_capacity(len);
    let mut records_start = bytes.start;
    if bytes.start == 0 {
        out.extend_from_slice(&segment::segment_header(base));
        records_start = SEGMENT_HEADER_LEN;
    }
    let count = offsets.end - offsets.start;
    // find_resync only accepts a resume point the lost records can fit before, one header each.
    let mut padding = (bytes.end - records_start)
        .checked_sub(count * record::HEADER_LEN as u64)
        .ok_or_else(|| inconsistent("too small for its lost records"))?;
    if count == 0 && padding > 0 {
        return Err(inconsistent("bytes without a lost record"));
    }
    for offset in offsets.clone() {
        // A placeholder's value is bounded like any record's; a huge range spreads its padding.
        let pad = padding.min(record::MAX_PAYLOAD_BYTES as u64);
        record::encode_lost(offset, pad as usize, &mut out);
        padding -= pad;
    }
    if out.len() != len {
        return Err(inconsistent("placeholders do not fill it"));
    }
    file.write_all_at(&out, bytes.start)
        .map_err(io_err("write lost-record placeholders", path))?;
    file.sync_data()
        .map_err(io_err("fdatasync after quarantine", path))?;
    Ok(Quarantined {
        segment: path.to_path_buf(),
        bytes,
        offsets,
        copy,
        reason,
    })
}

/// Writes `damaged` to `<qdir>/<base>-<start>.bad` and fsyncs it. An existing copy with the
/// same bytes is a repair interrupted by a crash and is reused; one with other bytes (new damage
/// at the same place) is never overwritten: the new copy gets a `.<n>` suffix.
fn write_quarantine_copy(
    fs: &dyn Vfs,
    qdir: &Path,
    base: Offset,
    start: u64,
    damaged: &[u8],
) -> Result<PathBuf> {
    for n in 0u32..1000 {
        let name = if n == 0 {
            format!("{base:020}-{start:020}.bad")
        } else {
            format!("{base:020}-{start:020}.{n}.bad")
        };
        let copy = qdir.join(name);
        let file = match fs.create_new(&copy) {
            Ok(f) => {
                f.write_all_at(damaged, 0)
                    .map_err(io_err("write quarantine file", &copy))?;
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !fs.read(&copy).is_ok_and(|old| old == damaged) {
                    continue;
                }
                fs.open(&copy)
                    .map_err(io_err("open quarantine file", &copy))?
            }
            Err(e) => return Err(io_err("create quarantine file", &copy)(e)),
        };
        file.sync_all()
            .map_err(io_err("fsync quarantine file", &copy))?;
        return Ok(copy);
    }
    Err(Error::Corrupt {
        path: qdir.to_path_buf(),
        position: start,
        reason: "a thousand different quarantine copies of this range already exist".into(),
    })
}

/// Checks a sealed segment: trusts a consistent index plus a verified last interval, otherwise
/// scans it fully and rewrites the index. Any damage is an error: sealed data was fsynced.
fn recover_sealed(
    fs: &dyn Vfs,
    dir: &Path,
    base: Offset,
    cfg: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Recovered> {
    let path = segment::segment_path(dir, base);
    let index_path = segment::index_path(dir, base);
    let file = segment::open_rw(fs, &path)?;
    let len = file_len(file.as_ref(), &path)?;
    segment::check_segment_header(file.as_ref(), base).map_err(|reason| Error::Corrupt {
        path: path.clone(),
        position: 0,
        reason,
    })?;
    let interval = u64::from(cfg.index_interval_bytes);
    let start = IndexEntry {
        offset: base,
        position: SEGMENT_HEADER_LEN,
    };

    if let Some((mut index, max_ts)) = segment::load_index(fs, &index_path, base, len) {
        let from = index.last().copied().unwrap_or(start);
        let tail = segment::scan(file.as_ref(), &path, len, from, interval)?;
        report.records_scanned += tail.records;
        if tail.stop.is_none() && tail.records > 0 {
            index.extend_from_slice(&tail.index);
            return Ok(Recovered {
                next_offset: tail.next_offset,
                since_index: 0,
                seg: Segment {
                    base,
                    path,
                    index_path,
                    file,
                    index: RwLock::new(index),
                    size: AtomicU64::new(len),
                    max_timestamp: AtomicU64::new(max_ts.max(tail.max_timestamp)),
                },
            });
        }
    }

    let scan = segment::scan(file.as_ref(), &path, len, start, interval)?;
    report.records_scanned += scan.records;
    if let Some((position, reason)) = scan.stop {
        return Err(Error::Corrupt {
            path,
            position,
            reason: format!("in sealed segment: {reason}"),
        });
    }
    // Best effort: the in-memory index is what serves reads.
    let _ = segment::write_index(fs, &index_path, base, scan.max_timestamp, &scan.index);
    report.indexes_rebuilt += 1;
    Ok(Recovered {
        next_offset: scan.next_offset,
        since_index: 0,
        seg: Segment {
            base,
            path,
            index_path,
            file,
            index: RwLock::new(scan.index),
            size: AtomicU64::new(len),
            max_timestamp: AtomicU64::new(scan.max_timestamp),
        },
    })
}
