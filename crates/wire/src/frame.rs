use std::fmt::Write as _;

use bytes::Bytes;
use serde::Serialize;
use tickwire_model::Publication;

/// Machine-readable reason in every refused command and every server-initiated disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    UnknownOp,
    BadChannel,
    UnknownNamespace,
    TooLarge,
    BadData,
    Unauthorized,
    Forbidden,
    NotSubscribed,
    AlreadySubscribed,
    TooManySubscriptions,
    OffsetOutOfRange,
    /// The stream the client's offset belongs to was recreated (see the epoch).
    EpochMismatch,
    SlowConsumer,
    /// The connection's token expired: refresh it within the grace period or be closed.
    TokenExpired,
    /// Over a rate limit; the message says when to retry.
    RateLimited,
    /// What the request names does not exist (an edit's target message, a search index).
    NotFound,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for tables that must cover them all.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::BadChannel,
        ErrorCode::UnknownNamespace,
        ErrorCode::TooLarge,
        ErrorCode::BadData,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotSubscribed,
        ErrorCode::AlreadySubscribed,
        ErrorCode::TooManySubscriptions,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::EpochMismatch,
        ErrorCode::SlowConsumer,
        ErrorCode::TokenExpired,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadChannel => "bad_channel",
            ErrorCode::UnknownNamespace => "unknown_namespace",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadData => "bad_data",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::EpochMismatch => "epoch_mismatch",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// `{"ch":..,"offset":..,"ts":..,"data":..}` (+ `"snapshot":true`). Channel names are validated
/// to a character set that needs no JSON escaping, and `data` is stored as JSON text, so the
/// frame is assembled without a serializer. Returned as a `String`: edges send it as text
/// without validating it again.
pub fn encode_push(p: &Publication, snapshot: bool) -> String {
    let mut s = String::with_capacity(64 + p.channel.as_str().len() + p.data.len());
    s.push_str("{\"ch\":\"");
    s.push_str(p.channel.as_str());
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "\",\"offset\":{},\"ts\":{}",
        p.offset,
        p.timestamp / 1_000_000
    );
    if snapshot {
        s.push_str(",\"snapshot\":true");
    }
    s.push_str(",\"data\":");
    s.push_str(std::str::from_utf8(&p.data).unwrap_or("null"));
    s.push('}');
    s
}

/// `{"id":N,"ok":true,...extra}`; `extra` is a JSON object whose fields are merged in.
pub fn encode_ok(id: u64, extra: serde_json::Value) -> Bytes {
    let mut obj = serde_json::Map::new();
    obj.insert("id".into(), id.into());
    obj.insert("ok".into(), true.into());
    if let serde_json::Value::Object(m) = extra {
        obj.extend(m);
    }
    Bytes::from(serde_json::Value::Object(obj).to_string())
}

/// The reply to a stored publish: `{"channel":..,"duplicate":..,"id":N,"offset":..,"ok":true}`,
/// byte for byte what [`encode_ok`] writes for those fields, appended to `out` without a JSON
/// tree (publish replies are the hot path of a publishing connection). Channel names need no
/// escaping (see `Channel::parse`).
pub fn encode_publish_ok(id: u64, channel: &str, offset: u64, duplicate: bool) -> Bytes {
    let mut s = String::with_capacity(72 + channel.len());
    s.push_str("{\"channel\":\"");
    s.push_str(channel);
    s.push_str(if duplicate {
        "\",\"duplicate\":true,\"id\":"
    } else {
        "\",\"duplicate\":false,\"id\":"
    });
    let mut n = itoa::Buffer::new();
    s.push_str(n.format(id));
    s.push_str(",\"offset\":");
    s.push_str(n.format(offset));
    s.push_str(",\"ok\":true}");
    Bytes::from(s)
}

/// `{"id":N|null,"ok":false,"error":{"code":..,"message":..}}`
pub fn encode_error(id: Option<u64>, code: ErrorCode, message: &str) -> Bytes {
    let v = serde_json::json!({"id": id, "ok": false, "error": {"code": code, "message": message}});
    Bytes::from(v.to_string())
}

/// The last frame before the server closes a connection: why, and where to resume each
/// stream channel (`{"chat.lobby": 43}` = resubscribe with `from: 43`).
pub fn encode_disconnect(code: ErrorCode, message: &str, resume: &[(String, u64)]) -> Bytes {
    let resume: serde_json::Map<String, serde_json::Value> = resume
        .iter()
        .map(|(c, o)| (c.clone(), (*o).into()))
        .collect();
    let v =
        serde_json::json!({"op": "disconnect", "code": code, "message": message, "resume": resume});
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_model::Channel;

    #[test]
    fn publish_reply_is_what_encode_ok_writes() {
        for (id, ch, off, dup) in [
            (1u64, "quotes.X", 0u64, false),
            (u64::MAX, "chat.a-b:c", 99, true),
        ] {
            let want = encode_ok(
                id,
                serde_json::json!({"channel": ch, "offset": off, "duplicate": dup}),
            );
            assert_eq!(encode_publish_ok(id, ch, off, dup), want);
        }
    }

    #[test]
    fn push_is_valid_json() {
        let p = Publication {
            channel: Channel::parse("quotes.EURUSD").unwrap(),
            offset: 7,
            timestamp: 1_700_000_000_123_456_789,
            msg_id: None,
            data: Bytes::from_static(br#"{"bid":"1.1","ask":"1.2"}"#),
        };
        let v: serde_json::Value = serde_json::from_str(&encode_push(&p, true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ch":"quotes.EURUSD","offset":7,"ts":1_700_000_000_123u64,"snapshot":true,"data":{"bid":"1.1","ask":"1.2"}})
        );
        let v: serde_json::Value = serde_json::from_str(&encode_push(&p, false)).unwrap();
        assert!(v.get("snapshot").is_none());
    }

    #[test]
    fn replies_are_valid_json() {
        let v: serde_json::Value =
            serde_json::from_slice(&encode_ok(3, serde_json::json!({"offset": 9}))).unwrap();
        assert_eq!(v, serde_json::json!({"id":3,"ok":true,"offset":9}));
        let v: serde_json::Value = serde_json::from_slice(&encode_error(
            Some(4),
            ErrorCode::UnknownNamespace,
            "no \"x\"",
        ))
        .unwrap();
        assert_eq!(v["error"]["code"], "unknown_namespace");
        assert_eq!(v["error"]["message"], "no \"x\"");
        let v: serde_json::Value = serde_json::from_slice(&encode_disconnect(
            ErrorCode::SlowConsumer,
            "m",
            &[("chat.a".into(), 5)],
        ))
        .unwrap();
        assert_eq!(v["resume"]["chat.a"], 5);
        for c in [
            ErrorCode::BadJson,
            ErrorCode::SlowConsumer,
            ErrorCode::OffsetOutOfRange,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
