//! Concurrent readers: positional reads through the shared segment handles.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::{Bytes, BytesMut};

use crate::log::Shared;
use crate::record::{self, DecodeError, HEADER_LEN};
use crate::segment::{read_full_at, Segment};
use crate::{Error, Offset, Record, Result};

/// Largest single read; records in one chunk share one allocation (key/value are slices of it).
const READ_CHUNK: usize = 64 * 1024;
/// Smallest read, so tiny tail reads still amortise the syscall over a few records.
const MIN_READ: usize = 4 * 1024;
/// Assumed encoded size per requested record when sizing the first read (quotes are ~130 B).
const GUESS_RECORD_BYTES: usize = 256;

/// A read handle on a [`crate::Log`]. Cheap to clone; `Send + Sync`; never blocks the writer
/// except for brief index/segment-list locks.
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// Read limits and progress for one `read` call.
struct Budget {
    max_records: usize,
    max_bytes: usize,
    payload: usize,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The state shared with the writer (for [`LogReader::snapshot`]).
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Records with offset >= `from` (clamped up to the start offset), in order, at most
    /// `max_records`, stopping before the payload (key + value) would exceed `max_bytes` — but
    /// always at least one record when one exists. Never returns anything the writer has not
    /// finished appending. A segment deleted by retention meanwhile is skipped without error.
    pub fn read(&self, from: Offset, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        // Load the high-water mark first: everything below it is completely written.
        let hi = self.shared.next_offset.load(Ordering::Acquire);
        let mut out = Vec::new();
        if max_records == 0 {
            return Ok(out);
        }
        let mut budget = Budget {
            max_records,
            max_bytes,
            payload: 0,
        };
        let mut off = from.max(self.shared.start_offset.load(Ordering::Acquire));
        while off < hi {
            let (seg, seg_end) = {
                let segs = self
                    .shared
                    .segments
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                let i = segs.partition_point(|s| s.base <= off);
                let Some(seg) = i.checked_sub(1).and_then(|i| segs.get(i)) else {
                    // `off` was deleted by retention after we clamped: skip to what remains.
                    match segs.first() {
                        Some(first) if first.base > off => {
                            off = first.base;
                            continue;
                        }
                        _ => break,
                    }
                };
                let seg_end = segs.get(i).map_or(hi, |next| next.base.min(hi));
                (Arc::clone(seg), seg_end)
            };
            if read_segment(
                &seg,
                off,
                seg_end,
                self.shared.index_interval,
                &mut budget,
                &mut out,
            )? {
                break;
            }
            off = seg_end;
        }
        Ok(out)
    }

    /// Offset the writer's next record will get (one past the last readable record).
    pub fn next_offset(&self) -> Offset {
        self.shared.next_offset.load(Ordering::Acquire)
    }

    /// Oldest retained offset.
    pub fn start_offset(&self) -> Offset {
        self.shared.start_offset.load(Ordering::Acquire)
    }
}

/// Reads records `[off, end)` of `seg` into `out`; returns true when a limit stopped it.
fn read_segment(
    seg: &Segment,
    off: Offset,
    end: Offset,
    index_interval: usize,
    budget: &mut Budget,
    out: &mut Vec<Record>,
) -> Result<bool> {
    let start = seg.lookup(off);
    let mut pos = start.position;
    let mut expected = start.offset;
    let mut chunk = Bytes::new();
    // File position of chunk[0].
    let mut chunk_pos = pos;
    // Size the first read to what is likely needed: the skip from the index entry (at most one
    // interval plus a record) plus a guess at the requested records, so small reads do not
    // allocate, zero and fill 64 KiB.
    let wanted = budget
        .max_bytes
        .min(budget.max_records.saturating_mul(GUESS_RECORD_BYTES));
    let mut first_read = index_interval
        .saturating_add(GUESS_RECORD_BYTES)
        .saturating_add(wanted)
        .clamp(MIN_READ, READ_CHUNK);
    while expected < end {
        let rel = (pos - chunk_pos) as usize;
        match record::decode(chunk.get(rel..).unwrap_or(&[])) {
            Ok(d) => {
                if d.offset != expected {
                    return Err(Error::Corrupt {
                        path: seg.path.clone(),
                        position: pos,
                        reason: format!("record has offset {}, expected {expected}", d.offset),
                    });
                }
                if expected >= off {
                    let size = d.key.len() + d.value.len();
                    if !out.is_empty() && budget.payload + size > budget.max_bytes {
                        return Ok(true);
                    }
                    let key_start = rel + HEADER_LEN;
                    let value_start = key_start + d.key.len();
                    out.push(Record {
                        offset: d.offset,
                        timestamp: d.timestamp,
                        key: chunk.slice(key_start..value_start),
                        value: chunk.slice(value_start..rel + d.encoded_len),
                    });
                    budget.payload += size;
                    if out.len() >= budget.max_records {
                        return Ok(true);
                    }
                }
                pos += d.encoded_len as u64;
                expected += 1;
            }
            Err(DecodeError::Incomplete { needed }) => {
                // Never read past the published size: beyond it the writer may be mid-write.
                let valid = seg.size.load(Ordering::Relaxed).saturating_sub(pos) as usize;
                let want = needed.max(first_read).min(valid.max(needed));
                first_read = READ_CHUNK;
                let mut buf = BytesMut::zeroed(want);
                let n =
                    read_full_at(seg.file.as_ref(), &mut buf, pos).map_err(|source| Error::Io {
                        path: seg.path.clone(),
                        op: "read",
                        source,
                    })?;
                if n < needed {
                    return Err(Error::Corrupt {
                        path: seg.path.clone(),
                        position: pos,
                        reason: format!(
                            "record {expected} truncated: needs {needed} bytes, {n} read"
                        ),
                    });
                }
                buf.truncate(n);
                chunk = buf.freeze();
                chunk_pos = pos;
            }
            Err(DecodeError::Corrupt(kind)) => {
                return Err(Error::Corrupt {
                    path: seg.path.clone(),
                    position: pos,
                    reason: format!("record {expected}: {kind}"),
                });
            }
        }
    }
    Ok(false)
}
