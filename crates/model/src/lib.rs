//! Tickwire's domain types, shared by every other crate. No I/O lives here.
//!
//! A *channel* is a dotted name whose first segment is its *namespace* (`quotes.EURUSD`,
//! `chat.lobby`). The namespace decides the channel's [`Class`]: state (latest value wins,
//! conflated) or stream (every message, durable, ordered, resumable by offset).

pub mod amend;
mod channel;
pub mod clock;
mod decimal;
pub mod durable_dir;
mod error;
pub mod jsonlex;
pub mod layout;
mod namespace;
mod pattern;
mod position;
mod publication;
mod spans;

pub use channel::{AddrHash, ByAlloc, Channel, MAX_CHANNEL_LEN};
pub use decimal::{
    check_decimal, is_decimal, scan_flat_json, scan_flat_object, validate_json,
    validate_schema_fields, validate_schema_json, validate_schema_json_by_serde, DecimalProblem,
    SchemaFields, MAX_DECIMAL_PLACES, MAX_UNSCALED,
};
pub use error::ModelError;
pub use layout::DataDir;
pub use namespace::{
    default_publish, default_subscribe, Class, NamespaceSpec, Permission, Schema, MARKERS, PRESENCE,
};
pub use pattern::Pattern;
pub use position::{Epoch, StreamPos};
pub use publication::{Offset, Publication};
pub use spans::{FieldSpans, SpanKind};
