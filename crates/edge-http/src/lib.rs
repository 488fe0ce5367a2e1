//! The HTTP edge, on one listener: `POST /v1/publish`, REST reads (history, latest,
//! namespaces, channels), the WebSocket JSON protocol (`/v1/ws`), Server-Sent Events
//! (`/v1/sse`), health, readiness, metrics and the console page. Every request and connection
//! goes through the gateway (identity, permissions, limits, shutdown, metrics); this crate
//! only translates HTTP, WebSocket frames and SSE events to gateway calls.

mod chat;
mod config;
mod console;
pub mod hardening;
mod notify;
mod problem;
mod publish;
mod rest;
mod sse;
mod ws;

use std::sync::Arc;

use axum::{
    middleware,
    routing::{delete, get, patch, post},
    Router,
};
use tickwire_gateway::{Edge, Gateway};

pub use config::{address_or_table, HttpSection, DEFAULT_LISTEN};
pub use hardening::{cors_layer, OriginPolicy};
pub use problem::Problem;
pub use publish::credential;
pub use rest::parse_query;

/// Edge names (metrics and logs).
pub const HTTP: Edge = Edge("http");
pub const WEBSOCKET: Edge = Edge("websocket");
pub const SSE: Edge = Edge("sse");

/// Settings of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest HTTP publish body, bytes.
    pub max_body_bytes: usize,
    /// Who may open a WebSocket or an event stream (`http.allowed_origins`).
    pub origins: OriginPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 8 * 1024 * 1024,
            origins: OriginPolicy::default(),
        }
    }
}

/// What every handler of this edge shares.
#[derive(Clone)]
pub struct HttpState {
    pub gateway: Arc<Gateway>,
    pub config: Arc<HttpConfig>,
}

/// Every route of the HTTP edge. Other crates add theirs (candles, FIX status, MQTT over
/// WebSocket) in the server's composition root.
pub fn routes(gateway: Arc<Gateway>, config: HttpConfig) -> Router {
    // Checked before the handler runs: a page of another site gets no subscription opened.
    let origins =
        middleware::from_fn_with_state(Arc::new(config.origins.clone()), hardening::origin_guard);
    let st = HttpState {
        gateway,
        config: Arc::new(config),
    };
    let admin = middleware::from_fn_with_state(st.clone(), rest::admin_guard);
    Router::new()
        .merge(console::routes())
        .route("/v1/publish", post(publish::publish))
        .route("/v1/notify", post(notify::notify))
        .route("/v1/ws", get(ws::upgrade).route_layer(origins.clone()))
        .route("/v1/sse", get(sse::sse).route_layer(origins))
        .route("/v1/history/{channel}", get(rest::history))
        .route("/v1/latest/{channel}", get(rest::latest))
        .route(
            "/v1/messages/{channel}/{offset}",
            patch(chat::edit).delete(chat::delete),
        )
        .route("/v1/search", get(chat::search))
        .route("/v1/presence/{channel}", get(chat::presence))
        .route("/v1/markers", get(chat::markers).post(chat::read))
        .route(
            "/v1/namespaces",
            get(rest::namespaces).route_layer(admin.clone()),
        )
        .route(
            "/v1/channels/{namespace}",
            get(rest::channels).route_layer(admin.clone()),
        )
        .route(
            "/v1/connections",
            get(rest::connections).route_layer(admin.clone()),
        )
        .route(
            "/v1/connections/{id}",
            delete(rest::kick).route_layer(admin.clone()),
        )
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .route("/metrics", get(rest::metrics).route_layer(admin))
        .with_state(st)
}
