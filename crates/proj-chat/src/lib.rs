//! The chat projection. Two indexes over streams, kept by one projection runner:
//!
//! - **Amendments**: for every message that was edited or deleted (`$edit` / `$delete` records
//!   in the namespaces with `edits = true`, see `tickwire_model::amend`), its newest data or its
//!   tombstone, so history pages and the edit checks show a message as it is now without
//!   reading the stream forward from it. A tombstone is final: a later edit changes nothing.
//! - **Read markers**: per user and channel, the last offset the user read, from the `markers`
//!   stream (`markers.<sub>` holds `{"channel":..,"offset":..}` records the server writes for
//!   `read` ops). Markers only move forward, so a stale device cannot move one back.
//!
//! Both live in one redb file, `<data>/projections/chat/chat.redb`, written together with the
//! stream positions in one transaction at each checkpoint (exactly once across restarts: a
//! crash replays from the positions of the last commit, and applying a record twice gives the
//! same entry). Between checkpoints, changes wait in memory and readers see them there first;
//! the file holds the rest, so memory does not grow with the number of markers.
//!
//! In cluster mode every node runs this projection over the shared streams and reaches the same
//! state; a marker the node itself just wrote is also noted at once (`MarkerStore::noted`), so
//! its `read` reply and the next subscribe already count from it.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tickwire_gateway::{Amended, AmendedChange, Amendments, MarkerStore};
use tickwire_hub::{Channel, Hub};
use tickwire_model::{amend, DataDir, Epoch, Offset, Publication, MARKERS};
use tickwire_projection::{
    Positions, Projection, ProjectionError, Runner, RunnerConfig, RunnerHandle, RunnerStats,
};

const AMENDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("amends");
const MARKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("markers");
const POSITIONS: TableDefinition<&str, u64> = TableDefinition::new("positions");
const EPOCHS: TableDefinition<&str, u64> = TableDefinition::new("epochs");

/// What can fail in the chat projection's store.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat store {path}: {op}: {reason}")]
    Db {
        path: PathBuf,
        op: &'static str,
        reason: String,
    },
}

/// One amended message as stored: the channel it is on, the record that amended it last.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    ch: String,
    at: Offset,
    ts: u64,
    /// The newest data; `None` once deleted.
    data: Option<Box<RawValue>>,
}

impl Entry {
    fn amended(&self) -> Amended {
        Amended {
            at: self.at,
            ts_ms: self.ts,
            change: match &self.data {
                Some(d) => AmendedChange::Edited(Bytes::copy_from_slice(d.get().as_bytes())),
                None => AmendedChange::Deleted,
            },
        }
    }
}

/// Changes not yet in the file.
#[derive(Default)]
struct Overlay {
    amends: HashMap<(String, Offset), Entry>,
    markers: HashMap<(String, String), Offset>,
}

/// The state readers share with the projection: the file, and what is on its way into it.
pub struct ChatState {
    path: PathBuf,
    db: Database,
    /// Applied since the last checkpoint.
    pending: Mutex<Overlay>,
    /// Being written by the checkpoint now (readers look here between `pending` and the file).
    committing: Mutex<Arc<Overlay>>,
}

impl ChatState {
    fn open(path: &Path) -> Result<ChatState, ChatError> {
        let err = |op: &'static str| {
            let path = path.to_path_buf();
            move |e: &dyn std::fmt::Display| ChatError::Db {
                path: path.clone(),
                op,
                reason: e.to_string(),
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("create dir")(&e))?;
        }
        let db = Database::create(path).map_err(|e| err("open")(&e))?;
        let tx = db.begin_write().map_err(|e| err("begin")(&e))?;
        {
            tx.open_table(AMENDS).map_err(|e| err("open table")(&e))?;
            tx.open_table(MARKS).map_err(|e| err("open table")(&e))?;
            tx.open_table(POSITIONS)
                .map_err(|e| err("open table")(&e))?;
            tx.open_table(EPOCHS).map_err(|e| err("open table")(&e))?;
        }
        tx.commit().map_err(|e| err("commit")(&e))?;
        Ok(ChatState {
            path: path.to_path_buf(),
            db,
            pending: Mutex::new(Overlay::default()),
            committing: Mutex::new(Arc::new(Overlay::default())),
        })
    }

    fn stored_amend(&self, ns: &str, offset: Offset) -> Option<Entry> {
        let tx = self.db.begin_read().ok()?;
        let t = tx.open_table(AMENDS).ok()?;
        let v = t.get((ns, offset)).ok()??;
        serde_json::from_slice(v.value()).ok()
    }

    fn amend_entry(&self, ns: &str, offset: Offset) -> Option<Entry> {
        let key = (ns.to_string(), offset);
        if let Some(e) = self.pending.lock().amends.get(&key) {
            return Some(e.clone());
        }
        let committing = self.committing.lock().clone();
        if let Some(e) = committing.amends.get(&key) {
            return Some(e.clone());
        }
        self.stored_amend(ns, offset)
    }

    fn stored_marker(&self, sub: &str, channel: &str) -> Option<Offset> {
        let tx = self.db.begin_read().ok()?;
        let t = tx.open_table(MARKS).ok()?;
        let v = t.get((sub, channel)).ok()??;
        Some(v.value())
    }

    fn marker(&self, sub: &str, channel: &str) -> Option<Offset> {
        let key = (sub.to_string(), channel.to_string());
        let pending = self.pending.lock().markers.get(&key).copied();
        let committing = self.committing.lock().markers.get(&key).copied();
        let stored = self.stored_marker(sub, channel);
        [pending, committing, stored].into_iter().flatten().max()
    }

    fn note_marker(&self, sub: &str, channel: &str, offset: Offset) {
        if self.marker(sub, channel).is_some_and(|m| m >= offset) {
            return;
        }
        self.pending
            .lock()
            .markers
            .insert((sub.to_string(), channel.to_string()), offset);
    }

    /// Applies one amendment record `p` (already parsed as `a`).
    fn apply_amend(&self, p: &Publication, a: &amend::Amendment<'_>) {
        // A record names an earlier message of its own stream.
        if a.target >= p.offset {
            return;
        }
        let ns = p.channel.namespace();
        if let Some(old) = self.amend_entry(ns, a.target) {
            // A tombstone is final, and a replayed record must not undo a newer one.
            if old.data.is_none() || old.at >= p.offset {
                return;
            }
        }
        let data = match a.change {
            amend::Change::Edit(d) => match RawValue::from_string(d.to_string()) {
                Ok(r) => Some(r),
                Err(_) => return,
            },
            amend::Change::Delete => None,
        };
        let entry = Entry {
            ch: p.channel.as_str().to_string(),
            at: p.offset,
            ts: p.timestamp / 1_000_000,
            data,
        };
        self.pending
            .lock()
            .amends
            .insert((ns.to_string(), a.target), entry);
    }

    /// Writes what was applied and the positions in one transaction.
    fn checkpoint(&self, positions: &Positions, force: bool) -> Result<(), ChatError> {
        let batch = {
            let mut pending = self.pending.lock();
            if !force && pending.amends.is_empty() && pending.markers.is_empty() {
                None
            } else {
                Some(Arc::new(std::mem::take(&mut *pending)))
            }
        };
        let Some(batch) = batch.or_else(|| force.then(|| Arc::new(Overlay::default()))) else {
            return Ok(());
        };
        *self.committing.lock() = batch.clone();
        let r = self.write(&batch, positions);
        if r.is_err() {
            // Put the changes back for the next try (newer ones win).
            let mut pending = self.pending.lock();
            for (k, v) in &batch.amends {
                pending.amends.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &batch.markers {
                let e = pending.markers.entry(k.clone()).or_insert(*v);
                *e = (*e).max(*v);
            }
        }
        *self.committing.lock() = Arc::new(Overlay::default());
        r
    }

    fn write(&self, batch: &Overlay, positions: &Positions) -> Result<(), ChatError> {
        let err = |op: &'static str| {
            let path = self.path.clone();
            move |e: &dyn std::fmt::Display| ChatError::Db {
                path: path.clone(),
                op,
                reason: e.to_string(),
            }
        };
        let mut tx = self.db.begin_write().map_err(|e| err("begin")(&e))?;
        tx.set_durability(Durability::Immediate);
        {
            let mut t = tx.open_table(AMENDS).map_err(|e| err("open table")(&e))?;
            for ((ns, off), e) in &batch.amends {
                let v = serde_json::to_vec(e).map_err(|e| err("encode")(&e))?;
                t.insert((ns.as_str(), *off), v.as_slice())
                    .map_err(|e| err("insert")(&e))?;
            }
            let mut m = tx.open_table(MARKS).map_err(|e| err("open table")(&e))?;
            for ((sub, ch), off) in &batch.markers {
                let old = m
                    .get((sub.as_str(), ch.as_str()))
                    .map_err(|e| err("read")(&e))?
                    .map(|v| v.value());
                if old.is_none_or(|o| o < *off) {
                    m.insert((sub.as_str(), ch.as_str()), *off)
                        .map_err(|e| err("insert")(&e))?;
                }
            }
            let mut p = tx
                .open_table(POSITIONS)
                .map_err(|e| err("open table")(&e))?;
            for (ns, next) in &positions.next {
                p.insert(ns.as_str(), *next)
                    .map_err(|e| err("insert")(&e))?;
            }
            let mut ep = tx.open_table(EPOCHS).map_err(|e| err("open table")(&e))?;
            for (ns, e) in &positions.epochs {
                ep.insert(ns.as_str(), e.0).map_err(|e| err("insert")(&e))?;
            }
        }
        tx.commit().map_err(|e| err("commit")(&e))
    }

    fn positions(&self) -> Result<Positions, ChatError> {
        let err = |op: &'static str| {
            let path = self.path.clone();
            move |e: &dyn std::fmt::Display| ChatError::Db {
                path: path.clone(),
                op,
                reason: e.to_string(),
            }
        };
        let tx = self.db.begin_read().map_err(|e| err("begin")(&e))?;
        let mut out = Positions::default();
        let p = tx
            .open_table(POSITIONS)
            .map_err(|e| err("open table")(&e))?;
        for row in p.iter().map_err(|e| err("read")(&e))? {
            let (k, v) = row.map_err(|e| err("read")(&e))?;
            out.next.insert(k.value().to_string(), v.value());
        }
        let ep = tx.open_table(EPOCHS).map_err(|e| err("open table")(&e))?;
        for row in ep.iter().map_err(|e| err("read")(&e))? {
            let (k, v) = row.map_err(|e| err("read")(&e))?;
            out.epochs.insert(k.value().to_string(), Epoch(v.value()));
        }
        Ok(out)
    }
}

impl Amendments for ChatState {
    fn get(&self, channel: &Channel, offset: Offset) -> Option<Amended> {
        self.amend_entry(channel.namespace(), offset)
            .filter(|e| e.ch == channel.as_str())
            .map(|e| e.amended())
    }
}

impl MarkerStore for ChatState {
    fn get(&self, sub: &str, channel: &Channel) -> Option<Offset> {
        self.marker(sub, channel.as_str())
    }

    fn list(&self, sub: &str) -> Vec<(Channel, Offset)> {
        let mut all: BTreeMap<String, Offset> = BTreeMap::new();
        let mut add = |ch: &str, off: Offset| {
            let e = all.entry(ch.to_string()).or_insert(off);
            *e = (*e).max(off);
        };
        if let Ok(tx) = self.db.begin_read() {
            if let Ok(t) = tx.open_table(MARKS) {
                // Keys are (sub, channel): the user's are one contiguous range.
                if let Ok(range) = t.range((sub, "")..) {
                    for (k, v) in range.flatten() {
                        let (s, ch) = k.value();
                        if s != sub {
                            break;
                        }
                        add(ch, v.value());
                    }
                }
            }
        }
        let committing = self.committing.lock().clone();
        for ((s, ch), off) in committing.markers.iter() {
            if s == sub {
                add(ch, *off);
            }
        }
        for ((s, ch), off) in self.pending.lock().markers.iter() {
            if s == sub {
                add(ch, *off);
            }
        }
        all.into_iter()
            .filter_map(|(ch, off)| Channel::parse(&ch).ok().map(|c| (c, off)))
            .collect()
    }

    fn noted(&self, sub: &str, channel: &Channel, offset: Offset) {
        self.note_marker(sub, channel.as_str(), offset);
    }
}

/// A marker record on `markers.<sub>`.
#[derive(Deserialize)]
struct MarkerRecord {
    channel: String,
    offset: Offset,
}

/// The projection the runner drives.
pub struct ChatProjection {
    state: Arc<ChatState>,
    /// The positions last written: moved positions are written even when nothing was applied
    /// (a restart then does not read again what only held other messages).
    written: Option<Positions>,
}

impl Projection for ChatProjection {
    fn name(&self) -> &str {
        "chat"
    }

    fn restore(&mut self) -> Result<Positions, ProjectionError> {
        self.state
            .positions()
            .map_err(|e| ProjectionError::state("chat", e))
    }

    fn apply(&mut self, _source: usize, p: &Publication) {
        if p.channel.namespace() == MARKERS {
            if let Ok(m) = serde_json::from_slice::<MarkerRecord>(&p.data) {
                self.state
                    .note_marker(p.channel.name(), &m.channel, m.offset);
            }
            return;
        }
        if let Some(a) = amend::parse(&p.data) {
            self.state.apply_amend(p, &a);
        }
    }

    fn derived(&mut self) -> Vec<Vec<tickwire_hub::PublishRequest>> {
        Vec::new()
    }

    fn checkpoint(&mut self, positions: &Positions) -> Result<(), ProjectionError> {
        let moved = self.written.as_ref() != Some(positions);
        self.state
            .checkpoint(positions, moved)
            .map_err(|e| ProjectionError::state("chat", e))?;
        self.written = Some(positions.clone());
        Ok(())
    }
}

/// The running chat projection.
pub struct ChatService {
    pub state: Arc<ChatState>,
    pub runner_stats: Arc<RunnerStats>,
    runner: Mutex<Option<RunnerHandle>>,
}

impl ChatService {
    /// Stops the projection after a last checkpoint.
    pub fn stop(&self) {
        let handle = self.runner.lock().take();
        if let Some(mut h) = handle {
            h.stop();
        }
    }
}

/// Starts the chat projection over the namespaces with edits and the `markers` namespace;
/// `None` when the server has neither.
pub fn start(hub: Arc<Hub>, data: &DataDir) -> Result<Option<Arc<ChatService>>, ProjectionError> {
    let mut sources: Vec<String> = hub
        .namespaces()
        .into_iter()
        .filter(|s| s.edits)
        .map(|s| s.name)
        .collect();
    if hub.namespace_spec(MARKERS).is_some() {
        sources.push(MARKERS.to_string());
    }
    if sources.is_empty() {
        return Ok(None);
    }
    let path = data.projection("chat").join("chat.redb");
    let state = Arc::new(ChatState::open(&path).map_err(|e| ProjectionError::state("chat", e))?);
    let handle = Runner::spawn(
        hub,
        ChatProjection {
            state: state.clone(),
            written: None,
        },
        RunnerConfig {
            sources,
            flush_interval: Duration::from_millis(100),
            checkpoint_interval: Duration::from_secs(1),
        },
    )?;
    Ok(Some(Arc::new(ChatService {
        state,
        runner_stats: handle.stats.clone(),
        runner: Mutex::new(Some(handle)),
    })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn publication(channel: &str, offset: Offset, data: &str) -> Publication {
        Publication {
            channel: Channel::parse(channel).unwrap(),
            offset,
            timestamp: offset * 1_000_000,
            msg_id: None,
            data: Bytes::from(data.to_string()),
        }
    }

    #[test]
    fn edits_and_tombstones_survive_a_checkpoint_and_a_tombstone_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.redb");
        let ch = Channel::parse("chat.a").unwrap();
        {
            let st = ChatState::open(&path).unwrap();
            let mut p = ChatProjection {
                state: Arc::new(st),
                written: None,
            };
            p.apply(
                0,
                &publication("chat.a", 5, r#"{"$edit":1,"data":{"t":"one"}}"#),
            );
            p.apply(
                0,
                &publication("chat.a", 6, r#"{"$edit":1,"data":{"t":"two"}}"#),
            );
            p.apply(0, &publication("chat.a", 7, r#"{"$delete":2}"#));
            p.apply(
                0,
                &publication("chat.a", 8, r#"{"$edit":2,"data":{"t":"late"}}"#),
            );
            p.apply(
                1,
                &publication("markers.42", 9, r#"{"channel":"chat.a","offset":6}"#),
            );
            p.apply(
                1,
                &publication("markers.42", 10, r#"{"channel":"chat.a","offset":3}"#),
            );
            let got = Amendments::get(p.state.as_ref(), &ch, 1).unwrap();
            assert_eq!(got.at, 6);
            let mut pos = Positions::default();
            pos.next.insert("chat".into(), 9);
            pos.next.insert("markers".into(), 11);
            p.checkpoint(&pos).unwrap();
        }
        let st = ChatState::open(&path).unwrap();
        assert_eq!(st.positions().unwrap().next.get("markers"), Some(&11));
        let e = Amendments::get(&st, &ch, 1).unwrap();
        assert_eq!(
            e.change,
            AmendedChange::Edited(Bytes::from_static(br#"{"t":"two"}"#))
        );
        assert_eq!(
            Amendments::get(&st, &ch, 2).unwrap().change,
            AmendedChange::Deleted
        );
        // Another channel's message with the same offset is not this one.
        assert!(Amendments::get(&st, &Channel::parse("chat.b").unwrap(), 1).is_none());
        assert_eq!(MarkerStore::get(&st, "42", &ch), Some(6));
        st.noted("42", &ch, 8);
        assert_eq!(MarkerStore::list(&st, "42"), vec![(ch.clone(), 8)]);
        assert!(MarkerStore::list(&st, "4").is_empty());
    }
}
