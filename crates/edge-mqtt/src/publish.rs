//! MQTT PUBLISH (and Will) → the gateway: the same permission rule as every other edge, the
//! hub's size and schema checks, and the ack only after the hub acknowledged (durable under the
//! fsync policy). Refusals get their reason code from the gateway's one table.

use bytes::Bytes;
use serde::de::IgnoredAny;
use tickwire_gateway::{Connection, Gateway, Principal, Refusal};
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

/// The publication a PUBLISH (or a Will) asks for: a channel from its topic and a JSON payload.
fn request(gateway: &Gateway, topic: &str, payload: &[u8]) -> Result<PublishRequest, Refused> {
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
    check_json(payload)?;
    Ok(PublishRequest {
        channel,
        msg_id: None,
        data: Bytes::copy_from_slice(payload),
    })
}

/// Checks everything that does not need the hub round trip for `principal` (the Will at
/// CONNECT, before there is a connection): permission, sender stamp, schema.
pub(crate) fn precheck(
    gateway: &Gateway,
    principal: &Principal,
    topic: &str,
    payload: &[u8],
) -> Result<Checked, Refused> {
    let req = request(gateway, topic, payload)?;
    gateway.check(principal, req).map_err(|r| refused(&r))
}

/// [`precheck`] on a live connection: its rate limits apply too.
pub(crate) fn precheck_on(
    conn: &Connection,
    topic: &str,
    payload: &[u8],
) -> Result<Checked, Refused> {
    let req = request(conn.gateway(), topic, payload)?;
    conn.check(req).map_err(|r| refused(&r))
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
