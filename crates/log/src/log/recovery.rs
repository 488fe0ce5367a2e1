//! Recovery at open: a full scan of the active segment, a check of sealed ones, and the
//! quarantine of damaged bytes.

use super::*;

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

/// One segment as found by recovery, before it is shared.
pub(super) struct Recovered {
    pub(super) seg: Segment,
    pub(super) next_offset: Offset,
    pub(super) since_index: u64,
}

/// Name of the directory, inside a log directory, that keeps damaged bytes recovery removed.
const QUARANTINE_DIR: &str = "quarantine";

/// Full scan of the last segment. A torn tail (damage with no valid record after it: the last
/// write was cut short) is cut off; damage followed by valid records is corruption, not a torn
/// write, so it is quarantined instead and every record after it kept (see [`quarantine`]).
pub(super) fn recover_active(
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
pub(super) fn recover_sealed(
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
