//! The key-value seam over JetStream KV buckets (`<prefix>_<name>`, one value per key,
//! replicated like the streams). Reads go to the bucket's leader, not any replica: a node that
//! takes over a FIX session or an MQTT session must see the last write of the node before it.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    kv::{Config, CreateErrorKind, Store, UpdateErrorKind},
    stream::LastRawMessageErrorKind,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tickwire_stream::{
    kv::{Kv, KvEntry, KvProvider, Revision},
    StreamError,
};

use crate::{Cluster, ClusterError};

/// Opens KV buckets on the cluster.
pub struct NatsKvProvider {
    cluster: Arc<Cluster>,
}

impl NatsKvProvider {
    pub(crate) fn new(cluster: Arc<Cluster>) -> NatsKvProvider {
        NatsKvProvider { cluster }
    }
}

impl KvProvider for NatsKvProvider {
    fn bucket(&self, name: &str, ttl: Option<Duration>) -> Result<Arc<dyn Kv>, StreamError> {
        let bucket = format!("{}_{}", self.cluster.config.prefix, name);
        let js = self.cluster.js.clone();
        let config = Config {
            bucket: bucket.clone(),
            description: format!("Tickwire {name}"),
            history: 1,
            max_age: ttl.unwrap_or(Duration::ZERO),
            num_replicas: self.cluster.config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let what = format!("KV bucket {bucket}");
        // As for streams (stream::open): JetStream may still be electing the bucket's leader
        // when a cluster starts, and another node may be creating the same bucket at this
        // moment (a node started right after another exited at start on this: "stream name
        // already in use" or a timeout). Retried until `connect_timeout_secs`.
        let deadline = std::time::Instant::now()
            + Duration::from_secs(self.cluster.config.connect_timeout_secs.max(1));
        let store = loop {
            let (js, config, w) = (js.clone(), config.clone(), what.clone());
            let opened = self
                .cluster
                .run(&what, self.cluster.request_timeout() * 4, async move {
                    match js.get_key_value(&config.bucket).await {
                        Ok(s) => Ok(s),
                        Err(_) => js
                            .create_key_value(config)
                            .await
                            .map_err(|e| ClusterError::js(&w, e)),
                    }
                })
                .and_then(|r| r);
            match opened {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(%bucket, error = %e, "cannot open the KV bucket yet; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(StreamError::from(e)),
            }
        };
        Ok(Arc::new(NatsKv {
            cluster: self.cluster.clone(),
            bucket,
            store,
        }))
    }

    fn holder(&self) -> &str {
        &self.cluster.holder
    }
}

/// One bucket.
struct NatsKv {
    cluster: Arc<Cluster>,
    bucket: String,
    store: Store,
}

impl NatsKv {
    fn call<F, T>(&self, op: &str, f: impl FnOnce(Store) -> F) -> Result<T, StreamError>
    where
        F: std::future::Future<Output = Result<T, ClusterError>> + Send + 'static,
        T: Send + 'static,
    {
        let what = format!("{op} in KV bucket {}", self.bucket);
        self.cluster
            .run(&what, self.cluster.request_timeout(), f(self.store.clone()))
            .and_then(|r| r)
            .map_err(|e| StreamError::storage("", e))
    }
}

impl Kv for NatsKv {
    fn get(&self, key: &str) -> Result<Option<KvEntry>, StreamError> {
        let subject = format!("$KV.{}.{key}", self.bucket);
        self.call("get", move |store| async move {
            match store.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => {
                    let op = m
                        .headers
                        .get("KV-Operation")
                        .map(|v| v.as_str().to_string());
                    if matches!(op.as_deref(), Some("DEL") | Some("PURGE")) {
                        return Ok(None);
                    }
                    Ok(Some(KvEntry {
                        value: m.payload,
                        revision: m.sequence,
                    }))
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(ClusterError::js("get", e)),
            }
        })
    }

    fn create(&self, key: &str, value: Bytes) -> Result<Option<Revision>, StreamError> {
        let key = key.to_string();
        self.call("create", move |store| async move {
            match store.create(&key, value).await {
                Ok(r) => Ok(Some(r)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(ClusterError::js("create", e)),
            }
        })
    }

    fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Option<Revision>, StreamError> {
        let key = key.to_string();
        self.call("update", move |store| async move {
            match store.update(&key, value, expected).await {
                Ok(r) => Ok(Some(r)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(ClusterError::js("update", e)),
            }
        })
    }

    fn put(&self, key: &str, value: Bytes) -> Result<Revision, StreamError> {
        let key = key.to_string();
        self.call("put", move |store| async move {
            store
                .put(&key, value)
                .await
                .map_err(|e| ClusterError::js("put", e))
        })
    }

    fn delete(&self, key: &str) -> Result<(), StreamError> {
        let key = key.to_string();
        self.call("delete", move |store| async move {
            store
                .delete(&key)
                .await
                .map_err(|e| ClusterError::js("delete", e))
        })
    }

    fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StreamError> {
        let key = key.to_string();
        self.call("delete", move |store| async move {
            match store.delete_expect_revision(&key, Some(expected)).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(ClusterError::js("delete", e)),
            }
        })
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, KvEntry)>, StreamError> {
        // One ordered consumer over the newest message of each key under the prefix: one round
        // trip for the lot, where `keys` then `get` would make one per key.
        let subjects = format!("$KV.{}.", self.bucket);
        let filter = if prefix.is_empty() {
            format!("{subjects}>")
        } else {
            format!("{subjects}{prefix}.>")
        };
        let inbox = self.cluster.client.new_inbox();
        let mut out = self.call("scan", move |store| async move {
            let what = || format!("scan of {filter}");
            let consumer = store
                .stream
                .create_consumer(jetstream::consumer::push::OrderedConfig {
                    deliver_subject: inbox,
                    filter_subject: filter.clone(),
                    deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                    replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError::js(what(), e))?;
            let mut out = Vec::new();
            if consumer.cached_info().num_pending == 0 {
                return Ok(out);
            }
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| ClusterError::js(what(), e))?;
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| ClusterError::js(what(), e))?;
                let info = m.info().map_err(|e| ClusterError::js(what(), e))?;
                let (pending, seq) = (info.pending, info.stream_sequence);
                let deleted = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|v| matches!(v.as_str(), "DEL" | "PURGE"));
                if let (false, Some(key)) = (deleted, m.subject.strip_prefix(subjects.as_str())) {
                    out.push((
                        key.to_string(),
                        KvEntry {
                            value: m.payload.clone(),
                            revision: seq,
                        },
                    ));
                }
                if pending == 0 {
                    break;
                }
            }
            Ok(out)
        })?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn keys(&self) -> Result<Vec<String>, StreamError> {
        self.call("keys", move |store| async move {
            let keys = store
                .keys()
                .await
                .map_err(|e| ClusterError::js("keys", e))?;
            keys.try_collect::<Vec<String>>()
                .await
                .map_err(|e| ClusterError::js("keys", e))
        })
    }
}
