//! A key-value seam for state that must follow its owner from node to node in cluster mode:
//! FIX sequence numbers and session leases, MQTT persistent sessions. The cluster backend
//! implements it over JetStream KV buckets (replicated like the streams); a single server keeps
//! that state in files and needs none of this. [`MemoryKv`] is the reference implementation,
//! for tests.
//!
//! Calls block: they are made from threads that may block (the MQTT store runs on the
//! blocking pool; the FIX session saves its numbers synchronously, a round trip to the cluster).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::StreamError;

/// A key's version: every write gives it a new, higher one.
pub type Revision = u64;

/// A stored value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Bytes,
    pub revision: Revision,
}

/// One bucket of keys. Keys use letters, digits and `-/_=.` (callers encode anything else,
/// e.g. as hex), not starting or ending with `.`.
pub trait Kv: Send + Sync {
    /// The current value, if the key exists.
    fn get(&self, key: &str) -> Result<Option<KvEntry>, StreamError>;
    /// Writes the key only if it does not exist (or was deleted or expired); `None` if it does.
    fn create(&self, key: &str, value: Bytes) -> Result<Option<Revision>, StreamError>;
    /// Writes the key only if its revision is still `expected`; `None` if another write came
    /// first (compare and set: how a lease holder renews, and how a session owner notices that
    /// another node took its session over).
    fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Option<Revision>, StreamError>;
    /// Writes the key unconditionally.
    fn put(&self, key: &str, value: Bytes) -> Result<Revision, StreamError>;
    /// Removes the key (absent is fine).
    fn delete(&self, key: &str) -> Result<(), StreamError>;
    /// Removes the key only if its revision is still `expected`; `false` if another write came
    /// first (how the last holder of a shared entry removes it without losing a write made
    /// meanwhile).
    fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StreamError>;
    /// Every key that exists now.
    fn keys(&self) -> Result<Vec<String>, StreamError>;
    /// Every key under `prefix` (starting `<prefix>.`; every key when `prefix` is empty) with
    /// its value, sorted by key. Implementations over a server answer
    /// in one round trip; this default reads key by key.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, KvEntry)>, StreamError> {
        let mut out = Vec::new();
        for k in self.keys()? {
            if !under(&k, prefix) {
                continue;
            }
            if let Some(e) = self.get(&k)? {
                out.push((k, e));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Whether `key` is under `prefix` (`<prefix>.…`); everything is under "".
pub fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Opens buckets.
pub trait KvProvider: Send + Sync {
    /// Opens (creating) a bucket. With `ttl`, a key not written for that long disappears (a
    /// lease its holder stopped renewing).
    fn bucket(&self, name: &str, ttl: Option<Duration>) -> Result<Arc<dyn Kv>, StreamError>;
    /// This process's name in the cluster, unique while it runs (what a lease records as its
    /// holder).
    fn holder(&self) -> &str;
}

/// Encodes any string as a key: lowercase hex of its bytes, so every client id or CompID maps
/// to exactly one key and back.
pub fn hex_key(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The string [`hex_key`] encoded, if `key` is one.
pub fn unhex_key(key: &str) -> Option<String> {
    if !key.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..key.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(key.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// An in-memory [`Kv`] (and [`KvProvider`]) with the same semantics, TTL included: for tests.
#[derive(Default)]
pub struct MemoryKv {
    ttl: Option<Duration>,
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    next: Revision,
    keys: HashMap<String, (KvEntry, Instant)>,
}

impl MemoryKv {
    pub fn new(ttl: Option<Duration>) -> MemoryKv {
        MemoryKv {
            ttl,
            inner: Mutex::new(MemoryInner::default()),
        }
    }

    fn live<'a>(&self, inner: &'a mut MemoryInner, key: &str) -> Option<&'a KvEntry> {
        if let (Some(ttl), Some((_, written))) = (self.ttl, inner.keys.get(key)) {
            if written.elapsed() >= ttl {
                inner.keys.remove(key);
            }
        }
        inner.keys.get(key).map(|(e, _)| e)
    }

    fn write(inner: &mut MemoryInner, key: &str, value: Bytes) -> Revision {
        inner.next += 1;
        let revision = inner.next;
        inner.keys.insert(
            key.to_string(),
            (KvEntry { value, revision }, Instant::now()),
        );
        revision
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<KvEntry>, StreamError> {
        let mut inner = self.inner.lock();
        Ok(self.live(&mut inner, key).cloned())
    }

    fn create(&self, key: &str, value: Bytes) -> Result<Option<Revision>, StreamError> {
        let mut inner = self.inner.lock();
        if self.live(&mut inner, key).is_some() {
            return Ok(None);
        }
        Ok(Some(MemoryKv::write(&mut inner, key, value)))
    }

    fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Option<Revision>, StreamError> {
        let mut inner = self.inner.lock();
        if self.live(&mut inner, key).map(|e| e.revision) != Some(expected) {
            return Ok(None);
        }
        Ok(Some(MemoryKv::write(&mut inner, key, value)))
    }

    fn put(&self, key: &str, value: Bytes) -> Result<Revision, StreamError> {
        Ok(MemoryKv::write(&mut self.inner.lock(), key, value))
    }

    fn delete(&self, key: &str) -> Result<(), StreamError> {
        self.inner.lock().keys.remove(key);
        Ok(())
    }

    fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StreamError> {
        let mut inner = self.inner.lock();
        if self.live(&mut inner, key).map(|e| e.revision) != Some(expected) {
            return Ok(false);
        }
        inner.keys.remove(key);
        Ok(true)
    }

    fn keys(&self) -> Result<Vec<String>, StreamError> {
        let mut inner = self.inner.lock();
        let all: Vec<String> = inner.keys.keys().cloned().collect();
        let mut v: Vec<String> = all
            .into_iter()
            .filter(|k| self.live(&mut inner, k).is_some())
            .collect();
        v.sort();
        Ok(v)
    }
}

/// Buckets of [`MemoryKv`], shared by every "node" that holds the same provider: tests of
/// leases and session hand-over between nodes in one process.
pub struct MemoryKvProvider {
    holder: String,
    buckets: Arc<Mutex<HashMap<String, Arc<MemoryKv>>>>,
}

impl MemoryKvProvider {
    pub fn new(holder: &str) -> MemoryKvProvider {
        MemoryKvProvider {
            holder: holder.to_string(),
            buckets: Arc::default(),
        }
    }

    /// Another node's view of the same buckets.
    pub fn other(&self, holder: &str) -> MemoryKvProvider {
        MemoryKvProvider {
            holder: holder.to_string(),
            buckets: self.buckets.clone(),
        }
    }
}

impl KvProvider for MemoryKvProvider {
    fn bucket(&self, name: &str, ttl: Option<Duration>) -> Result<Arc<dyn Kv>, StreamError> {
        let b = self
            .buckets
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(MemoryKv::new(ttl)))
            .clone();
        Ok(b)
    }

    fn holder(&self) -> &str {
        &self.holder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_update_and_expiry_follow_compare_and_set() {
        let kv = MemoryKv::new(Some(Duration::from_millis(50)));
        let r1 = kv
            .create("lease", Bytes::from_static(b"a"))
            .unwrap()
            .unwrap();
        assert_eq!(kv.create("lease", Bytes::from_static(b"b")).unwrap(), None);
        let r2 = kv
            .update("lease", Bytes::from_static(b"a"), r1)
            .unwrap()
            .unwrap();
        assert!(r2 > r1);
        assert_eq!(
            kv.update("lease", Bytes::from_static(b"b"), r1).unwrap(),
            None,
            "a stale revision loses"
        );
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(kv.get("lease").unwrap(), None, "not renewed: gone");
        assert!(kv
            .create("lease", Bytes::from_static(b"b"))
            .unwrap()
            .is_some());
        assert_eq!(kv.keys().unwrap(), vec!["lease".to_string()]);
        kv.delete("lease").unwrap();
        assert!(kv.keys().unwrap().is_empty());
        let r = kv.put("a.b", Bytes::from_static(b"1")).unwrap();
        kv.put("a.c", Bytes::from_static(b"2")).unwrap();
        kv.put("ab.c", Bytes::from_static(b"3")).unwrap();
        kv.put("a", Bytes::from_static(b"4")).unwrap();
        let under_a: Vec<String> = kv.scan("a").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            under_a,
            ["a.b", "a.c"],
            "neither `ab.c` nor `a` is under `a`"
        );
        assert_eq!(kv.scan("").unwrap().len(), 4);
        assert!(
            !kv.delete_if("a.b", r + 100).unwrap(),
            "a stale revision loses"
        );
        assert!(kv.delete_if("a.b", r).unwrap());
        assert_eq!(kv.get("a.b").unwrap(), None);
        assert_eq!(hex_key("a/b"), "612f62");
        assert_eq!(unhex_key("612f62").as_deref(), Some("a/b"));
        assert_eq!(unhex_key(&hex_key("chat.ünï")).as_deref(), Some("chat.ünï"));
        assert_eq!(unhex_key("6"), None);
        assert_eq!(unhex_key("zz"), None);
    }
}
