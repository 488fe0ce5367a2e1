//! Persistent MQTT sessions: per client id, its subscriptions and, per stream channel, the log
//! offset to resume from. Messages themselves are never copied here: they are in the log, and
//! a reconnecting client is replayed from these positions, so a restart loses nothing that was
//! acknowledged and memory holds nothing for absent clients.
//!
//! One small JSON file per client id, replaced atomically (write a temporary file, fsync,
//! rename, fsync the directory): a crash leaves either the old or the new version, never half.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use tickwire_model::clock;
pub(crate) use tickwire_mqtt::broker::{StoredSession, MAX_CLIENT_ID};

pub(crate) fn now_ms() -> u64 {
    clock::now_millis()
}

fn modified_ms(path: &Path) -> u64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map(clock::millis_of)
        .unwrap_or(0)
}

/// The directory of session files.
pub(crate) struct Store {
    dir: PathBuf,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    fn path(&self, client_id: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex(client_id)))
    }

    /// The stored session of `client_id`, unless there is none or it expired (then it is
    /// deleted). An unreadable file is moved aside and reported, never silently reused.
    pub fn load(&self, client_id: &str) -> io::Result<Option<StoredSession>> {
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
        fs::create_dir_all(&self.dir)?;
        let path = self.path(&session.client_id);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(session).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    pub fn remove(&self, client_id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(client_id)) {
            Ok(()) => File::open(&self.dir)?.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes every expired session (run at start and periodically); returns how many.
    pub fn sweep(&self) -> io::Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let now = now_ms();
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let Ok(s) = serde_json::from_slice::<StoredSession>(&bytes) else {
                continue;
            };
            if s.expired(now, modified_ms(&path)) {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_mqtt::broker::StoredSub;

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
        assert_eq!(store.sweep().unwrap(), 0);
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
