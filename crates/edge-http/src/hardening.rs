//! What keeps the HTTP edge safe to put in front of browsers and the internet, besides the
//! listener's connection limits (crates/server/src/listener.rs):
//!
//! - an Origin allow-list for the long-lived endpoints (`/v1/ws`, `/v1/sse`): a page of
//!   another site must not open a subscription in its visitor's browser unless allowed;
//! - CORS for REST and UDF, so a charting page on another origin (the TradingView library) can
//!   read history when the operator says so;
//! - error texts without server file paths (a storage failure names the segment it failed
//!   on: that goes to the server log, not to the client);
//! - close code 1009 for a WebSocket frame over the limit, as docs/protocol.md promises.

use std::{borrow::Cow, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::SinkExt;
use tickwire_gateway::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tungstenite::{protocol::CloseFrame, Message};

use crate::problem::Problem;

/// WebSocket close code for a message too big to process (RFC 6455 §7.4.1).
pub const CLOSE_TOO_LARGE: u16 = 1009;

/// How long browsers may cache a CORS preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// An origin as browsers send it: lowercase `scheme://host[:port]`, the scheme's default port
/// left out. `None` for anything else (`null`, a path, no scheme).
fn normalize_origin(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let (scheme, authority) = s.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority_ok = !authority.is_empty()
        && !authority
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace());
    if !scheme_ok || !authority_ok {
        return None;
    }
    let authority = strip_default_port(scheme, authority);
    Some(format!("{scheme}://{authority}"))
}

fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// Checks a configured origin list: `*`, or origins like `https://example.com:8443`. Returns
/// whether it allows any origin and the normalized entries.
pub(crate) fn parse_origin_list(list: &[String]) -> Result<(bool, Vec<String>), String> {
    let mut any = false;
    let mut out = Vec::new();
    for entry in list {
        if entry.trim() == "*" {
            any = true;
            continue;
        }
        out.push(normalize_origin(entry).ok_or_else(|| {
            format!("{entry:?} is not an origin like \"https://example.com\" or \"*\"")
        })?);
    }
    Ok((any, out))
}

/// Who may open a WebSocket or an event stream: requests without `Origin` (not a browser), the
/// server's own origin (`Origin` naming the `Host` the request was sent to), and the listed
/// origins. The default lists none.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// From `http.allowed_origins`.
    pub fn new(list: &[String]) -> Result<OriginPolicy, String> {
        let (any, allowed) = parse_origin_list(list)?;
        Ok(OriginPolicy { any, allowed })
    }

    /// Whether a request carrying `origin`, sent to `host`, may go on.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let Some(o) = normalize_origin(origin) else {
            return false;
        };
        if self.allowed.contains(&o) {
            return true;
        }
        // Same origin: the page was served by this server under the name it used to reach it.
        // The scheme is not compared (a TLS-terminating proxy in front is common); the host
        // and port are.
        let Some((scheme, authority)) = o.split_once("://") else {
            return false;
        };
        host.map(|h| h.trim().to_ascii_lowercase())
            .is_some_and(|h| strip_default_port(scheme, &h) == authority)
    }
}

/// Middleware for `/v1/ws` and `/v1/sse`: refuses a browser request from an origin that is
/// not allowed (403) before anything else is done for it.
pub async fn origin_guard(
    State(policy): State<Arc<OriginPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return next.run(req).await;
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if policy.allows(&origin, host) {
        return next.run(req).await;
    }
    tracing::debug!(%origin, path = %req.uri().path(), "origin refused");
    Problem::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        format!(
            "origin {origin:?} may not open {}: add it to http.allowed_origins",
            req.uri().path()
        ),
    )
    .into_response()
}

/// CORS for every route from `http.cors_allowed_origins`; `None` when it is empty (no CORS
/// headers: browsers keep other origins' pages from reading answers). No credentials are
/// allowed: clients present API keys in `Authorization`, never in cookies.
pub fn cors_layer(list: &[String]) -> Option<CorsLayer> {
    let (any, origins) = parse_origin_list(list).ok()?;
    if !any && origins.is_empty() {
        return None;
    }
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
            ])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// The text a client gets for a refusal. Server-side failures (storage, internal errors) carry
/// the text of an I/O error, which names files under the data directory: those are replaced,
/// and the whole text goes to the server log instead. Refusals of the client's own request
/// describe its input and are kept as they are.
pub fn public_detail(server_error: bool, text: &str) -> Cow<'_, str> {
    if !server_error {
        return Cow::Borrowed(text);
    }
    let public = tickwire_model::layout::redact_paths(text);
    if let Cow::Owned(p) = &public {
        tracing::warn!(error = %text, answered = %p, "request failed on the server side");
    }
    public
}

/// [`public_detail`] for a refusal code (WebSocket error replies).
pub(crate) fn public_reason(code: ErrorCode, text: &str) -> Cow<'_, str> {
    public_detail(
        matches!(code, ErrorCode::Unavailable | ErrorCode::Internal),
        text,
    )
}

/// Whether a WebSocket read failed because a frame or message was over the size limit.
pub(crate) fn is_too_large(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

/// Tells the client why its connection ends: close code 1009. The frame is dropped unread
/// (its length alone was over the limit), so the connection cannot go on.
pub(crate) async fn close_too_large(socket: &mut crate::ws::Socket, timeout: Duration) {
    let close = Message::Close(Some(CloseFrame {
        code: CLOSE_TOO_LARGE.into(),
        reason: ErrorCode::TooLarge.as_str().into(),
    }));
    let _ = tokio::time::timeout(timeout.min(Duration::from_secs(2)), socket.send(close)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_same_listed_any() {
        let own = OriginPolicy::default();
        assert!(own.allows("http://127.0.0.1:7700", Some("127.0.0.1:7700")));
        assert!(own.allows("HTTPS://Example.com", Some("example.com:443")));
        assert!(own.allows("https://example.com:443", Some("example.com")));
        assert!(!own.allows("http://evil.example", Some("127.0.0.1:7700")));
        assert!(!own.allows("http://127.0.0.1:7701", Some("127.0.0.1:7700")));
        assert!(!own.allows("null", Some("127.0.0.1:7700")));
        assert!(!own.allows("http://127.0.0.1:7700", None));
        let listed = OriginPolicy::new(&["https://charts.example.com".into()]).unwrap();
        assert!(listed.allows("https://charts.example.com", Some("api.example.com")));
        assert!(listed.allows("https://charts.example.com:443", Some("api.example.com")));
        assert!(!listed.allows("http://charts.example.com", Some("api.example.com")));
        let any = OriginPolicy::new(&["*".into()]).unwrap();
        assert!(any.allows("null", None));
        assert!(OriginPolicy::new(&["https://x.example/path".into()]).is_err());
        assert!(OriginPolicy::new(&["x.example".into()]).is_err());
    }

    #[test]
    fn only_server_errors_are_redacted() {
        let text = "write failed on /tmp/d/log/chat/0.log: No space left on device";
        assert_eq!(
            public_detail(true, text),
            "write failed on <path>: No space left on device"
        );
        assert_eq!(public_detail(false, "channel `a/b`"), "channel `a/b`");
    }
}
