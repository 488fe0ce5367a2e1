//! Cluster mode: an initiator session runs on exactly one node at a time.
//!
//! Two FIX connections for one session would both send with the same MsgSeqNums, and the
//! provider would reject one or, worse, both would corrupt its view of the session. So every
//! node configured with the session competes for a lease, a key in a JetStream KV bucket whose
//! keys expire when not rewritten for `lease_ttl_ms`:
//!
//! - acquire: `create` (succeeds only if the key is absent, deleted or expired);
//! - renew: `update` with the revision we wrote last (compare and set), every third of the TTL;
//! - a holder that cannot renew (another node took it, or NATS is out of reach) drops its
//!   connection at half the TTL, before the key can expire and another node acquire it;
//! - release: delete on shutdown, so another node takes over at once instead of after the TTL.
//!
//! The sequence numbers live next to the lease ([`KvSeqStore`]), written with compare and set
//! too: a holder that somehow kept running after losing its lease fails its next save and
//! stops sending, rather than overwriting the numbers of the node that took over.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tickwire_fix::{SeqNums, SeqStore};
use tickwire_stream::kv::{hex_key, Kv, KvProvider, Revision};
use tokio_util::sync::CancellationToken;

use crate::FixEdgeError;

/// Bucket of initiator leases (keys expire after the lease TTL).
const LEASE_BUCKET: &str = "fix_leases";
/// Bucket of initiator sequence numbers (no expiry: they must outlive any node).
const SEQ_BUCKET: &str = "fix_seqnums";

/// The two buckets the initiators of this node share.
#[derive(Clone)]
pub(crate) struct LeaseBuckets {
    leases: Arc<dyn Kv>,
    seqs: Arc<dyn Kv>,
    holder: String,
    pub ttl: Duration,
}

impl LeaseBuckets {
    /// Opens (creating) the buckets. Blocking.
    pub fn open(kv: &dyn KvProvider, ttl: Duration) -> Result<LeaseBuckets, FixEdgeError> {
        let err = |e: tickwire_stream::StreamError| {
            FixEdgeError::Config(format!(
                "fix: opening the lease buckets in the cluster: {e}"
            ))
        };
        Ok(LeaseBuckets {
            leases: kv.bucket(LEASE_BUCKET, Some(ttl)).map_err(err)?,
            seqs: kv.bucket(SEQ_BUCKET, None).map_err(err)?,
            holder: kv.holder().to_string(),
            ttl,
        })
    }

    /// The key of a session: both CompIDs, so two initiators of one session on different nodes
    /// meet at the same key whatever their local names.
    pub fn key(sender: &str, target: &str) -> String {
        hex_key(&format!("{sender}\u{1}{target}"))
    }

    /// Tries once to take the lease; `Ok(None)` when another holder has it (named in the
    /// returned string for the status page).
    pub async fn try_acquire(&self, key: &str) -> Result<Result<Lease, String>, String> {
        let (kv, key2, holder) = (self.leases.clone(), key.to_string(), self.holder.clone());
        let got = tokio::task::spawn_blocking(move || {
            match kv.create(&key2, Bytes::from(holder.clone())) {
                Ok(Some(rev)) => Ok(Ok(rev)),
                Ok(None) => {
                    let other = kv
                        .get(&key2)
                        .ok()
                        .flatten()
                        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
                        .unwrap_or_else(|| "another node".into());
                    Ok(Err(other))
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(got.map(|revision| Lease {
            buckets: self.clone(),
            key: key.to_string(),
            revision,
            renewed: Instant::now(),
        }))
    }

    /// The session's stored sequence numbers, for a new holder. Blocking.
    pub fn seq_store(&self, key: &str, lost: CancellationToken) -> Result<KvSeqStore, String> {
        let entry = self.seqs.get(key).map_err(|e| e.to_string())?;
        let (seqs, revision) = match entry {
            Some(e) => (decode_seqs(&e.value)?, Some(e.revision)),
            None => (SeqNums::default(), None),
        };
        Ok(KvSeqStore {
            kv: self.seqs.clone(),
            key: key.to_string(),
            seqs,
            revision,
            lost,
        })
    }
}

/// A held lease.
pub(crate) struct Lease {
    buckets: LeaseBuckets,
    key: String,
    revision: Revision,
    renewed: Instant,
}

impl Lease {
    /// Renews the lease every third of its TTL until it is lost (`lost` is cancelled then) or
    /// `stop` is cancelled (then the lease is released). Returns once either happened.
    pub async fn keep(mut self, stop: CancellationToken, lost: CancellationToken) {
        let ttl = self.buckets.ttl;
        // Give up early enough that the key cannot have expired while we still send.
        let give_up = ttl / 2;
        let every = (ttl / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = lost.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let (kv, key, holder, rev) = (
                self.buckets.leases.clone(),
                self.key.clone(),
                self.buckets.holder.clone(),
                self.revision,
            );
            // Bounded: a renewal that hangs past the give-up point counts as failed.
            let left = give_up.saturating_sub(self.renewed.elapsed());
            let r = tokio::time::timeout(
                left.max(Duration::from_millis(10)),
                tokio::task::spawn_blocking(move || kv.update(&key, Bytes::from(holder), rev)),
            )
            .await;
            match r {
                Ok(Ok(Ok(Some(rev)))) => {
                    self.revision = rev;
                    self.renewed = Instant::now();
                }
                Ok(Ok(Ok(None))) => {
                    tracing::warn!(key = %self.key, "fix: initiator lease taken by another node; dropping the session here");
                    lost.cancel();
                    return;
                }
                other => {
                    let why = match other {
                        Ok(Ok(Err(e))) => e.to_string(),
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    if self.renewed.elapsed() >= give_up {
                        tracing::warn!(key = %self.key, "fix: cannot renew the initiator lease ({why}); dropping the session before it expires");
                        lost.cancel();
                        return;
                    }
                    tracing::debug!(key = %self.key, "fix: lease renewal failed ({why}); retrying");
                }
            }
        }
        // Shutdown: hand the session over now rather than after the TTL. Only our own
        // revision is deleted (an update to an empty value would not free `create`).
        let (kv, key, rev) = (self.buckets.leases.clone(), self.key.clone(), self.revision);
        let _ = tokio::task::spawn_blocking(move || {
            if kv.get(&key).ok().flatten().map(|e| e.revision) == Some(rev) {
                let _ = kv.delete(&key);
            }
        })
        .await;
    }
}

/// Sequence numbers of an initiator session in the cluster's KV, written with compare and set.
pub(crate) struct KvSeqStore {
    kv: Arc<dyn Kv>,
    key: String,
    seqs: SeqNums,
    /// The revision we wrote (or read) last; `None` before the session's first save ever.
    revision: Option<Revision>,
    /// Cancelled when a save finds another writer: this node no longer owns the session.
    lost: CancellationToken,
}

fn decode_seqs(v: &[u8]) -> Result<SeqNums, String> {
    let text = std::str::from_utf8(v).map_err(|_| "stored FIX sequence numbers are not text")?;
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(next_sender)), Some(Ok(next_target))) => Ok(SeqNums {
            next_sender,
            next_target,
        }),
        _ => Err(format!(
            "stored FIX sequence numbers {text:?} are malformed"
        )),
    }
}

fn store_error(key: &str, context: &'static str, e: impl ToString) -> tickwire_fix::Error {
    tickwire_fix::Error::Io {
        path: PathBuf::from(format!("cluster KV {SEQ_BUCKET}/{key}")),
        context,
        source: std::io::Error::other(e.to_string()),
    }
}

/// Runs a blocking KV call from the session's (async) thread. The session saves its numbers
/// synchronously before it sends what depends on them; on the multi-threaded runtime the
/// worker hands its other tasks off while it waits for JetStream.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl SeqStore for KvSeqStore {
    fn load(&mut self) -> tickwire_fix::Result<SeqNums> {
        Ok(self.seqs)
    }

    fn save(&mut self, seqs: SeqNums) -> tickwire_fix::Result<()> {
        if self.lost.is_cancelled() {
            return Err(store_error(
                &self.key,
                "saving",
                "the session's lease was lost",
            ));
        }
        let value = Bytes::from(format!("{} {}", seqs.next_sender, seqs.next_target));
        let (kv, key, revision) = (&self.kv, &self.key, self.revision);
        let r = blocking(|| match revision {
            None => kv.create(key, value),
            Some(rev) => kv.update(key, value, rev),
        });
        match r {
            Ok(Some(rev)) => {
                self.revision = Some(rev);
                self.seqs = seqs;
                Ok(())
            }
            Ok(None) => {
                tracing::warn!(key = %self.key, "fix: another node wrote this session's sequence numbers; stopping it here");
                self.lost.cancel();
                Err(store_error(
                    &self.key,
                    "saving",
                    "another node took this session over",
                ))
            }
            Err(e) => Err(store_error(&self.key, "saving", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tickwire_stream::kv::MemoryKvProvider;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_at_a_time_and_sequence_numbers_follow_the_lease() {
        let a = MemoryKvProvider::new("a");
        let b = a.other("b");
        let ttl = Duration::from_millis(300);
        let la = LeaseBuckets::open(&a, ttl).unwrap();
        let lb = LeaseBuckets::open(&b, ttl).unwrap();
        let key = LeaseBuckets::key("TW", "PROV");
        let lease = la.try_acquire(&key).await.unwrap().unwrap();
        assert_eq!(lb.try_acquire(&key).await.unwrap().err().unwrap(), "a");

        let lost_a = CancellationToken::new();
        let mut sa = la.seq_store(&key, lost_a.clone()).unwrap();
        assert_eq!(sa.load().unwrap(), SeqNums::default());
        sa.save(SeqNums {
            next_sender: 7,
            next_target: 5,
        })
        .unwrap();

        // Renewed past several TTLs: b still cannot take it.
        let stop_a = CancellationToken::new();
        let keeper = tokio::spawn(lease.keep(stop_a.clone(), lost_a.clone()));
        tokio::time::sleep(ttl * 2).await;
        assert!(lb.try_acquire(&key).await.unwrap().is_err());
        assert!(!lost_a.is_cancelled());

        // a stops renewing (as if killed): the key expires and b takes over with a's numbers.
        keeper.abort();
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        let _lease_b = lb.try_acquire(&key).await.unwrap().unwrap();
        let lost_b = CancellationToken::new();
        let mut sb = lb.seq_store(&key, lost_b.clone()).unwrap();
        assert_eq!(
            sb.load().unwrap(),
            SeqNums {
                next_sender: 7,
                next_target: 5
            }
        );
        sb.save(SeqNums {
            next_sender: 8,
            next_target: 5,
        })
        .unwrap();
        // a, still running somehow, cannot overwrite b's numbers and learns it lost.
        assert!(sa
            .save(SeqNums {
                next_sender: 8,
                next_target: 6
            })
            .is_err());
        assert!(lost_a.is_cancelled());
        assert!(!lost_b.is_cancelled());
        assert_eq!(lb.seq_store(&key, lost_b).unwrap().seqs.next_sender, 8);
    }

    #[tokio::test]
    async fn a_released_lease_is_free_at_once() {
        let a = MemoryKvProvider::new("a");
        let b = a.other("b");
        let ttl = Duration::from_secs(60);
        let la = LeaseBuckets::open(&a, ttl).unwrap();
        let lb = LeaseBuckets::open(&b, ttl).unwrap();
        let key = LeaseBuckets::key("TW", "PROV");
        let lease = la.try_acquire(&key).await.unwrap().unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        lease.keep(stop, CancellationToken::new()).await;
        assert!(lb.try_acquire(&key).await.unwrap().is_ok());
    }
}
