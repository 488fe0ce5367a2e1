//! Reading a stream from an offset to its end and then following it as it grows.

use std::{sync::Arc, time::Duration};

use tickwire_model::{Offset, Publication};

use crate::{ReadBatch, Stream, StreamError};

/// A cursor over a stream: every record from its start offset on, history first, then live as
/// records are appended, with no gap and no duplicate, because both phases are the same read
/// from the same cursor; live only means the read waits on the stream's [`crate::Watermark`]
/// when it has caught up. Records removed by retention before the cursor reached them are
/// passed over (counted in [`Tail::skipped_by_retention`]).
pub struct Tail {
    stream: Arc<dyn Stream>,
    cursor: Offset,
    retention_skipped: u64,
    undecodable: u64,
}

/// Records and bytes one [`Tail`] read takes at most.
const READ_RECORDS: usize = 8192;
const READ_BYTES: usize = 8 << 20;

impl Tail {
    pub fn new(stream: Arc<dyn Stream>, from: Offset) -> Tail {
        Tail {
            stream,
            cursor: from,
            retention_skipped: 0,
            undecodable: 0,
        }
    }

    /// The next offset this tail returns.
    pub fn position(&self) -> Offset {
        self.cursor
    }

    /// The stream it follows.
    pub fn stream(&self) -> &Arc<dyn Stream> {
        &self.stream
    }

    /// How many records between the tail's start and the stream's oldest retained record were
    /// gone when it got there.
    pub fn skipped_by_retention(&self) -> u64 {
        self.retention_skipped
    }

    /// Records this version could not decode, passed over.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Moves the cursor on to `next` (never back) past records the caller took from elsewhere:
    /// a namespace writer's in-memory feed holds the same records as the log at those offsets.
    pub fn advance_to(&mut self, next: Offset) {
        self.cursor = self.cursor.max(next);
    }

    /// Whether the cursor is at the stream's end now.
    pub fn caught_up(&self) -> bool {
        self.cursor >= self.stream.next_offset()
    }

    /// What is stored from the cursor on, up to one read's worth; empty when caught up.
    /// Never waits for new records (blocking file I/O, though).
    pub fn poll(&mut self) -> Result<Vec<Publication>, StreamError> {
        let start = self.stream.start_offset();
        if self.cursor < start {
            self.retention_skipped += start - self.cursor;
            self.cursor = start;
        }
        if self.cursor >= self.stream.next_offset() {
            return Ok(Vec::new());
        }
        let ReadBatch {
            publications,
            next,
            skipped,
            lost: _,
        } = self.stream.read(self.cursor, READ_RECORDS, READ_BYTES)?;
        self.undecodable += skipped;
        self.cursor = self.cursor.max(next);
        Ok(publications)
    }

    /// [`Tail::poll`], waiting up to `timeout` for a record when caught up (blocking: for a
    /// projection's own thread).
    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Vec<Publication>, StreamError> {
        let got = self.poll()?;
        if !got.is_empty() {
            return Ok(got);
        }
        self.stream.watermark().wait_past(self.cursor, timeout);
        self.poll()
    }

    /// [`Tail::poll`], waiting (async) until there is something to return. The read itself is
    /// blocking file I/O of at most one batch.
    pub async fn next(&mut self) -> Result<Vec<Publication>, StreamError> {
        loop {
            let got = self.poll()?;
            if !got.is_empty() {
                return Ok(got);
            }
            let seen = self.cursor;
            self.stream.watermark().changed(seen).await;
        }
    }
}
