//! The protobuf forms the edges that speak `tickwire.v1` share (gRPC, the binary WebSocket):
//! one message-cache slot for the push, so a message is encoded once however many subscribers
//! of either edge receive it, and one conversion each for a subscribe answer, a publish item,
//! an error and a disconnect, so both edges say the same thing the same way.

use bytes::Bytes;
use tickwire_hub::{
    Channel, Class, Delivery, Epoch, Format, Hub, PublishRequest, Recent, SubscribeInfo,
};
use tickwire_proto::{
    encode_push, json_of, kind_of,
    v1::{self, ChannelClass, Disconnect, PublishItem, RetentionGap, Subscribed, Subscription},
    PayloadKind, ProtoError,
};
use tickwire_wire::ErrorCode;

use crate::{Connection, Gateway, Refusal};

/// The longest `msg_id`, as on every edge.
const MAX_MSG_ID_LEN: usize = 128;

fn format() -> Format {
    static PROTO: std::sync::OnceLock<Format> = std::sync::OnceLock::new();
    *PROTO.get_or_init(|| Format::register("proto-push"))
}

/// The typed form of a channel's data in `hub` (by its namespace).
pub fn payload_kind(hub: &Hub, namespace: &str) -> PayloadKind {
    hub.namespace_spec(namespace)
        .map_or(PayloadKind::Json, kind_of)
}

/// The bytes of a `tickwire.v1.ServerMessage` holding the delivery's `Push`. A snapshot
/// carries its own flag, so it is encoded for its one subscriber. The cache slot is filled
/// the first time a subscriber of a protobuf edge takes the message, so a server without
/// such subscribers never encodes it.
pub fn proto_push(hub: &Hub, d: &Delivery) -> Bytes {
    with_proto_push(hub, d, Bytes::clone)
}

/// [`proto_push`] lent to `use_`: no reference count is taken on the shared bytes.
pub fn with_proto_push<R>(hub: &Hub, d: &Delivery, use_: impl FnOnce(&Bytes) -> R) -> R {
    let p = &d.message.publication;
    if d.snapshot {
        return use_(&encode_push(
            p,
            true,
            payload_kind(hub, p.channel.namespace()),
        ));
    }
    d.message.with_encoded(
        format(),
        |p| encode_push(p, false, payload_kind(hub, p.channel.namespace())),
        use_,
    )
}

/// The typed class of a channel.
pub fn class(c: Class) -> ChannelClass {
    match c {
        Class::State => ChannelClass::State,
        Class::Stream => ChannelClass::Stream,
    }
}

/// What the JSON WebSocket's subscribe reply says, typed.
pub fn subscribed(channel: &str, info: &SubscribeInfo) -> Subscribed {
    Subscribed {
        channel: channel.to_string(),
        class: class(info.class) as i32,
        offset: info.offset,
        epoch: info.epoch.map(|e| e.to_string()).unwrap_or_default(),
        snapshot: info.snapshot,
        retention_gap: match (info.retention_gap, info.offset) {
            (Some(requested), Some(first_retained)) => Some(RetentionGap {
                requested,
                first_retained,
            }),
            _ => None,
        },
    }
}

/// A subscription's channel.
pub fn channel_of(name: &str) -> Result<Channel, Refusal> {
    Channel::parse_cached(name).map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))
}

/// `epoch` as given (empty: none).
pub fn epoch_of(text: &str) -> Result<Option<Epoch>, Refusal> {
    if text.is_empty() {
        return Ok(None);
    }
    Epoch::parse(text).map(Some).ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadRequest,
            "`epoch` must be the 16 hex digits a subscribe reply or history page gave",
        )
    })
}

/// `last` or `since_ms` of a subscription (the JSON `last` and `since`); at most one of them
/// and `from`.
pub fn recent_of(s: &Subscription) -> Result<Option<Recent>, Refusal> {
    if [s.from.is_some(), s.last.is_some(), s.since_ms.is_some()]
        .iter()
        .filter(|x| **x)
        .count()
        > 1
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "give at most one of `from`, `last` and `since_ms`",
        ));
    }
    Ok(match (s.last, s.since_ms) {
        (Some(n), _) => Some(Recent::Last(usize::try_from(n).unwrap_or(usize::MAX))),
        (_, Some(ms)) => Some(Recent::SinceMs(ms)),
        _ => None,
    })
}

/// Makes the subscription `s` on `conn`: at a depth of its own (book channels), from an
/// offset in an epoch, or starting with recent history, as its fields say.
pub fn subscribe(
    conn: &mut Connection,
    channel: &Channel,
    s: &Subscription,
) -> Result<SubscribeInfo, Refusal> {
    let epoch = epoch_of(&s.epoch)?;
    let recent = recent_of(s)?;
    if let Some(depth) = s.depth {
        if s.from.is_some() || recent.is_some() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "`depth` is an option of book channels; `from`, `last` and `since_ms` are for stream channels",
            ));
        }
        return conn.subscribe_book(channel, depth);
    }
    match recent {
        Some(r) => conn.subscribe_recent(channel, r),
        None => conn.subscribe(channel, s.from, epoch),
    }
}

/// One publish item as the hub's request: its channel, its id, and its payload as the JSON
/// its namespace stores.
pub fn request_of(gw: &Gateway, item: PublishItem) -> Result<PublishRequest, Refusal> {
    let channel = channel_of(&item.channel)?;
    let msg_id = match item.msg_id.len() {
        0 => None,
        n if n > MAX_MSG_ID_LEN => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("`msg_id` must be 1 to {MAX_MSG_ID_LEN} bytes"),
            ))
        }
        _ => Some(item.msg_id),
    };
    let ns = channel.namespace();
    let data = json_of(payload_kind(gw.hub(), ns), ns, item.payload.as_ref()).map_err(|e| {
        let code = match e {
            ProtoError::NoPayload => ErrorCode::BadRequest,
            _ => ErrorCode::BadData,
        };
        Refusal::new(code, e.to_string())
    })?;
    Ok(PublishRequest {
        channel,
        msg_id,
        data,
    })
}

/// A refusal as the protocol's `Error`, server paths hidden.
pub fn error_of(r: &Refusal) -> v1::Error {
    v1::Error {
        code: r.code.as_str().to_string(),
        message: tickwire_model::layout::redact_paths(&r.reason).into_owned(),
    }
}

/// Why the server ends a session, and where each stream channel resumes.
pub fn disconnect(code: ErrorCode, message: &str, resume: Vec<(String, u64)>) -> Disconnect {
    Disconnect {
        code: code.as_str().to_string(),
        message: message.to_string(),
        resume: resume.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use tickwire_proto::v1::{server_message::Kind, ServerMessage};

    use super::*;

    #[test]
    fn a_subscribed_message_says_what_the_websocket_reply_says() {
        let info = SubscribeInfo {
            class: Class::Stream,
            offset: Some(42),
            snapshot: false,
            epoch: Some(Epoch(0xc0ffee)),
            retention_gap: Some(7),
        };
        let m = subscribed("chat.lobby", &info);
        assert_eq!(m.class, ChannelClass::Stream as i32);
        assert_eq!(m.epoch, "0000000000c0ffee");
        assert_eq!(
            m.retention_gap,
            Some(RetentionGap {
                requested: 7,
                first_retained: 42
            })
        );
        let msg = ServerMessage {
            kind: Some(Kind::Subscribed(m.clone())),
        };
        let back = ServerMessage::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.kind, Some(Kind::Subscribed(m)));
    }

    #[test]
    fn at_most_one_of_from_last_and_since() {
        let s = Subscription {
            channel: "chat.a".into(),
            from: Some(1),
            last: Some(2),
            ..Subscription::default()
        };
        assert_eq!(recent_of(&s).unwrap_err().code, ErrorCode::BadRequest);
        let s = Subscription {
            last: Some(3),
            ..Subscription::default()
        };
        assert!(matches!(recent_of(&s), Ok(Some(Recent::Last(3)))));
    }
}
