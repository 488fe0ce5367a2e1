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

// Recovery (what `open` finds and repairs, quarantine of damaged bytes) lives apart from the
// writer's steady-state work.
mod recovery;

use recovery::{recover_active, recover_sealed};
pub use recovery::{Quarantined, RecoveryReport};

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
