//! Tickwire's composition root: the configuration (each section owned by the crate it
//! configures), and the wiring of one server: the embedded stream backend under the hub, the
//! gateway over the hub, the edges (HTTP, MQTT, FIX) over the gateway, and the projections
//! (candles, books) over the hub's streams; then graceful shutdown in the reverse order.

pub mod backup;
mod config;
mod error;
mod grpc;
pub mod listener;
mod metrics;
mod serve;

pub use config::{
    parse_duration, BooksConfig, CliOverrides, Config, NamespaceConfig, DEFAULT_DATA, DEFAULT_HTTP,
};
pub use error::ServerError;
pub use serve::{serve, Server};

/// The candle projection's configuration and store location, for tools (`tickwire import`).
pub use tickwire_proj_candles as candles;
