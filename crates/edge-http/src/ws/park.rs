//! Parking a quiet WebSocket connection (see the module above): what a parked connection
//! keeps, how a turn of serving ends and what wakes a parked one. How long a connection is
//! quiet before it is parked is `tickwire_gateway::park`, shared with the MQTT edge.

use std::time::Duration;

use tickwire_gateway::{park, Connection};

use super::upgrade::Lean;

/// What a parked connection keeps: who it is and its deadlines. Everything else (the
/// WebSocket layer and its read buffer, the command window, the outbox, the serving loop's
/// own state) is made again when it is needed.
pub(super) struct Idle {
    pub(super) conn: Box<Connection>,
    pub(super) binary: bool,
    pub(super) token_at: Option<tokio::time::Instant>,
    pub(super) grace_at: Option<tokio::time::Instant>,
    pub(super) ping_at: tokio::time::Instant,
    /// The quiet period before the next park, in ms (0: never served yet). Two bytes, in
    /// what was padding.
    pub(super) park_after_ms: u16,
}

impl Idle {
    /// After a wake-up: a connection woken sooner than its quiet period after parking waits
    /// twice as long before the next park; one that stayed parked for eight times it goes
    /// back to the base period (`tickwire_gateway::park`).
    pub(super) fn adapt(&mut self, parked_for: Duration) {
        self.park_after_ms = park::after_wake(self.park_after_ms, parked_for);
    }
}

/// How a turn of serving ended.
pub(super) enum Served {
    /// The connection is over (closed by either side, or failed).
    Ended,
    /// It was quiet for its period (`tickwire_gateway::park`) with nothing held for the
    /// client: the raw socket and what the connection keeps while parked.
    Parked(Lean, Idle),
}

/// What ended a parked wait.
pub(super) enum Wake {
    /// Serve again; `deliver`: the hub's wake-up was taken by the wait, so deliveries are
    /// drained first, before waiting for the next.
    Resume { deliver: bool },
    /// The client closed the socket, or it failed.
    Gone,
}
