//! MQTT PUBLISH (and Will) → the gateway: the same permission rule as every other edge, the
//! hub's size and schema checks, and the ack only after the hub acknowledged (durable under the
//! fsync policy). Refusals get their reason code from the gateway's one table.

use bytes::Bytes;
use serde::de::IgnoredAny;
use tickwire_gateway::{Gateway, Principal, Refusal};
use tickwire_hub::{Checked, PublishRequest};
use tickwire_mqtt::{
    broker::{topic_to_channel, Refused},
    ReasonCode,
};

/// A gateway refusal as MQTT sees it.
pub(crate) fn refused(r: &Refusal) -> Refused {
    Refused {
        code: r.mqtt_reason(),
        reason: r.reason.clone(),
    }
}

/// The hub stores JSON text; an MQTT payload that is not one JSON value is refused (0x99)
/// rather than wrapped, so what a subscriber receives is byte-for-byte what was published.
fn check_json(payload: &[u8]) -> Result<(), Refused> {
    serde_json::from_slice::<IgnoredAny>(payload)
        .map(|_| ())
        .map_err(|e| Refused {
            code: ReasonCode::PayloadFormatInvalid,
            reason: format!("the payload must be JSON text: {e}"),
        })
}

/// Checks everything that does not need the hub round trip (also used for the Will at CONNECT).
pub(crate) fn precheck(
    gateway: &Gateway,
    principal: &Principal,
    topic: &str,
    payload: &[u8],
) -> Result<Checked, Refused> {
    let channel = topic_to_channel(topic).map_err(|e| Refused {
        code: ReasonCode::TopicNameInvalid,
        reason: e,
    })?;
    if gateway.hub().namespace_spec(channel.namespace()).is_none() {
        return Err(Refused {
            code: ReasonCode::TopicNameInvalid,
            reason: format!("unknown namespace `{}`", channel.namespace()),
        });
    }
    if let Err(r) = gateway.can_publish(principal, &channel) {
        return Err(Refused {
            code: r.mqtt_reason(),
            reason: format!(
                "clients may not publish to `{}`; connect with an API key as the password",
                channel.namespace()
            ),
        });
    }
    check_json(payload)?;
    let req = PublishRequest {
        channel,
        msg_id: None,
        data: Bytes::copy_from_slice(payload),
    };
    gateway
        .hub()
        .check(req)
        .map_err(|e| refused(&Refusal::from(e)))
}

/// Stores one publication (a Will) and waits for the hub's ack.
pub(crate) async fn publish(
    gateway: &Gateway,
    principal: &Principal,
    topic: &str,
    payload: &[u8],
) -> Result<(), Refused> {
    let req = precheck(gateway, principal, topic, payload)?;
    match gateway.hub().publish_checked(vec![req]).await.pop() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(refused(&Refusal::from(e))),
        None => Err(Refused {
            code: ReasonCode::UnspecifiedError,
            reason: "no result from the hub".into(),
        }),
    }
}
