//! What a persistent MQTT session keeps between connections (and restarts): its
//! subscriptions and, per stream channel, the offset to resume from. Messages are never kept
//! here: they are in the stream, and a reconnecting client is replayed from these positions.
//! The broker's driver stores this (a small file per client id); the format is serde JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest client id a persistent session may have (the driver's file name is its hex form
/// and must stay under 255 bytes).
pub const MAX_CLIENT_ID: usize = 120;

/// One MQTT subscription as the client made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSub {
    pub filter: String,
    /// Granted QoS (0, 1, 2).
    pub qos: u8,
}

/// Everything a persistent session needs to continue after a disconnect or a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    pub client_id: String,
    /// The identity that owns it (`user:42`, `key:feed`); another may not take it over.
    /// Absent in files from before identities (any principal may then resume them once, and
    /// becomes their owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Seconds the session outlives a disconnect; `u32::MAX` never expires.
    pub expiry_secs: u32,
    /// Unix milliseconds of the last disconnect; `None` while connected (or after a crash
    /// while connected, when expiry counts from the file's last write).
    pub disconnected_at_ms: Option<u64>,
    pub subs: Vec<StoredSub>,
    /// Stream channel → offset of the first message not yet acknowledged.
    pub positions: BTreeMap<String, u64>,
    /// Namespace → offset from which channels that appeared while away are replayed (pattern
    /// subscriptions with a fixed namespace).
    pub marks: BTreeMap<String, u64>,
    /// Incoming QoS 2 packet ids acknowledged with PUBREC and awaiting PUBREL: a re-sent
    /// PUBLISH with one of these is not stored again.
    pub qos2_awaiting_rel: Vec<u16>,
    /// Stream channels whose acknowledged offsets are not contiguous (a QoS 2 message
    /// completed while an older one is still in flight): the offsets at or above `positions`
    /// that must not be sent again. Absent when every channel's acks are contiguous, so
    /// sessions without QoS 1/2 in flight keep the v1 file form.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acked_ahead: BTreeMap<String, Vec<u64>>,
    /// Outgoing QoS 2 messages sent and not acknowledged with PUBREC: resent on resume with
    /// DUP and the same packet id, so the client can tell them from new messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qos2_out_unreceived: Vec<StoredInflight>,
    /// Outgoing QoS 2 packet ids released (PUBREL sent) and awaiting PUBCOMP: the PUBREL is
    /// resent on resume [MQTT-4.4.0-1].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qos2_out_awaiting_comp: Vec<u16>,
}

/// An outgoing message in flight: its packet id and where it is in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInflight {
    pub packet_id: u16,
    pub channel: String,
    pub offset: u64,
}

impl StoredSession {
    /// True when the session outlived its expiry at `now_ms` (`modified_ms`: when it was last
    /// written, for a session whose disconnect time is unknown).
    pub fn expired(&self, now_ms: u64, modified_ms: u64) -> bool {
        if self.expiry_secs == u32::MAX {
            return false;
        }
        let since = self.disconnected_at_ms.unwrap_or(modified_ms);
        now_ms.saturating_sub(since) > u64::from(self.expiry_secs) * 1000
    }
}
