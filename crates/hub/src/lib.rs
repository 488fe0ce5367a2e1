//! The hub: every publication passes through here on its way from an ingest edge to the
//! delivery edges.
//!
//! - Each namespace has one log and one writer thread. The writer drains whatever requests are
//!   waiting into one batch (group commit), appends it, fsyncs per policy, answers the
//!   publishers, then dispatches to channel nodes. One writer per namespace makes offsets,
//!   idempotency and per-channel order trivially consistent.
//! - A channel node holds the newest message (state class) or a ring of recent messages
//!   (stream class), and its subscribers.
//! - A session (one client connection) holds a conflation map for state channels and a cursor
//!   per stream channel. Dispatch never copies a message into a per-client queue: it overwrites
//!   a map slot or flags a cursor, so a slow client costs memory bounded by its subscription
//!   count, and a client that falls further behind than the ring is disconnected with its
//!   resume offsets.
//!
//! The hub knows no wire format; edges cache their encoding of a message in [`Message`].

mod config;
mod error;
mod feed;
mod hub;
mod latch;
mod message;
pub mod metrics;
mod node;
mod session;
mod shared;
mod writer;
pub use writer::BatchTiming;

pub use config::{FsyncPolicy, HubConfig};
pub use error::HubError;
pub use feed::{FeedBatch, FeedReader};
pub use hub::{
    Ack, Acks, Checked, History, Hub, HubStats, NamespaceTiming, PublishRequest, Recent, MAX_LAST,
    RECENT_MAX_SCAN,
};
pub use latch::Latch;
pub use message::{Format, Message};
pub use node::ChannelStats;
pub use session::{CloseReason, Delivery, Session, SessionCloser, SubscribeInfo};
pub use tickwire_model::{
    Channel, Class, Epoch, NamespaceSpec, Offset, Pattern, Publication, StreamPos,
};
pub use tickwire_stream::{
    embedded::lock_data_dir, RecoveryStats, StorageStats, Stream, StreamError,
};

/// Lowers the calling thread's CPU priority (nice 10) for work that can wait: on a busy machine
/// the scheduler then runs the threads clients are waiting on first. Linux nice values are per
/// thread. Best effort: without permission, or elsewhere, the thread keeps its priority.
pub fn lower_thread_priority() {
    const BACKGROUND_NICE: i32 = 10;
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
        tracing::debug!("could not lower a background thread's priority: {e}");
    }
}
