//! Persistent MQTT sessions: per client id, its subscriptions and, per stream channel, the log
//! offset to resume from. Messages themselves are never copied here: they are in the log, and
//! a reconnecting client is replayed from these positions, so a restart loses nothing that was
//! acknowledged and memory holds nothing for absent clients.
//!
//! One small JSON file per client id, replaced atomically (write a temporary file, fsync,
//! rename, fsync the directory): a crash leaves either the old or the new version, never half.
//!
//! In cluster mode the sessions live in a JetStream KV bucket instead (one key per client id,
//! replicated like the streams), and offsets are the shared streams' own: a client that
//! reconnects to any node resumes where it left off on the one before.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;
use tickwire_model::clock;
pub(crate) use tickwire_mqtt::broker::{StoredSession, MAX_CLIENT_ID};
use tickwire_stream::kv::Kv;

use self::cluster::KvSessions;

mod cluster;

/// What a save returns when another node took the session over since this node loaded it:
/// the connection here must end (MQTT 5: Session taken over) and not overwrite that node's
/// newer state.
pub(crate) fn taken_over(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TakenOver>())
}

#[derive(Debug)]
struct TakenOver;

impl std::fmt::Display for TakenOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another node took this MQTT session over")
    }
}

impl std::error::Error for TakenOver {}

pub(crate) fn now_ms() -> u64 {
    clock::now_millis()
}

fn modified_ms(path: &Path) -> u64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map(clock::millis_of)
        .unwrap_or(0)
}

/// Where persistent sessions are kept: files of this node, or the cluster's KV.
pub(crate) struct Store {
    dir: PathBuf,
    /// Cluster mode: the sessions are in the cluster's KV bucket instead (the directory and
    /// the fields below are not used).
    cluster: Option<KvSessions>,
    stems: Mutex<Option<std::collections::HashSet<String>>>,
    /// File mode: held by the sweep from its second look at an expired file to its removal,
    /// and by `save` around its rename. A session saved after the sweep's first look (its
    /// client reconnected, loaded the expired file and saved anew) is seen by the second look
    /// and kept; without it the sweep deleted the new file, and took its id from `stems`.
    replacing: Mutex<()>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        let stems = session_stems(&dir);
        Store {
            dir,
            cluster: None,
            stems: Mutex::new(stems),
            replacing: Mutex::new(()),
        }
    }

    /// Sessions in a cluster KV bucket (the directory is not used), saved by the cluster
    /// process named `holder`.
    pub fn in_cluster(dir: PathBuf, kv: Arc<dyn Kv>, holder: String) -> Store {
        Store {
            dir,
            cluster: Some(KvSessions::new(kv, holder)),
            stems: Mutex::new(None),
            replacing: Mutex::new(()),
        }
    }

    /// Whether `client_id` may have a stored session; `false` means it has none, and
    /// neither loading nor removing it needs the disk.
    pub fn may_have(&self, client_id: &str) -> bool {
        self.stems
            .lock()
            .as_ref()
            .is_none_or(|s| s.contains(&hex(client_id)))
    }

    /// Updates the set of stored ids, where it is kept.
    fn note(&self, stem: &str, stored: bool) {
        if let Some(s) = self.stems.lock().as_mut() {
            if stored {
                s.insert(stem.to_owned());
            } else {
                s.remove(stem);
            }
        }
    }

    fn path(&self, client_id: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex(client_id)))
    }

    /// The stored session of `client_id`, unless there is none or it expired (then it is
    /// deleted). An unreadable file is moved aside and reported, never silently reused.
    pub fn load(&self, client_id: &str) -> io::Result<Option<StoredSession>> {
        if let Some(c) = &self.cluster {
            return c.load(client_id);
        }
        let path = self.path(client_id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let session: StoredSession = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                let aside = path.with_extension("corrupt");
                tracing::warn!(file = %path.display(), error = %e, "unreadable MQTT session file moved aside");
                fs::rename(&path, aside)?;
                self.note(&hex(client_id), false);
                return Ok(None);
            }
        };
        if session.client_id != client_id {
            return Ok(None);
        }
        if session.expired(now_ms(), modified_ms(&path)) {
            self.remove(client_id)?;
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Replaces the stored session atomically and durably.
    pub fn save(&self, session: &StoredSession) -> io::Result<()> {
        if let Some(c) = &self.cluster {
            return c.save(session);
        }
        tickwire_model::durable_dir::create_dir_durable(&self.dir)?;
        let path = self.path(&session.client_id);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(session).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        {
            // The temporary file is no session file (the sweep and the set read `*.json`):
            // the session exists from the rename on, and is known just before it, with no
            // sweep's removal in between.
            let _replacing = self.replacing.lock();
            self.note(&hex(&session.client_id), true);
            fs::rename(&tmp, &path)?;
        }
        File::open(&self.dir)?.sync_all()
    }

    pub fn remove(&self, client_id: &str) -> io::Result<()> {
        if let Some(c) = &self.cluster {
            return c.remove(client_id);
        }
        match fs::remove_file(self.path(client_id)) {
            Ok(()) => {
                self.note(&hex(client_id), false);
                File::open(&self.dir)?.sync_all()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.note(&hex(client_id), false);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes every expired session; returns how many. It runs as the server starts serving,
    /// beside the first connections (after a restart, while its clients reconnect), and
    /// every hour after (`MqttEdge::spawn_sweeper`).
    ///
    /// The session of a client id that `live` says is connected here is never expired,
    /// whatever its file's age: one saved while connected counts its expiry from the file's
    /// last write, which is right after a crash (the connection ended then, at the latest)
    /// and wrong while the client is still connected and has changed nothing since. The
    /// sweep deleted such a file, and a crash after that lost the session.
    ///
    /// In cluster mode it also deletes the sessions saved while connected by a cluster
    /// process that is gone: `holders_alive` lists the processes alive now (`None`: not
    /// known, and such sessions stay). Without it, the session of a client connected to a node
    /// that crashed stayed in the bucket until that client id connected again, which a client
    /// that never returns never does. Such a record is deleted once two sweeps in a row that
    /// could list the live processes found its process gone, and its expiry has passed,
    /// counted from its last save as for a file (the crash that ended the connection came at
    /// or after it).
    pub fn sweep(
        &self,
        live: impl Fn(&str) -> bool,
        holders_alive: impl FnOnce() -> Option<BTreeSet<String>>,
    ) -> io::Result<usize> {
        if let Some(c) = &self.cluster {
            return c.sweep(live, holders_alive);
        }
        let mut removed = 0;
        // An entry that cannot be read is skipped: the next sweep tries again.
        for (path, stem) in session_files(&self.dir)?.flatten() {
            // The first look needs no lock: most files are not expired, and saves go on.
            if expired_file(&path, &live) && self.remove_if_expired(&path, &stem, &live)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The sweep's second look at a file its first look found expired, and its removal if it
    /// still is: whether it was removed. Under `replacing`, so no save lands in between.
    fn remove_if_expired(
        &self,
        path: &Path,
        stem: &str,
        live: impl Fn(&str) -> bool,
    ) -> io::Result<bool> {
        let _replacing = self.replacing.lock();
        if !expired_file(path, live) {
            return Ok(false);
        }
        match fs::remove_file(path) {
            Ok(()) => {}
            // Removed by a load of the same expired session meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        self.note(stem, false);
        Ok(true)
    }
}

/// Whether the session file at `path` holds an expired session of a client id that is not
/// connected here; an unreadable file is not (the sweep leaves it, and a load moves it aside).
fn expired_file(path: &Path, live: impl Fn(&str) -> bool) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let Ok(s) = serde_json::from_slice::<StoredSession>(&bytes) else {
        return false;
    };
    !live(&s.client_id) && s.expired(now_ms(), modified_ms(path))
}

/// The session files in `dir` (`<hex client id>.json`), each with its stem; none if `dir`
/// does not exist yet. An entry that cannot be read is an `Err` item, for the caller to skip
/// (the sweep) or to stop at (the set of stored ids, which must miss none).
fn session_files(dir: &Path) -> io::Result<impl Iterator<Item = io::Result<(PathBuf, String)>>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => Some(e),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(entries.into_iter().flatten().filter_map(|entry| {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => return Some(Err(e)),
        };
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            return None;
        }
        let stem = path.file_stem()?.to_str()?.to_owned();
        Some(Ok((path, stem)))
    }))
}

/// The stems of the session files in `dir`, read once as the server starts, before any
/// connection is accepted; `None` if it cannot be listed, even half way (then every
/// connection reads the disk, as before this set existed).
fn session_stems(dir: &Path) -> Option<std::collections::HashSet<String>> {
    let listed = session_files(dir).and_then(|files| {
        files
            .map(|file| file.map(|(_, stem)| stem))
            .collect::<io::Result<_>>()
    });
    match listed {
        Ok(stems) => Some(stems),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list the MQTT session directory; every connection will look for a stored session");
            None
        }
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::{cluster::KvRecord, *};
    use tickwire_mqtt::broker::StoredSub;

    /// A node's store over the cluster's (in-memory) KV, saving as its provider's holder.
    fn node_store(p: &tickwire_stream::kv::MemoryKvProvider, dir: &Path) -> Store {
        use tickwire_stream::kv::KvProvider;
        let holder = p.holder().to_string();
        Store::in_cluster(dir.join(&holder), p.bucket("mqtt", None).unwrap(), holder)
    }

    #[test]
    fn save_load_replace_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("s"));
        assert_eq!(store.load("a/b c").unwrap(), None);
        let mut s = StoredSession {
            client_id: "a/b c".into(),
            expiry_secs: u32::MAX,
            subs: vec![StoredSub {
                filter: "chat/#".into(),
                qos: 1,
            }],
            ..Default::default()
        };
        s.positions.insert("chat.lobby".into(), 42);
        store.save(&s).unwrap();
        assert_eq!(store.load("a/b c").unwrap(), Some(s.clone()));
        s.positions.insert("chat.lobby".into(), 43);
        store.save(&s).unwrap();
        assert_eq!(
            store.load("a/b c").unwrap().unwrap().positions["chat.lobby"],
            43
        );
        // Expired one second after a disconnect 10 s ago.
        s.expiry_secs = 1;
        s.disconnected_at_ms = Some(now_ms() - 10_000);
        store.save(&s).unwrap();
        assert_eq!(store.load("a/b c").unwrap(), None);
        assert_eq!(store.sweep(|_| false, || None).unwrap(), 0);
    }

    #[test]
    fn cluster_sessions_are_shared_by_every_node_and_expire() {
        use tickwire_stream::kv::{KvProvider, MemoryKvProvider};
        let a = MemoryKvProvider::new("a");
        let b = a.other("b");
        let dir = tempfile::tempdir().unwrap();
        let (sa, sb) = (node_store(&a, dir.path()), node_store(&b, dir.path()));
        let mut s = StoredSession {
            client_id: "dev/1".into(),
            expiry_secs: 3600,
            ..Default::default()
        };
        s.positions.insert("chat.lobby".into(), 7);
        sa.save(&s).unwrap();
        sa.save(&s).unwrap();
        assert_eq!(
            sb.load("dev/1").unwrap(),
            Some(s.clone()),
            "node b sees a's save"
        );
        assert!(!dir.path().join("a").exists(), "nothing written locally");
        assert!(sb.may_have("never/seen"), "other nodes store sessions too");
        // b loaded (claimed) it: a, still serving an old connection, must not overwrite it.
        s.positions.insert("chat.lobby".into(), 9);
        let e = sa.save(&s).unwrap_err();
        assert!(taken_over(&e), "{e}");
        sb.save(&s).unwrap();
        assert_eq!(sa.load("dev/1").unwrap(), Some(s.clone()));
        // Saved while connected, long ago: perhaps another node's live client, so the sweep
        // leaves it (a load, when the client id connects, expires it).
        s.expiry_secs = 1;
        // A record of an earlier version: no holder.
        let old = KvRecord {
            saved_ms: now_ms() - 10_000,
            session: s.clone(),
            holder: None,
        };
        let kv = a.bucket("mqtt", None).unwrap();
        let rev = kv.get("6465762f31").unwrap().unwrap().revision;
        kv.update("6465762f31", serde_json::to_vec(&old).unwrap().into(), rev)
            .unwrap()
            .unwrap();
        assert_eq!(sb.sweep(|_| false, || None).unwrap(), 0);
        assert_eq!(sb.load("dev/1").unwrap(), None, "expired on load");
        s.disconnected_at_ms = Some(now_ms() - 10_000);
        sa.remove("dev/1").unwrap();
        sa.save(&s).unwrap();
        assert_eq!(sb.sweep(|_| false, || None).unwrap(), 1);
        assert_eq!(sb.load("dev/1").unwrap(), None);
        sa.remove("dev/1").unwrap();
        sa.save(&s).unwrap();
        assert_eq!(sa.load("dev/1").unwrap(), None, "expired on load");
    }

    #[test]
    fn a_session_saved_while_connected_to_a_node_gone_at_two_sweeps_is_swept() {
        use tickwire_stream::kv::{KvProvider, MemoryKvProvider};
        let a = MemoryKvProvider::new("a");
        let b = a.other("b");
        let dir = tempfile::tempdir().unwrap();
        let (sa, sb) = (node_store(&a, dir.path()), node_store(&b, dir.path()));
        // A client connected to node a (never disconnected: a crashed), with a one-second
        // expiry, last saved 10 s ago.
        let s = StoredSession {
            client_id: "dev/9".into(),
            expiry_secs: 1,
            ..Default::default()
        };
        sa.save(&s).unwrap();
        let kv = a.bucket("mqtt", None).unwrap();
        let key = hex("dev/9");
        let entry = kv.get(&key).unwrap().unwrap();
        let mut rec: KvRecord = serde_json::from_slice(&entry.value).unwrap();
        assert_eq!(rec.holder.as_deref(), Some("a"), "saved with its holder");
        rec.saved_ms -= 10_000;
        kv.update(
            &key,
            serde_json::to_vec(&rec).unwrap().into(),
            entry.revision,
        )
        .unwrap()
        .unwrap();
        let alive = |names: &[&str]| -> Option<BTreeSet<String>> {
            Some(names.iter().map(|n| n.to_string()).collect())
        };
        let sweep = |st: &Store, names: Option<&[&str]>| {
            st.sweep(|_| false, || names.and_then(alive)).unwrap()
        };
        // a alive: kept, however often b sweeps.
        assert_eq!(sweep(&sb, Some(&["a", "b"])), 0);
        assert_eq!(sweep(&sb, Some(&["a", "b"])), 0);
        // Who is alive not known: kept.
        assert_eq!(sweep(&sb, None), 0);
        // a gone at one sweep, then back (its key lapsed for a moment): kept.
        assert_eq!(sweep(&sb, Some(&["b"])), 0);
        assert_eq!(sweep(&sb, Some(&["a", "b"])), 0);
        // Gone at one sweep, then not known, then gone again: two sweeps in a row that saw it
        // gone, so swept; until then a's own sweeps never judge its records by liveness.
        assert_eq!(sweep(&sb, Some(&["b"])), 0);
        assert_eq!(sweep(&sa, Some(&[])), 0);
        assert_eq!(sweep(&sa, Some(&[])), 0);
        assert_eq!(sweep(&sb, None), 0);
        assert_eq!(sweep(&sb, Some(&["b"])), 1);
        assert_eq!(kv.get(&key).unwrap(), None, "swept");
    }

    #[test]
    fn a_session_claimed_from_a_gone_node_is_the_claimers_and_kept() {
        use tickwire_stream::kv::{KvProvider, MemoryKvProvider};
        let a = MemoryKvProvider::new("a");
        let (b, c) = (a.other("b"), a.other("c"));
        let dir = tempfile::tempdir().unwrap();
        let st = |p: &MemoryKvProvider| node_store(p, dir.path());
        let (sa, sb, sc) = (st(&a), st(&b), st(&c));
        let kv = a.bucket("mqtt", None).unwrap();
        // Two clients connected to a, which then crashed: dev/7 saved long ago, dev/8 saved
        // 1.5 s ago with a 2 s expiry.
        let backdate = |id: &str, ms: u64, expiry_secs: u32| {
            sa.save(&StoredSession {
                client_id: id.into(),
                expiry_secs,
                ..Default::default()
            })
            .unwrap();
            let e = kv.get(&hex(id)).unwrap().unwrap();
            let mut rec: KvRecord = serde_json::from_slice(&e.value).unwrap();
            rec.saved_ms -= ms;
            kv.update(
                &hex(id),
                serde_json::to_vec(&rec).unwrap().into(),
                e.revision,
            )
            .unwrap()
            .unwrap();
        };
        backdate("dev/7", 10_000, 1);
        backdate("dev/8", 1_500, 2);
        let b_and_c = || Some(["b", "c"].iter().map(|n| n.to_string()).collect());
        // c finds a gone once (for dev/7).
        assert_eq!(sc.sweep(|_| false, b_and_c).unwrap(), 0);
        // dev/8 reconnects to b before its expiry: b claims it, as b's and connected now.
        assert!(sb.load("dev/8").unwrap().is_some());
        let rec: KvRecord =
            serde_json::from_slice(&kv.get(&hex("dev/8")).unwrap().unwrap().value).unwrap();
        assert_eq!(rec.holder.as_deref(), Some("b"));
        // Past dev/8's expiry counted from a's last save: c's second sweep takes dev/7 (a
        // gone twice) and keeps dev/8, b's live client. Before, the claim kept a's name and
        // save time, and dev/8 went with dev/7.
        std::thread::sleep(std::time::Duration::from_millis(700));
        assert_eq!(sc.sweep(|_| false, b_and_c).unwrap(), 1);
        assert!(kv.get(&hex("dev/7")).unwrap().is_none());
        assert!(
            kv.get(&hex("dev/8")).unwrap().is_some(),
            "b's client keeps its session"
        );
    }

    #[test]
    fn the_ids_that_may_have_a_session_are_a_superset_of_those_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = Store::new(path.clone());
        assert!(!store.may_have("dev/1"), "a new directory holds nothing");
        let mut s = StoredSession {
            client_id: "dev/1".into(),
            expiry_secs: u32::MAX,
            ..Default::default()
        };
        store.save(&s).unwrap();
        assert!(store.may_have("dev/1"));
        assert!(!store.may_have("dev/2"));
        // A restart finds it on disk.
        let again = Store::new(path.clone());
        assert!(again.may_have("dev/1"));
        assert_eq!(again.load("dev/1").unwrap(), Some(s.clone()));
        again.remove("dev/1").unwrap();
        assert!(!again.may_have("dev/1"));
        // Expired, found by load or by the sweep: gone from the set with its file.
        s.expiry_secs = 1;
        s.disconnected_at_ms = Some(now_ms() - 10_000);
        again.save(&s).unwrap();
        assert_eq!(again.load("dev/1").unwrap(), None);
        assert!(!again.may_have("dev/1"));
        again.save(&s).unwrap();
        assert_eq!(again.sweep(|_| false, || None).unwrap(), 1);
        assert!(!again.may_have("dev/1"));
        // Unreadable: moved aside, no longer a session.
        again.save(&s).unwrap();
        fs::write(again.path("dev/1"), b"{not json").unwrap();
        assert_eq!(again.load("dev/1").unwrap(), None);
        assert!(!again.may_have("dev/1"));
    }

    /// Sets the file's last write `secs` seconds back.
    fn age(path: &Path, secs: u64) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn the_sweep_keeps_a_connected_clients_session_and_one_saved_after_its_first_look() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("s"));
        let path = store.path("dev/1");
        // Saved while connected, and nothing changed since for longer than its expiry: by
        // the file's age it is expired, but its client is still connected.
        let s = StoredSession {
            client_id: "dev/1".into(),
            expiry_secs: 1,
            ..Default::default()
        };
        store.save(&s).unwrap();
        age(&path, 10);
        assert_eq!(store.sweep(|id| id == "dev/1", || None).unwrap(), 0);
        assert!(path.exists() && store.may_have("dev/1"));
        // Its client gone, it is expired.
        assert_eq!(store.sweep(|_| false, || None).unwrap(), 1);
        assert!(!path.exists() && !store.may_have("dev/1"));

        // The sweep's first look finds it expired; the client reconnects and saves anew
        // before the second look, which keeps the new file and its place in the set.
        store.save(&s).unwrap();
        age(&path, 10);
        assert!(expired_file(&path, |_| false));
        store.save(&s).unwrap();
        assert!(!store
            .remove_if_expired(&path, &hex("dev/1"), |_| false)
            .unwrap());
        assert_eq!(store.load("dev/1").unwrap(), Some(s.clone()));
        assert!(store.may_have("dev/1"));
        // Still expired at the second look: removed, and out of the set.
        age(&path, 10);
        assert!(store
            .remove_if_expired(&path, &hex("dev/1"), |_| false)
            .unwrap());
        assert!(!path.exists() && !store.may_have("dev/1"));
    }

    #[test]
    fn a_directory_that_cannot_be_listed_hides_no_session() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: listing it fails.
        let path = dir.path().join("s");
        fs::write(&path, b"").unwrap();
        let store = Store::new(path);
        assert!(store.may_have("anyone"));
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf());
        fs::write(store.path("x"), b"{not json").unwrap();
        assert_eq!(store.load("x").unwrap(), None);
        assert!(dir.path().join("78.corrupt").exists());
    }
}
