use bytes::Bytes;

use crate::Channel;

/// Position of a message in its namespace's log. Monotonic per channel; not contiguous per
/// channel, because a namespace's channels share one log.
pub type Offset = u64;

/// One message as stored and delivered. `data` is the JSON text exactly as accepted, so it is
/// never re-serialised on the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub channel: Channel,
    pub offset: Offset,
    /// Unix time in nanoseconds, stamped by the server when the message was appended.
    pub timestamp: u64,
    /// The publisher's idempotency key, if it gave one.
    pub msg_id: Option<String>,
    pub data: Bytes,
}
