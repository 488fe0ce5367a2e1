//! MQTT PUBLISH (and Will) → the hub's ingest path: the same permission rule as the WebSocket
//! publish (API key, or a namespace open to `client_publish`), the hub's size and schema
//! checks, and the ack only after the hub acknowledged (durable under the fsync policy).

use bytes::Bytes;
use serde::de::IgnoredAny;
use tickwire_hub::{Ack, Checked, HubError, PublishRequest};
use tickwire_mqtt::ReasonCode;

use super::topic::topic_to_channel;
use crate::AppState;

/// Why a publication was refused: the MQTT 5 reason code and a sentence for the client.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub code: ReasonCode,
    pub reason: String,
}

impl Refusal {
    fn new(code: ReasonCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// The hub stores JSON text; an MQTT payload that is not one JSON value is refused (0x99)
/// rather than wrapped, so what a subscriber receives is byte-for-byte what was published.
pub(crate) fn check_json(payload: &[u8]) -> Result<(), Refusal> {
    serde_json::from_slice::<IgnoredAny>(payload)
        .map(|_| ())
        .map_err(|e| {
            Refusal::new(
                ReasonCode::PayloadFormatInvalid,
                format!("the payload must be JSON text: {e}"),
            )
        })
}

/// Checks everything that does not need the hub round trip (also used for the Will at CONNECT).
pub(crate) fn precheck(
    st: &AppState,
    publisher: bool,
    topic: &str,
    payload: &[u8],
) -> Result<Checked, Refusal> {
    let channel =
        topic_to_channel(topic).map_err(|e| Refusal::new(ReasonCode::TopicNameInvalid, e))?;
    let open = st
        .hub
        .namespace_spec(channel.namespace())
        .map(|n| n.client_publish);
    match open {
        None => {
            return Err(Refusal::new(
                ReasonCode::TopicNameInvalid,
                format!("unknown namespace `{}`", channel.namespace()),
            ))
        }
        Some(false) if !publisher => {
            return Err(Refusal::new(
                ReasonCode::NotAuthorized,
                format!(
                    "clients may not publish to `{}`; connect with an API key as the password",
                    channel.namespace()
                ),
            ))
        }
        Some(_) => {}
    }
    check_json(payload)?;
    let req = PublishRequest {
        channel,
        msg_id: None,
        data: Bytes::copy_from_slice(payload),
    };
    st.hub.check(req).map_err(|e| refusal(&e))
}

pub(crate) fn refusal(e: &HubError) -> Refusal {
    let code = match e {
        HubError::UnknownNamespace { .. } => ReasonCode::TopicNameInvalid,
        HubError::Model(_) => ReasonCode::PayloadFormatInvalid,
        HubError::TooLarge { .. } => ReasonCode::QuotaExceeded,
        _ => ReasonCode::UnspecifiedError,
    };
    Refusal::new(code, e.to_string())
}

/// Stores one publication and returns the hub's ack.
pub(crate) async fn publish(
    st: &AppState,
    publisher: bool,
    topic: &str,
    payload: &[u8],
) -> Result<Ack, Refusal> {
    let req = precheck(st, publisher, topic, payload)?;
    match st.hub.publish_checked(vec![req]).await.pop() {
        Some(Ok(ack)) => Ok(ack),
        Some(Err(e)) => Err(refusal(&e)),
        None => Err(Refusal::new(
            ReasonCode::UnspecifiedError,
            "no result from the hub",
        )),
    }
}
