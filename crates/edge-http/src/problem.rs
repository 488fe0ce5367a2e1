//! RFC 7807 problem details for every refused HTTP request.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tickwire_gateway::{ErrorCode, Refusal};
use tickwire_hub::HubError;

/// A refused request: status, machine code, human detail, and per-item errors for batches.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("/problems/{}", self.code.as_str()),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if !self.errors.is_empty() {
            body["errors"] = serde_json::Value::Array(self.errors);
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
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
        }
    }
}

impl From<HubError> for Problem {
    fn from(e: HubError) -> Problem {
        Problem::from(Refusal::from(e))
    }
}
