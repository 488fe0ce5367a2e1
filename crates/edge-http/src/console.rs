//! The console page and its assets, embedded in the binary.

use axum::{
    http::header,
    response::{Html, IntoResponse},
    routing::get,
    Router,
};

const CONSOLE: &str = include_str!("../../../web/index.html");
const CONSOLE_JS: &str = include_str!("../../../web/console.js");
const CONSOLE_CSS: &str = include_str!("../../../web/console.css");
const CHARTS_JS: &str =
    include_str!("../../../web/vendor/lightweight-charts.standalone.production.js");

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Html(CONSOLE) }))
        .route(
            "/favicon.ico",
            get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], "").into_response() }),
        )
        .route(
            "/console.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    CONSOLE_JS,
                )
            }),
        )
        .route(
            "/console.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    CONSOLE_CSS,
                )
            }),
        )
        .route(
            "/vendor/lightweight-charts.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    CHARTS_JS,
                )
            }),
        )
}
