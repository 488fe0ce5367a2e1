//! Segment files, their headers, sparse index files and the recovery scan.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{PoisonError, RwLock};

use crate::error::io_err;
use crate::record::{self, DecodeError};
use crate::vfs::{VFile, Vfs};
use crate::{Offset, Result};

/// Magic at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 4] = *b"TWLG";
/// Magic at the start of every index file.
pub(crate) const INDEX_MAGIC: [u8; 4] = *b"TWIX";
/// Bumped on any incompatible change to segment or index layout.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// magic(4) + version(4) + base offset(8).
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// magic(4) + version(4) + base(8) + max_timestamp(8) + count(4) + crc of entries(4).
const INDEX_HEADER_LEN: usize = 32;
/// offset(8) + position(8): absolute values so no width limit ever bites.
const INDEX_ENTRY_LEN: usize = 16;
/// Recovery reads in large chunks: the scan is sequential and CRC-bound.
const SCAN_CHUNK: usize = 1024 * 1024;

/// A sparse index entry: the record with `offset` starts at byte `position` of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: Offset,
    pub position: u64,
}

/// One segment, shared between the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: Offset,
    pub path: PathBuf,
    pub index_path: PathBuf,
    /// Opened read+write; positional I/O only (pread/pwrite), so one handle serves everyone.
    pub file: Box<dyn VFile>,
    pub index: RwLock<Vec<IndexEntry>>,
    /// Bytes of valid data (header included); only the writer stores, before publishing offsets.
    pub size: AtomicU64,
    /// Largest record timestamp, for age-based retention.
    pub max_timestamp: AtomicU64,
}

impl Segment {
    /// Nearest index entry at or before `offset` (the segment start when there is none).
    pub fn lookup(&self, offset: Offset) -> IndexEntry {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let i = index.partition_point(|e| e.offset <= offset);
        match i.checked_sub(1).and_then(|i| index.get(i)) {
            Some(e) => *e,
            None => IndexEntry {
                offset: self.base,
                position: SEGMENT_HEADER_LEN,
            },
        }
    }
}

pub(crate) fn segment_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// Parses `NNNNNNNNNNNNNNNNNNNN.<ext>` into a base offset.
pub(crate) fn parse_name(name: &str, ext: &str) -> Option<Offset> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) fn segment_header(base: Offset) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&base.to_le_bytes());
    h
}

/// Checks the header of a segment file; `Err` carries the reason.
pub(crate) fn check_segment_header(
    file: &dyn VFile,
    base: Offset,
) -> std::result::Result<(), String> {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    let n = read_full_at(file, &mut h, 0).map_err(|e| format!("reading header: {e}"))?;
    if n < h.len() {
        return Err(format!("header is {n} bytes, expected {}", h.len()));
    }
    if h != segment_header(base) {
        return Err(format!(
            "bad header (magic/version/base offset), expected base {base} version {FORMAT_VERSION}"
        ));
    }
    Ok(())
}

/// The version of a segment whose header has our magic but another format version: a format
/// this build does not read, which recovery must refuse rather than repair.
pub(crate) fn other_version(file: &dyn VFile) -> Option<u32> {
    let mut h = [0u8; 8];
    let n = read_full_at(file, &mut h, 0).ok()?;
    let version = u32::from_le_bytes(h[4..8].try_into().ok()?);
    (n == h.len() && h[0..4] == SEGMENT_MAGIC && version != FORMAT_VERSION).then_some(version)
}

/// Reads until `buf` is full or end of file; returns bytes read.
pub(crate) fn read_full_at(file: &dyn VFile, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes a complete index file. The index is a cache validated on open, so it is not fsynced.
pub(crate) fn write_index(
    fs: &dyn Vfs,
    path: &Path,
    base: Offset,
    max_timestamp: u64,
    entries: &[IndexEntry],
) -> Result<()> {
    let out = encode_index(base, max_timestamp, entries);
    let f = fs.create(path).map_err(io_err("create index", path))?;
    f.write_all_at(&out, 0)
        .map_err(io_err("write index", path))?;
    Ok(())
}

/// An index file's bytes (also what a snapshot writes for a sealed segment).
pub(crate) fn encode_index(base: Offset, max_timestamp: u64, entries: &[IndexEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
    for e in entries {
        body.extend_from_slice(&e.offset.to_le_bytes());
        body.extend_from_slice(&e.position.to_le_bytes());
    }
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + body.len());
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&max_timestamp.to_le_bytes());
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Loads an index file if it exists and is self-consistent for a segment of `segment_len`
/// bytes; `None` means "rebuild it".
pub(crate) fn load_index(
    fs: &dyn Vfs,
    path: &Path,
    base: Offset,
    segment_len: u64,
) -> Option<(Vec<IndexEntry>, u64)> {
    let bytes = fs.read(path).ok()?;
    let header = bytes.get(..INDEX_HEADER_LEN)?;
    let field = |at: usize, n: usize| header.get(at..at + n);
    if field(0, 4)? != INDEX_MAGIC
        || field(4, 4)? != FORMAT_VERSION.to_le_bytes()
        || field(8, 8)? != base.to_le_bytes()
    {
        return None;
    }
    let max_ts = u64::from_le_bytes(field(16, 8)?.try_into().ok()?);
    let count = u32::from_le_bytes(field(24, 4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(field(28, 4)?.try_into().ok()?);
    let body = bytes.get(INDEX_HEADER_LEN..)?;
    if body.len() != count.checked_mul(INDEX_ENTRY_LEN)? || crc32c::crc32c(body) != crc {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    let mut prev = IndexEntry {
        offset: base,
        position: SEGMENT_HEADER_LEN,
    };
    for chunk in body.chunks_exact(INDEX_ENTRY_LEN) {
        let e = IndexEntry {
            offset: u64::from_le_bytes(chunk.get(0..8)?.try_into().ok()?),
            position: u64::from_le_bytes(chunk.get(8..16)?.try_into().ok()?),
        };
        // Strictly increasing and inside the file, or the index is not ours.
        if e.offset <= prev.offset || e.position <= prev.position || e.position >= segment_len {
            return None;
        }
        entries.push(e);
        prev = e;
    }
    Some((entries, max_ts))
}

/// What a sequential scan of a segment found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Byte position just after the last good record.
    pub end_position: u64,
    /// Offset the next record would have.
    pub next_offset: Offset,
    pub records: u64,
    /// Largest timestamp of a real record (lost-record placeholders carry `u64::MAX`).
    pub max_timestamp: u64,
    /// Index entries for the scanned range, built with the same rule as `append`.
    pub index: Vec<IndexEntry>,
    /// Bytes of records since the last index entry (or the scan's start).
    pub since_index: u64,
    /// Where and why the scan stopped before end of file (torn or corrupt data).
    pub stop: Option<(u64, String)>,
}

impl ScanOutcome {
    /// Nothing scanned yet, starting at `start` (a record boundary with an index entry or the
    /// segment's first record).
    pub fn at(start: IndexEntry) -> ScanOutcome {
        ScanOutcome {
            end_position: start.position,
            next_offset: start.offset,
            records: 0,
            max_timestamp: 0,
            index: Vec::new(),
            since_index: 0,
            stop: None,
        }
    }
}

/// Scans records from `start` (a record boundary holding `start_offset`) to `file_len`, verifying
/// checksums and offset continuity; stops at the first bad byte.
pub(crate) fn scan(
    file: &dyn VFile,
    path: &Path,
    file_len: u64,
    start: IndexEntry,
    index_interval: u64,
) -> Result<ScanOutcome> {
    let mut out = ScanOutcome::at(start);
    scan_more(file, path, file_len, &mut out, index_interval)?;
    Ok(out)
}

/// Continues a scan from `out.end_position` (expecting `out.next_offset` there), so recovery can
/// resume after repairing the range where it stopped.
pub(crate) fn scan_more(
    file: &dyn VFile,
    path: &Path,
    file_len: u64,
    out: &mut ScanOutcome,
    index_interval: u64,
) -> Result<()> {
    out.stop = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = out.end_position; // file position of buf[0]
    let mut consumed = 0usize;
    loop {
        let rec_pos = buf_pos + consumed as u64;
        if rec_pos >= file_len {
            return Ok(());
        }
        match record::decode(buf.get(consumed..).unwrap_or(&[])) {
            Ok(d) => {
                if d.offset != out.next_offset {
                    out.stop = Some((
                        rec_pos,
                        format!(
                            "record has offset {}, expected {}",
                            d.offset, out.next_offset
                        ),
                    ));
                    return Ok(());
                }
                if out.since_index >= index_interval {
                    out.index.push(IndexEntry {
                        offset: d.offset,
                        position: rec_pos,
                    });
                    out.since_index = 0;
                }
                out.since_index += d.encoded_len as u64;
                consumed += d.encoded_len;
                if !d.is_lost() {
                    out.max_timestamp = out.max_timestamp.max(d.timestamp);
                }
                out.records += 1;
                out.next_offset += 1;
                out.end_position = rec_pos + d.encoded_len as u64;
            }
            Err(DecodeError::Incomplete { needed }) => {
                let left = file_len - rec_pos;
                if needed as u64 > left {
                    out.stop = Some((
                        rec_pos,
                        format!("torn record: needs {needed} bytes, {left} left in file"),
                    ));
                    return Ok(());
                }
                // Slide the unread tail to the front and refill from the file.
                buf.drain(..consumed.min(buf.len()));
                consumed = 0;
                buf_pos = rec_pos;
                let have = buf.len();
                let want = (needed.max(SCAN_CHUNK) as u64).min(left) as usize;
                buf.resize(want.max(have), 0);
                let n = read_full_at(file, &mut buf[have..], rec_pos + have as u64)
                    .map_err(io_err("read segment", path))?;
                buf.truncate(have + n);
                if n == 0 {
                    out.stop = Some((rec_pos, "file shorter than its reported length".into()));
                    return Ok(());
                }
            }
            Err(DecodeError::Corrupt(kind)) => {
                out.stop = Some((rec_pos, kind.to_string()));
                return Ok(());
            }
        }
    }
}

/// Where valid records resume after a damaged range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resync {
    /// Byte position of the first valid record after the damage.
    pub position: u64,
    /// Its offset: the records `first_lost..offset` were in the damaged range.
    pub offset: Offset,
}

/// Looks for the first valid record after damage that starts at `hole_start`, where the record
/// with offset `first_lost` should have been. `None` means nothing valid follows: the damage is
/// a torn tail.
///
/// A candidate must decode with a good checksum and have an offset the damaged range can
/// account for: above `first_lost` (or equal, only right at `hole_start`: the header-only case),
/// and no more records lost than could fit in the skipped bytes (each takes at least a header).
/// The offset test runs before any hashing, so a scan over megabytes of garbage stays cheap, and
/// a record-shaped fragment inside a lost record's value almost never passes it.
pub(crate) fn find_resync(
    file: &dyn VFile,
    path: &Path,
    file_len: u64,
    hole_start: u64,
    first_lost: Offset,
) -> Result<Option<Resync>> {
    let header = record::HEADER_LEN;
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = hole_start;
    while pos + header as u64 <= file_len {
        let want = (file_len - pos).min((SCAN_CHUNK + header) as u64) as usize;
        buf.resize(want, 0);
        let n = read_full_at(file, &mut buf, pos).map_err(io_err("read segment", path))?;
        buf.truncate(n);
        if n < header {
            break;
        }
        let positions = n - header + 1;
        for i in 0..positions {
            let at = pos + i as u64;
            let Some((offset, total)) = record::peek(&buf[i..]) else {
                continue;
            };
            let skipped = at - hole_start;
            let plausible = if offset == first_lost {
                skipped == 0
            } else {
                offset > first_lost
                    && (offset - first_lost).saturating_mul(header as u64) <= skipped
            };
            if !plausible || at + total as u64 > file_len {
                continue;
            }
            let valid = if let Some(bytes) = buf.get(i..i + total) {
                record::decode(bytes).is_ok_and(|d| d.offset == offset)
            } else {
                // A large record reaching past the window: read it whole, just this once.
                let mut whole = vec![0u8; total];
                let got =
                    read_full_at(file, &mut whole, at).map_err(io_err("read segment", path))?;
                got == total && record::decode(&whole).is_ok_and(|d| d.offset == offset)
            };
            if valid {
                return Ok(Some(Resync {
                    position: at,
                    offset,
                }));
            }
        }
        pos += positions as u64;
    }
    Ok(None)
}

/// Opens an existing segment file read+write.
pub(crate) fn open_rw(fs: &dyn Vfs, path: &Path) -> Result<Box<dyn VFile>> {
    fs.open(path).map_err(io_err("open segment", path))
}

/// Creates (or resets) a segment file holding only its header.
pub(crate) fn create_segment(fs: &dyn Vfs, path: &Path, base: Offset) -> Result<Box<dyn VFile>> {
    let file = fs.create(path).map_err(io_err("create segment", path))?;
    file.write_all_at(&segment_header(base), 0)
        .map_err(io_err("write segment header", path))?;
    Ok(file)
}

/// fsync of a directory, so created/deleted/renamed entries survive power loss.
pub(crate) fn sync_dir(fs: &dyn Vfs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(io_err("fsync directory", dir))
}
