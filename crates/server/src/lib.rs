//! Tickwire's edges over one HTTP listener: publish API, WebSocket and SSE delivery, history,
//! health and metrics, and the console page. Edges translate wire formats to hub calls; they
//! know nothing about storage.

pub mod candles;
mod config;
mod deadline;
mod error;
pub mod fix;
mod metrics;
pub mod mqtt;
mod problem;
mod publish;
mod rest;
mod serve;
mod sse;
mod state;
mod udf;
mod ws;

pub use config::{
    parse_duration, CliOverrides, Config, NamespaceConfig, DEFAULT_DATA, DEFAULT_HTTP,
};
pub use error::ServerError;
pub use serve::{router, serve, Server};
pub use state::AppState;
