//! MQTT PUBLISH (and Will) → the gateway: the same permission rule as every other edge, the
//! hub's size and schema checks, and the ack only after the hub acknowledged (durable under the
//! fsync policy). Refusals get their reason code from the gateway's one table.

use bytes::Bytes;
use serde::de::IgnoredAny;
use tickwire_gateway::{Connection, Gateway, Principal, Refusal};
use tickwire_hub::{Checked, PublishRequest};
use tickwire_model::{scan_flat_json, SchemaFields};
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
/// A flat object (a quote, a trade) is read by hand, which proves it is JSON and finds its
/// quote/trade fields for the schema check in one pass (`model::scan_flat_json`, the HTTP
/// and WebSocket readers' own); anything else, or anything it is unsure of, goes to serde,
/// which also words the refusal. `Ok(Some)`: the fields found.
fn check_json(payload: &[u8]) -> Result<Option<SchemaFields<'_>>, Refused> {
    if let Some(fields) = scan_flat_json(payload) {
        return Ok(fields);
    }
    serde_json::from_slice::<IgnoredAny>(payload)
        .map(|_| None)
        .map_err(|e| Refused {
            code: ReasonCode::PayloadFormatInvalid,
            reason: format!("the payload must be JSON text: {e}"),
        })
}

/// The publication a PUBLISH (or a Will) asks for: a channel from its topic and a JSON payload,
/// with the payload's quote/trade fields when they were read on the way.
fn request<'a>(
    gateway: &Gateway,
    topic: &str,
    payload: &'a [u8],
) -> Result<(PublishRequest, Option<SchemaFields<'a>>), Refused> {
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
    let fields = check_json(payload)?;
    let req = PublishRequest {
        channel,
        msg_id: None,
        data: Bytes::copy_from_slice(payload),
    };
    Ok((req, fields))
}

/// Checks everything that does not need the hub round trip for `principal` (the Will at
/// CONNECT, before there is a connection): permission, sender stamp, schema.
pub(crate) fn precheck(
    gateway: &Gateway,
    principal: &Principal,
    topic: &str,
    payload: &[u8],
) -> Result<Checked, Refused> {
    let (req, fields) = request(gateway, topic, payload)?;
    gateway
        .check_scanned(principal, req, fields.as_ref())
        .map_err(|r| refused(&r))
}

/// [`precheck`] on a live connection: its rate limits apply too.
pub(crate) fn precheck_on(
    conn: &Connection,
    topic: &str,
    payload: &[u8],
) -> Result<Checked, Refused> {
    let (req, fields) = request(conn.gateway(), topic, payload)?;
    conn.check_scanned(req, fields.as_ref())
        .map_err(|r| refused(&r))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_model::{validate_schema_fields, validate_schema_json, Schema};

    /// The hand-read payloads are exactly the ones serde accepts, and their fields give the
    /// schema check's own answer.
    #[test]
    fn payloads_read_by_hand_agree_with_serde() {
        for payload in [
            r#"{"bid":"1.0842","ask":"1.0843","ts":17}"#,
            r#" { "price" : "101.5" , "size" : "3" } "#,
            r#"{"bid":"1.0842","bid":"1.0843"}"#,
            r#"{"bid":1.5,"ask":null}"#,
            r#"{}"#,
            r#"{"text":"é"}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":"x\"y"}"#,
            r#"[1,2]"#,
            r#""plain""#,
            "42",
            r#"{"a":1"#,
            r#"{"a":1} x"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            "not json",
            "",
        ] {
            let serde_ok = serde_json::from_str::<serde_json::Value>(payload).is_ok();
            match check_json(payload.as_bytes()) {
                Ok(fields) => {
                    assert!(serde_ok, "{payload}");
                    if let Some(f) = fields {
                        for schema in [Schema::Quote, Schema::Trade] {
                            assert_eq!(
                                validate_schema_fields(schema, &f),
                                validate_schema_json(schema, payload.as_bytes()),
                                "{payload}"
                            );
                        }
                    }
                }
                Err(r) => {
                    assert!(!serde_ok, "{payload}");
                    assert_eq!(r.code, ReasonCode::PayloadFormatInvalid);
                }
            }
        }
        assert!(check_json(br#"{"bid":"1.0842","ask":"1.0843"}"#).is_ok_and(|f| f.is_some()));
    }
}
