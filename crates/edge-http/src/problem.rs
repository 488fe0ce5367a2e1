//! RFC 7807 problem details for every refused HTTP request.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tickwire_gateway::{ErrorCode, Refusal};
use tickwire_hub::HubError;

use crate::hardening::public_detail;

/// A refused request: status, machine code, human detail, and per-item errors for batches.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<serde_json::Value>,
    /// `Retry-After` (seconds, rounded up) for a rate limit.
    pub retry_after: Option<std::time::Duration>,
}

impl Problem {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // A server-side failure's text may name files under the data directory: the client
        // gets it without them, the server log gets it whole.
        let server_error = self.status.is_server_error();
        let mut body = json!({
            "type": format!("/problems/{}", self.code.as_str()),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": public_detail(server_error, &self.detail),
            "code": self.code,
        });
        if !self.errors.is_empty() {
            let mut errors = self.errors;
            if server_error {
                for e in &mut errors {
                    if let Some(d) = e.get_mut("detail") {
                        if let Some(text) = d.as_str() {
                            *d = public_detail(true, text).into_owned().into();
                        }
                    }
                }
            }
            body["errors"] = serde_json::Value::Array(errors);
        }
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<Refusal> for Problem {
    /// The status comes from the gateway's one refusal table.
    fn from(r: Refusal) -> Problem {
        let status =
            StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Problem {
            status,
            code: r.code,
            detail: r.reason,
            errors: r.errors,
            retry_after: r.retry_after,
        }
    }
}

impl From<HubError> for Problem {
    fn from(e: HubError) -> Problem {
        Problem::from(Refusal::from(e))
    }
}
