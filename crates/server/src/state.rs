use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use tickwire_hub::{CloseReason, Hub, SessionCloser};
use tokio::sync::Semaphore;

use crate::{metrics::Metrics, Config};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent WebSocket + SSE connections.
    pub connections: Arc<Semaphore>,
    pub ready: Arc<AtomicBool>,
    sessions: Arc<Mutex<HashMap<u64, SessionCloser>>>,
    next_session: Arc<AtomicU64>,
    /// The MQTT broker state (live client ids, stored sessions), shared by the TCP listener and
    /// the `/mqtt` WebSocket route.
    pub(crate) mqtt: Arc<crate::mqtt::Broker>,
}

impl AppState {
    pub fn new(hub: Arc<Hub>, config: Config) -> AppState {
        AppState {
            hub,
            mqtt: Arc::new(crate::mqtt::Broker::new(&config.data)),
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            next_session: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Whether `key` may publish anywhere. With no keys configured, everyone may.
    pub fn is_publisher(&self, key: Option<&str>) -> bool {
        self.config.api_keys.is_empty()
            || key.is_some_and(|k| self.config.api_keys.iter().any(|c| c == k))
    }

    /// Registers a live session so shutdown can close it; the guard unregisters on drop.
    pub fn track(&self, closer: SessionCloser) -> SessionGuard {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(id, closer);
        SessionGuard {
            id,
            sessions: self.sessions.clone(),
        }
    }

    /// Closes every live session (graceful drain).
    pub fn close_all(&self, reason: CloseReason) {
        for c in self.sessions.lock().values() {
            c.close(reason.clone());
        }
    }

    pub fn live_sessions(&self) -> usize {
        self.sessions.lock().len()
    }
}

pub struct SessionGuard {
    id: u64,
    sessions: Arc<Mutex<HashMap<u64, SessionCloser>>>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}
