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
/// and one for a refused SUBSCRIBE filter. One row per code, so a new code cannot be mapped
/// on one wire and forgotten on another.
const TABLE: &[(ErrorCode, u16, ReasonCode, ReasonCode)] = &[
    (
        ErrorCode::BadJson,
        400,
        ReasonCode::PayloadFormatInvalid,
        ReasonCode::UnspecifiedError,
    ),
    (
        ErrorCode::BadRequest,
        400,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
    ),
    (
        ErrorCode::UnknownOp,
        400,
        ReasonCode::ProtocolError,
        ReasonCode::ProtocolError,
    ),
    (
        ErrorCode::BadChannel,
        422,
        ReasonCode::TopicNameInvalid,
        ReasonCode::TopicFilterInvalid,
    ),
    (
        ErrorCode::UnknownNamespace,
        422,
        ReasonCode::TopicNameInvalid,
        ReasonCode::TopicFilterInvalid,
    ),
    (
        ErrorCode::TooLarge,
        413,
        ReasonCode::QuotaExceeded,
        ReasonCode::QuotaExceeded,
    ),
    (
        ErrorCode::BadData,
        422,
        ReasonCode::PayloadFormatInvalid,
        ReasonCode::UnspecifiedError,
    ),
    (
        ErrorCode::Unauthorized,
        401,
        ReasonCode::NotAuthorized,
        ReasonCode::NotAuthorized,
    ),
    (
        ErrorCode::Forbidden,
        403,
        ReasonCode::NotAuthorized,
        ReasonCode::NotAuthorized,
    ),
    (
        ErrorCode::NotSubscribed,
        409,
        ReasonCode::UnspecifiedError,
        ReasonCode::NoSubscriptionExisted,
    ),
    (
        ErrorCode::AlreadySubscribed,
        409,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
    ),
    (
        ErrorCode::TooManySubscriptions,
        429,
        ReasonCode::QuotaExceeded,
        ReasonCode::QuotaExceeded,
    ),
    (
        ErrorCode::OffsetOutOfRange,
        400,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
    ),
    (
        ErrorCode::EpochMismatch,
        409,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
    ),
    (
        ErrorCode::SlowConsumer,
        503,
        ReasonCode::QuotaExceeded,
        ReasonCode::QuotaExceeded,
    ),
    (
        ErrorCode::TokenExpired,
        401,
        ReasonCode::NotAuthorized,
        ReasonCode::NotAuthorized,
    ),
    (
        ErrorCode::RateLimited,
        429,
        ReasonCode::MessageRateTooHigh,
        ReasonCode::QuotaExceeded,
    ),
    (
        ErrorCode::Unavailable,
        503,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
    ),
    (
        ErrorCode::Internal,
        500,
        ReasonCode::UnspecifiedError,
        ReasonCode::UnspecifiedError,
    ),
];

fn row(code: ErrorCode) -> (u16, ReasonCode, ReasonCode) {
    TABLE.iter().find(|r| r.0 == code).map_or(
        (
            500,
            ReasonCode::UnspecifiedError,
            ReasonCode::UnspecifiedError,
        ),
        |r| (r.1, r.2, r.3),
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
