//! Cluster mode: the stream seam over NATS JetStream, so the hub, projections and edges run
//! unchanged on several nodes that share one replicated log.
//!
//! - One JetStream stream per namespace (`<prefix>_<namespace>`, subjects
//!   `<prefix>.<namespace>.>`, one subject per channel). Offsets are the stream's sequence
//!   numbers (minus one); the epoch is the stream's creation time, so a stream deleted and made
//!   again gets a new one on every node at once.
//! - Publishing: [`publish`] hands each item to JetStream in order and reports its offset once
//!   JetStream acknowledged it (with `replicas = 3`: stored on a quorum). `msg_id`s travel in
//!   `Nats-Msg-Id` and are deduplicated by the stream's duplicate window, across nodes.
//! - Reading: each node follows each namespace with **one** ordered consumer ([`tail`]) into
//!   an in-memory window of recent messages; the hub's dispatcher and projections read from it.
//!   Older reads (history, a client resuming from far back, a projection catching up) go to
//!   JetStream with batched direct gets, checked against the stream leader where a replica
//!   might lag ([`direct`]).
//! - State that follows its owner between nodes (FIX sequence numbers and leases, MQTT
//!   sessions) lives in JetStream KV buckets ([`kv`]).
//! - Namespaces listed in `[cluster] local` (derived data: candles, books) stay on each node's
//!   embedded log: every node computes them itself from the shared streams.
//!
//! The NATS client runs on a small runtime of its own, so blocking callers (the hub's threads,
//! projection threads) can wait for it from anywhere without starving the server's runtime.

mod codec;
mod config;
mod direct;
mod error;
pub mod kv;
mod publish;
mod stream;
mod tail;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::{connection::State, jetstream};
use parking_lot::Mutex;
use tickwire_model::NamespaceSpec;
use tickwire_stream::{embedded::Embedded, Backend, Opened, StreamError};

pub use config::{ClusterConfig, Keep, NamespaceCluster, Storage};
pub use error::ClusterError;

/// A connection to the NATS cluster, shared by every namespace of this node.
pub struct Cluster {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    client: async_nats::Client,
    js: jetstream::Context,
    config: ClusterConfig,
    node: String,
    holder: String,
}

impl Cluster {
    /// Connects to the NATS servers, waiting up to `connect_timeout_secs` for one to answer.
    /// Blocking.
    pub fn connect(config: ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // The client's I/O and this node's tails, acks and reads: small work per message,
            // kept off the server's runtime so its blocking callers cannot starve it.
            .worker_threads(2)
            .thread_name("tw-nats")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Config(format!("starting the NATS runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let node = if config.node.is_empty() {
            host_name()
        } else {
            config.node.clone()
        };
        // A restarted node is a new holder: a lease its previous process held is not its own.
        let holder = format!("{node}-{:08x}", random_u32());
        let servers = config.nats.join(",");
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("tickwire {node}"))
            // Reconnect for ever: a node that lost NATS rejoins by itself.
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(5));
        if let (Some(u), Some(p)) = (&config.user, &config.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &config.token {
            opts = opts.token(t.clone());
        }
        let urls = config.nats.clone();
        let deadline = Instant::now() + Duration::from_secs(config.connect_timeout_secs.max(1));
        let connected = run_on(&handle, Duration::MAX, async move {
            loop {
                let last = match opts.clone().connect(urls.clone()).await {
                    Ok(c) => return Ok(c),
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    return Err(last);
                }
                tracing::warn!(servers = %urls.join(","), error = %last, "waiting for the NATS servers");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let client = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(reason)) => {
                runtime.shutdown_background();
                return Err(ClusterError::Connect { servers, reason });
            }
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.ack_timeout_ms.max(100)))
            .build(client.clone());
        tracing::info!(%node, %servers, replicas = config.replicas, "cluster mode: connected to NATS");
        Ok(Arc::new(Cluster {
            runtime: Mutex::new(Some(runtime)),
            handle,
            client,
            js,
            config,
            node,
            holder,
        }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Why the NATS servers cannot be used right now, if they cannot.
    pub fn unreachable(&self) -> Option<String> {
        match self.client.connection_state() {
            State::Connected => None,
            _ => Some(format!(
                "the NATS servers ({}) are unreachable; publishes are refused until this node reconnects (it does so by itself)",
                self.config.nats.join(", ")
            )),
        }
    }

    /// Runs `fut` on the cluster's runtime and waits for it (from any thread that may block).
    fn run<F, T>(&self, what: &str, timeout: Duration, fut: F) -> Result<T, ClusterError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        run_on(&self.handle, timeout, fut).map_err(|e| match e {
            ClusterError::JetStream { reason, .. } => ClusterError::js(what, reason),
            other => other,
        })
    }

    /// The wait for one JetStream request made on a caller's behalf.
    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.ack_timeout_ms.max(100)) + Duration::from_secs(1)
    }

    /// The key-value seam over JetStream KV buckets.
    pub fn kv(self: &Arc<Self>) -> Arc<dyn tickwire_stream::kv::KvProvider> {
        Arc::new(kv::NatsKvProvider::new(self.clone()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // May run on a runtime thread (the server's shutdown): never block there.
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }
}

fn run_on<F, T>(
    handle: &tokio::runtime::Handle,
    timeout: Duration,
    fut: F,
) -> Result<T, ClusterError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let got = if timeout == Duration::MAX {
        rx.recv().ok()
    } else {
        rx.recv_timeout(timeout).ok()
    };
    got.ok_or_else(|| ClusterError::js("request", format!("no answer within {timeout:?}")))
}

/// The backend of a cluster node: shared namespaces in JetStream, `[cluster] local` ones in
/// the node's embedded log (whose data-directory lock it holds).
pub struct NatsBackend {
    cluster: Arc<Cluster>,
    local: Embedded,
}

impl NatsBackend {
    pub fn new(cluster: Arc<Cluster>, local: Embedded) -> NatsBackend {
        NatsBackend { cluster, local }
    }

    /// The cluster connection.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

impl Backend for NatsBackend {
    fn open(&self, spec: &NamespaceSpec) -> Result<Opened, StreamError> {
        if self.cluster.config.is_local(&spec.name) {
            return self.local.open(spec);
        }
        stream::open(&self.cluster, spec).map_err(|e| match e {
            ClusterError::Config(c) => StreamError::Config(c),
            other => StreamError::storage(&spec.name, other),
        })
    }
}

/// The host's name, for a node that was not given one.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tickwire".into())
}

/// 32 random bits without a dependency: std's per-process random hash keys over the clock.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(tickwire_model::clock::now_nanos());
    h.write_u32(std::process::id());
    h.finish() as u32
}
