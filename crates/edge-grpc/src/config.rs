//! The `[grpc]` section of the configuration (docs/grpc.md).

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

/// `[grpc]`: the gRPC listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address (e.g. `127.0.0.1:7701`). Absent: no gRPC listener.
    pub listen: Option<SocketAddr>,
    /// An HTTP/2 PING is sent on a connection idle this long, milliseconds (0: never).
    pub keepalive_interval_ms: u64,
    /// A connection whose PING is not answered within this long is closed, milliseconds.
    pub keepalive_timeout_ms: u64,
    /// Largest message either way, bytes (a Publish batch, a History page).
    pub max_message_bytes: usize,
    /// Concurrent calls per connection (HTTP/2 streams).
    pub max_concurrent_streams: u32,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: None,
            // Load balancers and NATs drop idle connections after minutes; a PING every 30 s
            // keeps a quiet subscription alive and finds a dead peer within 40 s.
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            // As large as the WebSocket frame limit: a batch that fits one fits the other.
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 1024,
        }
    }
}

impl GrpcConfig {
    pub(crate) fn keepalive_interval(&self) -> Option<Duration> {
        (self.keepalive_interval_ms > 0).then(|| Duration::from_millis(self.keepalive_interval_ms))
    }

    pub(crate) fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.max(1))
    }
}
