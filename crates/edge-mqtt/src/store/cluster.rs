//! Cluster mode's sessions: one key per client id in a JetStream KV bucket every node reads
//! (docs/cluster.md), so a client that reconnects to any node resumes where it left off.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io,
    sync::Arc,
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tickwire_stream::kv::{Kv, Revision};

use super::{hex, now_ms, StoredSession, TakenOver};

/// A session as stored in the cluster: KV keeps no modification time a reader can see, so the
/// write time travels with it (expiry of a session whose node died while it was connected
/// counts from there, as from a file's mtime).
#[derive(Serialize, Deserialize)]
pub(super) struct KvRecord {
    pub(super) saved_ms: u64,
    pub(super) session: StoredSession,
    /// The holder (cluster process) that saved it; absent in records of earlier versions,
    /// which a sweep leaves while they say connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) holder: Option<String>,
}

pub(super) struct KvSessions {
    kv: Arc<dyn Kv>,
    /// This process's holder name in the cluster (`KvProvider::holder`), kept in every record
    /// it saves, so a sweep can tell a session whose process is gone.
    holder: String,
    /// The revision this node wrote or claimed last per client id. Saves are compare-and-set
    /// against it, so a node whose client moved to another node (which claimed the key on
    /// load) learns it on its next save.
    revisions: Mutex<HashMap<String, Revision>>,
    /// The holders the last sweep that could list the live ones found gone. A session saved
    /// while connected is swept only when its holder was gone at two such sweeps in a row (an
    /// hour apart or more), so a live node whose liveness key lapsed for a moment is not taken
    /// for a dead one. In memory: a node restarted in between starts over, and any node that
    /// stays up an hour does it.
    gone_before: Mutex<HashSet<String>>,
}

impl KvSessions {
    pub(super) fn new(kv: Arc<dyn Kv>, holder: String) -> KvSessions {
        KvSessions {
            kv,
            holder,
            revisions: Mutex::default(),
            gone_before: Mutex::default(),
        }
    }

    /// `session` as this process's record, saved now.
    fn record(&self, session: StoredSession) -> io::Result<bytes::Bytes> {
        let rec = KvRecord {
            saved_ms: now_ms(),
            session,
            holder: Some(self.holder.clone()),
        };
        Ok(serde_json::to_vec(&rec).map_err(io::Error::other)?.into())
    }

    pub(super) fn load(&self, client_id: &str) -> io::Result<Option<StoredSession>> {
        let key = hex(client_id);
        let Some(entry) = self.kv.get(&key).map_err(io::Error::other)? else {
            return Ok(None);
        };
        let rec: KvRecord = match serde_json::from_slice(&entry.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(client = %client_id, error = %e, "unreadable MQTT session in the cluster KV dropped");
                self.kv.delete(&key).map_err(io::Error::other)?;
                return Ok(None);
            }
        };
        if rec.session.client_id != client_id {
            return Ok(None);
        }
        if rec.session.expired(now_ms(), rec.saved_ms) {
            self.kv.delete(&key).map_err(io::Error::other)?;
            self.revisions.lock().remove(&key);
            return Ok(None);
        }
        // Claim it: the same session under a new revision, so a node still serving an old
        // connection of this client fails its next save instead of overwriting ours. Saved as
        // this process's and connected as of now: a record that still named the process it
        // was claimed from (perhaps a crashed one) could be swept before this connection's
        // first save, as the session of a client whose node is gone.
        let claim = self.record(StoredSession {
            disconnected_at_ms: None,
            ..rec.session.clone()
        })?;
        match self
            .kv
            .update(&key, claim, entry.revision)
            .map_err(io::Error::other)?
        {
            Some(rev) => {
                self.revisions.lock().insert(key, rev);
                Ok(Some(rec.session))
            }
            // Written meanwhile by the node the client just left: read its newer state.
            None => self.load(client_id),
        }
    }

    /// Replaces the stored session; acknowledged once JetStream stored it (a quorum with
    /// replicas = 3). [`TakenOver`] when another node claimed it since this one did.
    pub(super) fn save(&self, session: &StoredSession) -> io::Result<()> {
        let json = self.record(session.clone())?;
        let key = hex(&session.client_id);
        let known = self.revisions.lock().get(&key).copied();
        let written = match known {
            Some(rev) => self.kv.update(&key, json, rev),
            None => self.kv.create(&key, json),
        }
        .map_err(io::Error::other)?;
        match written {
            Some(rev) => {
                self.revisions.lock().insert(key, rev);
                Ok(())
            }
            None => Err(io::Error::other(TakenOver)),
        }
    }

    pub(super) fn remove(&self, client_id: &str) -> io::Result<()> {
        let key = hex(client_id);
        self.revisions.lock().remove(&key);
        self.kv.delete(&key).map_err(io::Error::other)
    }

    /// [`super::Store::sweep`] over the bucket: every node sweeps all of it, and deleting an
    /// already deleted key is fine.
    pub(super) fn sweep(
        &self,
        live: impl Fn(&str) -> bool,
        holders_alive: impl FnOnce() -> Option<BTreeSet<String>>,
    ) -> io::Result<usize> {
        // What may go: (key, revision read, the holder whose life decides it).
        let mut doomed: Vec<(String, Revision, Option<String>)> = Vec::new();
        for key in self.kv.keys().map_err(io::Error::other)? {
            let Some(entry) = self.kv.get(&key).map_err(io::Error::other)? else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<KvRecord>(&entry.value) else {
                continue;
            };
            if live(&rec.session.client_id) || !rec.session.expired(now_ms(), rec.saved_ms) {
                continue;
            }
            if rec.session.disconnected_at_ms.is_some() {
                doomed.push((key, entry.revision, None));
            } else if let Some(h) = rec.holder.filter(|h| *h != self.holder) {
                // Saved while connected to another process, perhaps still its live client:
                // ended only if that process is gone (below). Deleting a live client's record
                // failed its node's next save, which ended the connection as taken over.
                doomed.push((key, entry.revision, Some(h)));
            }
        }
        // The live processes are read after the records, as presence does: a record was
        // written by a process alive when it wrote it, so that process is in this set unless
        // it has stopped since.
        let alive = doomed
            .iter()
            .any(|d| d.2.is_some())
            .then(holders_alive)
            .flatten();
        // Who is gone now becomes the next sweep's memory; not known this time, the last
        // sweep's still counts.
        let gone_before = {
            let mut memory = self.gone_before.lock();
            let gone_now = match &alive {
                Some(alive) => doomed
                    .iter()
                    .filter_map(|d| d.2.clone())
                    .filter(|h| !alive.contains(h))
                    .collect(),
                None => memory.clone(),
            };
            std::mem::replace(&mut *memory, gone_now)
        };
        let mut removed = 0;
        for (key, revision, holder) in doomed {
            let ended = match holder {
                None => true,
                Some(h) => alive
                    .as_ref()
                    .is_some_and(|alive| !alive.contains(&h) && gone_before.contains(&h)),
            };
            // Compare and set: a node that loaded (claimed) or saved it since the read above
            // keeps it.
            if ended
                && self
                    .kv
                    .delete_if(&key, revision)
                    .map_err(io::Error::other)?
            {
                self.revisions.lock().remove(&key);
                removed += 1;
            }
        }
        Ok(removed)
    }
}
