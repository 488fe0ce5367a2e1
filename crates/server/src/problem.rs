//! RFC 7807 problem details for every refused HTTP request.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tickwire_hub::HubError;
use tickwire_wire::ErrorCode;

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

/// The wire error code and HTTP status for a hub error.
pub fn classify(e: &HubError) -> (StatusCode, ErrorCode) {
    use tickwire_model::ModelError as M;
    match e {
        HubError::UnknownNamespace { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnknownNamespace,
        ),
        HubError::Model(M::BadJson { .. }) => (StatusCode::BAD_REQUEST, ErrorCode::BadJson),
        HubError::Model(
            M::EmptyChannel
            | M::ChannelTooLong { .. }
            | M::NoNamespace { .. }
            | M::BadChannelChar { .. },
        ) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::BadChannel),
        HubError::Model(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::BadData),
        HubError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
        HubError::AlreadySubscribed(_) => (StatusCode::CONFLICT, ErrorCode::AlreadySubscribed),
        HubError::NotSubscribed(_) => (StatusCode::CONFLICT, ErrorCode::NotSubscribed),
        HubError::TooManySubscriptions(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManySubscriptions,
        ),
        HubError::FromOnStateChannel(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
        HubError::Storage { .. } | HubError::ShuttingDown => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
        }
        HubError::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
    }
}

impl From<HubError> for Problem {
    fn from(e: HubError) -> Problem {
        let (status, code) = classify(&e);
        Problem::new(status, code, e.to_string())
    }
}
