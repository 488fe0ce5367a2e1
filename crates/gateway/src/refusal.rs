//! Every refused request, and the one table that says what each wire answers for it.

use tickwire_hub::{Hub, HubError};
use tickwire_mqtt::ReasonCode;
use tickwire_wire::ErrorCode;

/// A refused request: the machine code every wire shares (the WebSocket protocol shows it as
/// is), a sentence for the client, and per-item errors for batches.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
    /// Per-item errors of a refused batch (`{"index","code","detail"}`).
    pub errors: Vec<serde_json::Value>,
    /// When to try again (rate limits): HTTP `Retry-After`.
    pub retry_after: Option<std::time::Duration>,
}

/// The table: each refusal code as an HTTP status, an MQTT reason code for a refused PUBLISH,
/// one for a refused SUBSCRIBE filter, and a gRPC status code (the numbers of
/// `grpc/status.proto`). One row per code, so a new code cannot be mapped on one wire and
/// forgotten on another.
const TABLE: &[(ErrorCode, u16, ReasonCode, ReasonCode, u8)] = &[
    (
        ErrorCode::BadJson,
        400,
        ReasonCode::PayloadFormatInvalid,
        ReasonCode::UnspecifiedError,
        3, // INVALID_ARGUMENT
    ),
    (
        ErrorCode::BadRequest,
        400,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
        3, // INVALID_ARGUMENT
    ),
    (
        ErrorCode::UnknownOp,
        400,
        ReasonCode::ProtocolError,
        ReasonCode::ProtocolError,
        12, // UNIMPLEMENTED
    ),
    (
        ErrorCode::BadChannel,
        422,
        ReasonCode::TopicNameInvalid,
        ReasonCode::TopicFilterInvalid,
        3, // INVALID_ARGUMENT
    ),
    (
        ErrorCode::UnknownNamespace,
        422,
        ReasonCode::TopicNameInvalid,
        ReasonCode::TopicFilterInvalid,
        5, // NOT_FOUND
    ),
    (
        ErrorCode::TooLarge,
        413,
        ReasonCode::QuotaExceeded,
        ReasonCode::QuotaExceeded,
        8, // RESOURCE_EXHAUSTED
    ),
    (
        ErrorCode::BadData,
        422,
        ReasonCode::PayloadFormatInvalid,
        ReasonCode::UnspecifiedError,
        3, // INVALID_ARGUMENT
    ),
    (
        ErrorCode::Unauthorized,
        401,
        ReasonCode::NotAuthorized,
        ReasonCode::NotAuthorized,
        16, // UNAUTHENTICATED
    ),
    (
        ErrorCode::Forbidden,
        403,
        ReasonCode::NotAuthorized,
        ReasonCode::NotAuthorized,
        7, // PERMISSION_DENIED
    ),
    (
        ErrorCode::NotSubscribed,
        409,
        ReasonCode::UnspecifiedError,
        ReasonCode::NoSubscriptionExisted,
        9, // FAILED_PRECONDITION
    ),
    (
        ErrorCode::AlreadySubscribed,
        409,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
        6, // ALREADY_EXISTS
    ),
    (
        ErrorCode::TooManySubscriptions,
        429,
        ReasonCode::QuotaExceeded,
        ReasonCode::QuotaExceeded,
        8, // RESOURCE_EXHAUSTED
    ),
    (
        ErrorCode::OffsetOutOfRange,
        400,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
        11, // OUT_OF_RANGE
    ),
    (
        ErrorCode::EpochMismatch,
        409,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
        9, // FAILED_PRECONDITION
    ),
    (
        ErrorCode::SlowConsumer,
        503,
        ReasonCode::QuotaExceeded,
        ReasonCode::QuotaExceeded,
        8, // RESOURCE_EXHAUSTED
    ),
    (
        ErrorCode::TokenExpired,
        401,
        ReasonCode::NotAuthorized,
        ReasonCode::NotAuthorized,
        16, // UNAUTHENTICATED
    ),
    (
        ErrorCode::RateLimited,
        429,
        ReasonCode::MessageRateTooHigh,
        ReasonCode::QuotaExceeded,
        8, // RESOURCE_EXHAUSTED
    ),
    (
        ErrorCode::NotFound,
        404,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
        5, // NOT_FOUND
    ),
    (
        ErrorCode::Unavailable,
        503,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
        14, // UNAVAILABLE
    ),
    (
        ErrorCode::Internal,
        500,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
        13, // INTERNAL
    ),
];

fn row(code: ErrorCode) -> (u16, ReasonCode, ReasonCode, u8) {
    TABLE.iter().find(|r| r.0 == code).map_or(
        (
            500,
            ReasonCode::UnspecifiedError,
            ReasonCode::UnspecifiedError,
            13,
        ),
        |r| (r.1, r.2, r.3, r.4),
    )
}

impl Refusal {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// The code and sentence for a hub error.
    pub fn from_hub(e: &HubError) -> Refusal {
        use tickwire_model::ModelError as M;
        let code = match e {
            HubError::UnknownNamespace { .. } => ErrorCode::UnknownNamespace,
            HubError::Model(M::BadJson { .. }) => ErrorCode::BadJson,
            HubError::Model(
                M::EmptyChannel
                | M::ChannelTooLong { .. }
                | M::NoNamespace { .. }
                | M::BadChannelChar { .. }
                | M::BadPattern { .. },
            ) => ErrorCode::BadChannel,
            HubError::Model(_) => ErrorCode::BadData,
            HubError::TooLarge { .. } => ErrorCode::TooLarge,
            HubError::AlreadySubscribed(_) => ErrorCode::AlreadySubscribed,
            HubError::NotSubscribed(_) => ErrorCode::NotSubscribed,
            HubError::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            HubError::FromOnStateChannel(_) => ErrorCode::BadRequest,
            HubError::OffsetBeyondEnd { .. } => ErrorCode::OffsetOutOfRange,
            HubError::Storage { .. } | HubError::ShuttingDown => ErrorCode::Unavailable,
            HubError::Config(_) => ErrorCode::Internal,
        };
        Refusal::new(code, e.to_string())
    }

    /// `unknown namespace` with the configured ones listed.
    pub fn unknown_namespace(hub: &Hub, namespace: &str) -> Refusal {
        let known: Vec<String> = hub.namespaces().into_iter().map(|n| n.name).collect();
        Refusal::new(
            ErrorCode::UnknownNamespace,
            format!(
                "unknown namespace `{namespace}`; configured namespaces: {}",
                known.join(", ")
            ),
        )
    }

    /// The HTTP status (REST, the publish API, refused upgrades).
    pub fn http_status(&self) -> u16 {
        row(self.code).0
    }

    /// The MQTT 5 reason code for a refused PUBLISH (PUBACK/PUBREC or DISCONNECT).
    pub fn mqtt_reason(&self) -> ReasonCode {
        row(self.code).1
    }

    /// The MQTT 5 reason code for a refused SUBSCRIBE filter (SUBACK).
    pub fn mqtt_subscribe_reason(&self) -> ReasonCode {
        row(self.code).2
    }

    /// The gRPC status code (`grpc/status.proto` numbering: 3 INVALID_ARGUMENT, 16
    /// UNAUTHENTICATED, ...).
    pub fn grpc_code(&self) -> i32 {
        i32::from(row(self.code).3)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_row() {
        for (i, r) in TABLE.iter().enumerate() {
            assert_eq!(
                TABLE.iter().filter(|o| o.0 == r.0).count(),
                1,
                "{:?} listed twice",
                r.0
            );
            assert!(TABLE[..i].iter().all(|o| o.0 != r.0));
        }
        for code in ErrorCode::ALL {
            assert!(
                TABLE.iter().any(|r| r.0 == *code),
                "{code:?} has no row in the refusal table"
            );
        }
    }
}
