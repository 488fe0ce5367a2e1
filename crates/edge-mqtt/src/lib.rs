//! The MQTT 3.1.1 / 5 edge (docs/mqtt.md): a TCP listener and a WebSocket route (`/mqtt`) in
//! front of the gateway. The codec and the broker session state machine live in
//! `tickwire-mqtt` (no I/O); this crate only moves bytes and calls:
//!
//! - `driver`: one task per connection around `tickwire_mqtt::broker::BrokerSession`:
//!   CONNECT (identity through the gateway), packets in, publications to the hub, deliveries
//!   out, keep-alive and session saves; parked while quiet (`driver/park.rs`), when the task
//!   holds only the driver;
//! - `store`: persistent sessions in small durable files;
//! - `publish`: PUBLISH and Will through the gateway;
//! - `listener`: TCP accept loops (plain and TLS) and the WebSocket upgrade, all feeding
//!   `driver::run`.

mod driver;
mod listener;
mod publish;
mod store;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tickwire_gateway::{Edge, Gateway};
use tickwire_hub::Latch;
use tickwire_model::DataDir;

pub use listener::{bind_tcp, bind_tls, TcpEdge};

/// The edge's name (metrics and logs).
pub const MQTT: Edge = Edge("mqtt");

/// The MQTT edge of one server: its configuration, the gateway, and the broker-wide state
/// shared by the TCP listener and the WebSocket route.
pub struct MqttEdge {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) config: MqttConfig,
    pub(crate) broker: Arc<Broker>,
}

impl MqttEdge {
    pub fn new(gateway: Arc<Gateway>, config: MqttConfig, data: &DataDir) -> Arc<MqttEdge> {
        MqttEdge::with_sessions(gateway, config, data, None)
    }

    /// MQTT families for `/metrics` (Prometheus text).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let connected = self.broker.live.lock().len();
        let in_flight = self
            .broker
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0);
        let _ = writeln!(
            out,
            "# HELP tickwire_mqtt_sessions_connected MQTT client ids with a live connection on this node.\n# TYPE tickwire_mqtt_sessions_connected gauge\ntickwire_mqtt_sessions_connected {connected}"
        );
        let _ = writeln!(
            out,
            "# HELP tickwire_mqtt_in_flight Outgoing QoS 1/2 messages awaiting the client's acknowledgement.\n# TYPE tickwire_mqtt_in_flight gauge\ntickwire_mqtt_in_flight {in_flight}"
        );
    }

    /// With `cluster` (cluster mode: a KV bucket of the cluster, and this process's holder
    /// name there, `KvProvider::holder`), persistent sessions are kept there instead of in the
    /// data directory, so a client resumes on any node.
    pub fn with_sessions(
        gateway: Arc<Gateway>,
        config: MqttConfig,
        data: &DataDir,
        cluster: Option<(Arc<dyn tickwire_stream::kv::Kv>, String)>,
    ) -> Arc<MqttEdge> {
        Arc::new(MqttEdge {
            gateway,
            config,
            broker: Arc::new(Broker::new(data, cluster)),
        })
    }

    /// `GET /mqtt` (MQTT over WebSocket), to merge into the HTTP listener's routes.
    pub fn routes(self: &Arc<Self>) -> axum::Router {
        listener::routes(self.clone())
    }
}

/// `[mqtt]` in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// MQTT over TCP listen address (e.g. `127.0.0.1:1883`). Absent: no TCP listener, so the
    /// server never collides with a local mosquitto; MQTT over WebSocket (`/mqtt` on the HTTP
    /// port) is always available.
    pub listen: Option<SocketAddr>,
    /// MQTT over TLS listen address (e.g. `0.0.0.0:8883`); absent: off. Presents
    /// `tls_cert_file` when set, else the `[tls]` certificate.
    pub tls_listen: Option<SocketAddr>,
    /// A certificate for the MQTT TLS listener only (PEM chain); with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Largest MQTT packet accepted from a client, bytes (also sent as Maximum Packet Size).
    pub max_packet_bytes: usize,
    /// QoS 1/2 PUBLISH packets a client may have unacknowledged towards us (Receive Maximum).
    pub receive_maximum: u16,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Upper bound for a session's expiry, seconds (7 days by default, so sessions of clients
    /// that never come back do not pile up); 0 = no bound (3.1.1 persistent sessions never
    /// expire then).
    pub max_session_expiry_secs: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: None,
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            max_packet_bytes: 1024 * 1024,
            receive_maximum: 64,
            connect_timeout_secs: 10,
            max_session_expiry_secs: 7 * 86_400,
        }
    }
}

impl MqttConfig {
    /// The MQTT listener's own certificate files, if it has its own.
    pub fn tls_pair(&self) -> Result<Option<(&Path, &Path)>, tickwire_tls::TlsError> {
        tickwire_tls::pair(
            "mqtt",
            "tls_cert_file",
            &self.tls_cert_file,
            "tls_key_file",
            &self.tls_key_file,
        )
    }

    /// The largest packet accepted, never below 64 bytes (room for any control packet).
    pub(crate) fn max_packet(&self) -> usize {
        self.max_packet_bytes.max(64)
    }

    /// The broker session's settings.
    pub(crate) fn session(&self) -> tickwire_mqtt::broker::SessionConfig {
        tickwire_mqtt::broker::SessionConfig {
            receive_maximum: self.receive_maximum,
            topic_alias_maximum: TOPIC_ALIAS_MAXIMUM,
            max_packet: self.max_packet(),
            max_session_expiry_secs: self.max_session_expiry_secs,
        }
    }
}

/// Topic aliases a client may use towards us (MQTT 5).
const TOPIC_ALIAS_MAXIMUM: u16 = 32;

/// One live connection's claim on a client id: `takeover` tells it to leave, and
/// `lock` is held until it has saved its session, so the next owner loads the newest state.
struct Claim {
    serial: u64,
    /// Who holds it: a connection of another identity may not take it over.
    identity: Arc<str>,
    /// The latch of the id's newest claimer, whether it holds the id or still waits for it:
    /// the next claimer sets it. Each claimer puts its own here as it arrives, so one that
    /// is overtaken while it waits is told to leave as soon as it has the id (the newest
    /// connection wins). `None` until the first claimer's is in.
    takeover: Option<Arc<Latch>>,
    /// Wakes the holder's task when `takeover` is set: a parked connection waits for its
    /// hub session's wake-up only (edge-mqtt `driver/park.rs`).
    wake: Option<tickwire_hub::SessionCloser>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// Broker-wide state shared by the TCP listener and the WebSocket route of one server.
pub(crate) struct Broker {
    pub(crate) store: store::Store,
    /// Keyed by the connection's own client id string (shared, not copied).
    live: Mutex<HashMap<Arc<str>, Claim>>,
    serial: std::sync::atomic::AtomicU64,
    /// Outgoing QoS 1/2 messages awaiting the client's acknowledgement, every connection.
    pub(crate) in_flight: std::sync::atomic::AtomicI64,
}

/// A connection's hold on its client id.
pub(crate) struct Owner {
    pub(crate) serial: u64,
    pub(crate) takeover: Arc<Latch>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Broker {
    /// The broker of a server whose data directory is `data`; the TCP listener and the
    /// WebSocket route share it, and with it one registry of live client ids.
    pub(crate) fn new(
        data: &DataDir,
        cluster: Option<(Arc<dyn tickwire_stream::kv::Kv>, String)>,
    ) -> Broker {
        let store = match cluster {
            Some((kv, holder)) => store::Store::in_cluster(data.mqtt_sessions(), kv, holder),
            None => store::Store::new(data.mqtt_sessions()),
        };
        Broker {
            store,
            live: Mutex::new(HashMap::new()),
            in_flight: std::sync::atomic::AtomicI64::new(0),
            serial: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Takes over `client_id` for `identity`: an existing connection of the same identity is
    /// told to leave (Session taken over) and we wait until it has saved its session.
    /// `Err(true)` if it belongs to another identity (refused: never handed over), `Err(false)`
    /// if it does not let go in time.
    pub(crate) async fn claim(
        &self,
        client_id: &Arc<str>,
        identity: Arc<str>,
        wake: tickwire_hub::SessionCloser,
    ) -> Result<Owner, bool> {
        let takeover: Arc<Latch> = Arc::default();
        let lock = {
            let mut live = self.live.lock();
            let claim = live.entry(client_id.clone()).or_insert_with(|| Claim {
                serial: 0,
                identity: identity.clone(),
                takeover: None,
                wake: None,
                lock: Arc::new(tokio::sync::Mutex::new(())),
            });
            if claim.identity != identity {
                return Err(true);
            }
            if let Some(before) = claim.takeover.replace(takeover.clone()) {
                before.set();
            }
            if let Some(w) = &claim.wake {
                w.wake();
            }
            claim.lock.clone()
        };
        let guard = tokio::time::timeout(std::time::Duration::from_secs(10), lock.lock_owned())
            .await
            .map_err(|_| false)?;
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut live = self.live.lock();
        let claim = live.entry(client_id.clone()).or_insert_with(|| Claim {
            serial,
            identity: identity.clone(),
            takeover: Some(takeover.clone()),
            wake: None,
            lock: tokio::sync::OwnedMutexGuard::mutex(&guard).clone(),
        });
        claim.serial = serial;
        claim.identity = identity;
        // Overtaken while waiting: the newer claimer set this latch but woke the holder
        // before, so this connection is woken here, in case it parks before it looks.
        if takeover.is_set() {
            wake.wake();
        }
        claim.wake = Some(wake);
        Ok(Owner {
            serial,
            takeover,
            _guard: guard,
        })
    }

    /// Whether a connection here holds or is taking `client_id` (its stored session is in
    /// use, whatever its age: [`store::Store::sweep`]).
    pub(crate) fn is_live(&self, client_id: &str) -> bool {
        self.live.lock().contains_key(client_id)
    }

    /// Forgets the claim when nobody waits for it, so ids of gone clients do not pile up.
    pub(crate) fn release(&self, client_id: &str, owner: Owner) {
        let mut live = self.live.lock();
        if let Some(c) = live.get(client_id) {
            // The map's reference plus the guard inside `owner`: nobody else is waiting.
            if c.serial == owner.serial && Arc::strong_count(&c.lock) <= 2 {
                live.remove(client_id);
            }
        }
        drop(owner);
    }
}
