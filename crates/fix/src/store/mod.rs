//! Persistence of sequence numbers behind a trait, so the session stays free of I/O.

pub mod file;

use crate::error::Result;

/// The next sequence numbers of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqNums {
    /// MsgSeqNum of the next message we send.
    pub next_sender: u64,
    /// MsgSeqNum we expect on the next message we receive.
    pub next_target: u64,
}

impl Default for SeqNums {
    fn default() -> Self {
        SeqNums {
            next_sender: 1,
            next_target: 1,
        }
    }
}

/// Where a session keeps its sequence numbers between connections and restarts.
///
/// The session calls [`SeqStore::save`] once per event that changed them (not once per
/// message), before it returns the actions that depend on them.
pub trait SeqStore {
    /// The stored numbers (1/1 for a new session).
    fn load(&mut self) -> Result<SeqNums>;
    /// Replaces the stored numbers.
    fn save(&mut self, seqs: SeqNums) -> Result<()>;
}

impl<T: SeqStore + ?Sized> SeqStore for Box<T> {
    fn load(&mut self) -> Result<SeqNums> {
        (**self).load()
    }
    fn save(&mut self, seqs: SeqNums) -> Result<()> {
        (**self).save(seqs)
    }
}

/// A store that forgets on restart: for tests and for sessions that reset on every logon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySeqStore {
    seqs: SeqNums,
}

impl MemorySeqStore {
    /// A store starting from the given numbers.
    pub fn new(seqs: SeqNums) -> Self {
        MemorySeqStore { seqs }
    }
}

impl SeqStore for MemorySeqStore {
    fn load(&mut self) -> Result<SeqNums> {
        Ok(self.seqs)
    }
    fn save(&mut self, seqs: SeqNums) -> Result<()> {
        self.seqs = seqs;
        Ok(())
    }
}
