//! The MQTT 3.1.1 / 5 edge (docs/mqtt.md): TCP listener and WebSocket route (`/mqtt`) in front
//! of the hub. The codec (tickwire-mqtt) knows the wire; this module knows what an MQTT
//! session means for Tickwire channels:
//!
//! - `topic`: topic names and filters ↔ channels and patterns;
//! - `store`: persistent sessions (subscriptions and log positions) in small durable files;
//! - `session`: one task per connection, the broker rules the codec leaves to us;
//! - `listener`: TCP accept loop and the WebSocket upgrade, both feeding `session::run`.

mod listener;
mod publish;
mod session;
mod store;
mod topic;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use listener::{bind_tcp, upgrade, TcpEdge};

/// `[mqtt]` in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// MQTT over TCP listen address (e.g. `127.0.0.1:1883`). Absent: no TCP listener, so the
    /// server never collides with a local mosquitto; MQTT over WebSocket (`/mqtt` on the HTTP
    /// port) is always available.
    pub listen: Option<SocketAddr>,
    /// Largest MQTT packet accepted from a client, bytes (also sent as Maximum Packet Size).
    pub max_packet_bytes: usize,
    /// QoS 1/2 PUBLISH packets a client may have unacknowledged towards us (Receive Maximum).
    pub receive_maximum: u16,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Upper bound for a session's expiry, seconds; 0 = no bound (3.1.1 persistent sessions
    /// never expire then).
    pub max_session_expiry_secs: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: None,
            max_packet_bytes: 1024 * 1024,
            receive_maximum: 64,
            connect_timeout_secs: 10,
            max_session_expiry_secs: 0,
        }
    }
}

impl MqttConfig {
    /// The largest packet accepted, never below 64 bytes (room for any control packet).
    pub(crate) fn max_packet(&self) -> usize {
        self.max_packet_bytes.max(64)
    }

    /// A requested session expiry bounded by `max_session_expiry_secs` (0 = no bound).
    pub(crate) fn cap_session_expiry(&self, requested: u32) -> u32 {
        match self.max_session_expiry_secs {
            0 => requested,
            cap => requested.min(cap),
        }
    }
}

/// One live connection's claim on a client id: cancelling `takeover` tells it to leave, and
/// `lock` is held until it has saved its session, so the next owner loads the newest state.
struct Claim {
    serial: u64,
    takeover: CancellationToken,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// Broker-wide state shared by the TCP listener and the WebSocket route of one server.
pub(crate) struct Broker {
    pub(crate) store: store::Store,
    live: Mutex<HashMap<String, Claim>>,
    serial: std::sync::atomic::AtomicU64,
}

/// A connection's hold on its client id.
pub(crate) struct Owner {
    pub(crate) serial: u64,
    pub(crate) takeover: CancellationToken,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Broker {
    /// The broker of a server whose data directory is `data`; it lives in [`crate::AppState`], so the
    /// TCP listener and the WebSocket route share one registry of live client ids.
    pub(crate) fn new(data: &std::path::Path) -> Broker {
        Broker {
            store: store::Store::new(data.join("mqtt-sessions")),
            live: Mutex::new(HashMap::new()),
            serial: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Takes over `client_id`: an existing connection is told to leave (Session taken over)
    /// and we wait until it has saved its session. `None` if it does not let go in time.
    pub(crate) async fn claim(&self, client_id: &str) -> Option<Owner> {
        let lock = {
            let mut live = self.live.lock();
            let claim = live.entry(client_id.to_string()).or_insert_with(|| Claim {
                serial: 0,
                takeover: CancellationToken::new(),
                lock: Arc::new(tokio::sync::Mutex::new(())),
            });
            claim.takeover.cancel();
            claim.lock.clone()
        };
        let guard = tokio::time::timeout(std::time::Duration::from_secs(10), lock.lock_owned())
            .await
            .ok()?;
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let takeover = CancellationToken::new();
        let mut live = self.live.lock();
        let claim = live.entry(client_id.to_string()).or_insert_with(|| Claim {
            serial,
            takeover: takeover.clone(),
            lock: tokio::sync::OwnedMutexGuard::mutex(&guard).clone(),
        });
        claim.serial = serial;
        claim.takeover = takeover.clone();
        Some(Owner {
            serial,
            takeover,
            _guard: guard,
        })
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
