//! A consistent copy of a live log, for backups: every record below a point, byte for byte,
//! taken while the writer goes on appending.
//!
//! Segments are append-only and sealed ones never change, so a snapshot is a list of byte
//! ranges: every sealed segment whole, the active one up to the end of the last record below
//! the snapshot's `next_offset`, and each sealed segment's index written from memory (the
//! file on disk may be mid-write just after a roll). The ranges are read through the log's own
//! open handles, so retention deleting a segment meanwhile does not take it from the copy.
//! A log opened from the copy needs no repair: no torn tail, nothing to rebuild.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::reader::LogReader;
use crate::record::{self, HEADER_LEN};
use crate::segment::{self, read_full_at, Segment};
use crate::{Error, Offset, Result};

/// What [`LogReader::snapshot`] returns: the files of a log holding exactly the records in
/// `start_offset..next_offset`.
#[derive(Debug)]
pub struct LogSnapshot {
    /// The oldest record in the copy.
    pub start_offset: Offset,
    /// One past the newest record in the copy.
    pub next_offset: Offset,
    /// Segment and index files, oldest first.
    pub files: Vec<SnapshotFile>,
}

/// One file of a snapshot: its name in the log directory and its exact length.
#[derive(Debug)]
pub struct SnapshotFile {
    /// `<base offset>.log` or `<base offset>.index`.
    pub name: String,
    /// Bytes [`SnapshotFile::write_to`] writes.
    pub len: u64,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// The first `len` bytes of a segment.
    Segment(Arc<Segment>),
    /// Bytes made in memory (an index).
    Bytes(Vec<u8>),
}

/// Chunk size of a copy.
const COPY_CHUNK: usize = 1 << 20;

impl SnapshotFile {
    /// Reads the file's bytes from `pos` into `buf` (0 at its end), like `pread`.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(pos);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        match &self.source {
            Source::Bytes(b) => {
                let at = pos as usize;
                buf[..want].copy_from_slice(&b[at..at + want]);
                Ok(want)
            }
            Source::Segment(seg) => {
                let n = read_full_at(seg.file.as_ref(), &mut buf[..want], pos)?;
                if n < want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} ends at byte {} before the {} bytes snapshotted",
                            seg.path.display(),
                            pos + n as u64,
                            self.len
                        ),
                    ));
                }
                Ok(n)
            }
        }
    }

    /// Writes the file's `len` bytes to `out`.
    pub fn write_to(&self, out: &mut dyn Write) -> Result<()> {
        let mut buf = vec![0u8; COPY_CHUNK.min(self.len as usize).max(1)];
        let mut pos = 0u64;
        let err = |op: &'static str| {
            let path = self.name.clone().into();
            move |source| Error::Io { path, op, source }
        };
        while pos < self.len {
            let n = self
                .read_at(&mut buf, pos)
                .map_err(err("read for snapshot"))?;
            out.write_all(&buf[..n]).map_err(err("write snapshot"))?;
            pos += n as u64;
        }
        Ok(())
    }
}

impl LogReader {
    /// The files of a log holding every record below the current [`LogReader::next_offset`]:
    /// see the module docs. Cheap to take (a lock held while the segment list is cloned);
    /// the copying happens in [`SnapshotFile::write_to`].
    pub fn snapshot(&self) -> Result<LogSnapshot> {
        let shared = self.shared();
        // Under the segment list's lock no segment is added or removed, so every record below
        // `next` is in one of these (the writer publishes offsets of a new segment only after
        // adding it to the list).
        let (segments, next, start) = {
            let segs = shared
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let next = shared.next_offset.load(Ordering::Acquire);
            let start = shared.start_offset.load(Ordering::Acquire);
            (segs.clone(), next, start)
        };
        let mut files = Vec::with_capacity(segments.len() * 2);
        let last = segments.len().saturating_sub(1);
        for (i, seg) in segments.iter().enumerate() {
            let name = |ext: &str| format!("{:020}.{ext}", seg.base);
            if i < last {
                // Sealed: fsynced and complete before the next segment existed.
                let len = seg.size.load(Ordering::Acquire);
                let index = seg.index.read().unwrap_or_else(PoisonError::into_inner);
                let bytes = segment::encode_index(
                    seg.base,
                    seg.max_timestamp.load(Ordering::Acquire),
                    &index,
                );
                files.push(SnapshotFile {
                    name: name("log"),
                    len,
                    source: Source::Segment(Arc::clone(seg)),
                });
                files.push(SnapshotFile {
                    name: name("index"),
                    len: bytes.len() as u64,
                    source: Source::Bytes(bytes),
                });
            } else {
                let len = end_of(seg, next)?;
                files.push(SnapshotFile {
                    name: name("log"),
                    len,
                    source: Source::Segment(Arc::clone(seg)),
                });
            }
        }
        Ok(LogSnapshot {
            start_offset: start.max(segments.first().map_or(next, |s| s.base)),
            next_offset: next,
            files,
        })
    }
}

/// The byte position where record `upto` starts in `seg` (the end of the records below it):
/// from the nearest index entry, record by record, reading only their length fields.
fn end_of(seg: &Segment, upto: Offset) -> Result<u64> {
    let start = seg.lookup(upto);
    let mut pos = start.position;
    let mut offset = start.offset;
    let mut header = [0u8; HEADER_LEN];
    while offset < upto {
        let n = read_full_at(seg.file.as_ref(), &mut header, pos).map_err(|source| Error::Io {
            path: seg.path.clone(),
            op: "read for snapshot",
            source,
        })?;
        match record::peek(&header[..n]) {
            Some((o, len)) if o == offset => {
                pos += len as u64;
                offset += 1;
            }
            _ => {
                return Err(Error::Corrupt {
                    path: seg.path.clone(),
                    position: pos,
                    reason: format!("record {offset} not where the index says"),
                })
            }
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use crate::{Entry, Log, LogConfig};

    /// A snapshot taken between appends opens as a log with exactly the records below its
    /// `next_offset`, byte for byte, nothing cut or rebuilt, across several segments.
    #[test]
    fn a_snapshot_opens_as_the_log_up_to_its_point() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        let value = |i: u64| format!("value-{i}-{}", "x".repeat((i % 50) as usize));
        for i in 0..300u64 {
            let v = value(i);
            log.append(&[Entry {
                timestamp: i,
                key: b"k",
                value: v.as_bytes(),
            }])
            .unwrap();
        }
        let snap = log.reader().snapshot().unwrap();
        // The writer goes on after the snapshot; the copy must not see it.
        for i in 300..350u64 {
            let v = value(i);
            log.append(&[Entry {
                timestamp: i,
                key: b"k",
                value: v.as_bytes(),
            }])
            .unwrap();
        }
        assert_eq!((snap.start_offset, snap.next_offset), (0, 300));
        assert!(snap.files.len() > 3, "several segments: {:?}", snap.files);
        let copy = tempfile::tempdir().unwrap();
        for f in &snap.files {
            let mut bytes = Vec::new();
            f.write_to(&mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, f.len);
            std::fs::write(copy.path().join(&f.name), bytes).unwrap();
        }
        let restored = Log::open(copy.path(), cfg).unwrap();
        let r = restored.recovery();
        assert_eq!(
            (r.truncated_bytes, r.indexes_rebuilt, r.quarantined.len()),
            (0, 0, 0),
            "{r:?}"
        );
        assert_eq!(restored.next_offset(), 300);
        let records = restored.reader().read(0, 1000, usize::MAX).unwrap();
        assert_eq!(records.len(), 300);
        for (i, rec) in records.iter().enumerate() {
            assert_eq!(rec.offset, i as u64);
            assert_eq!(&rec.value[..], value(i as u64).as_bytes());
        }
    }
}
