use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;
use tickwire_model::{Channel, Epoch, ModelError, Offset};

use crate::ErrorCode;

/// Largest command frame accepted. A publish carries its data inside the command, so this is
/// the namespace message limit plus room for the envelope; the server may set a lower one.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Subscribe {
        channel: Channel,
        from: Option<Offset>,
        /// The stream epoch `from` belongs to (as a subscribe reply gave it); a server whose
        /// stream has another epoch refuses instead of replaying a new stream's offsets.
        epoch: Option<Epoch>,
        /// Instead of `from`: the channel's newest N messages, then live.
        last: Option<u64>,
        /// Instead of `from`: the messages appended since this Unix time (ms), then live.
        since: Option<u64>,
        /// Also push who joins and leaves the channel (namespaces with presence).
        presence: bool,
        /// Book channels: the best N levels a side instead of all the channel keeps (0: all).
        depth: Option<u32>,
    },
    Unsubscribe {
        channel: Channel,
    },
    Publish {
        channel: Channel,
        msg_id: Option<String>,
        data: Box<str>,
    },
    Ping,
    /// Presents a credential (API key or JWT) on a connection opened without one.
    Connect {
        token: String,
    },
    /// A fresh token for the same user, before (or within the grace period after) the
    /// connection's token expires.
    Refresh {
        token: String,
    },
    /// Replaces the data of the message at `offset` (its author or an admin key).
    Edit {
        channel: Channel,
        offset: Offset,
        data: Box<str>,
        msg_id: Option<String>,
    },
    /// Deletes the message at `offset` (its author or an admin key).
    Delete {
        channel: Channel,
        offset: Offset,
        msg_id: Option<String>,
    },
    /// Full-text search over the channels the client may read.
    Search(SearchQuery),
    /// The user has read `channel` up to `offset` (its read marker).
    Read {
        channel: Channel,
        offset: Offset,
    },
    /// The user's read markers with unread counts.
    Markers,
    /// Who is in a channel now.
    Presence {
        channel: Channel,
    },
}

/// A search request (WebSocket `search`, `GET /v1/search`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchQuery {
    /// Words, `"phrases"`, `prefix*`, `-excluded`.
    pub q: String,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only messages of this user (`from.sub`).
    pub from_user: Option<String>,
    /// Appended at or after this Unix time, ms.
    pub since: Option<u64>,
    /// Appended before this Unix time, ms.
    pub until: Option<u64>,
    /// Most hits (1 to [`MAX_SEARCH_LIMIT`]; default 20).
    pub limit: Option<u64>,
    /// Hits passed over first (paging), at most [`MAX_SEARCH_SKIP`].
    pub skip: Option<u64>,
    /// `newest` (default) or `relevance`.
    pub order: Option<String>,
}

/// Most hits one search returns.
pub const MAX_SEARCH_LIMIT: u64 = 100;
/// Deepest page a search reaches (`skip`).
pub const MAX_SEARCH_SKIP: u64 = 1000;

/// A parsed command with the id the reply must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: u64,
    pub op: Op,
}

/// Why a command frame was refused; `id` is set when it could be read, so the reply can name it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{message}")]
pub struct CommandError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

/// One field of a command, read without building a `serde_json::Value`: strings stay borrowed
/// from the frame where they carry no escapes, and arrays and objects (never valid for the
/// fields that use this) are skipped rather than built. Every publish reads its channel
/// through here, so an allocation saved is one saved per message.
enum Field<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer that fits in u64.
    Uint(u64),
    Str(std::borrow::Cow<'a, str>),
    /// Any other number (negative, fractional, too large), an array or an object: the wrong
    /// type for every field read through here.
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Field<'a>, E> {
                Ok(Field::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Field<'a>, E> {
                Ok(Field::Uint(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Field<'a>, E> {
                Ok(u64::try_from(n).map_or(Field::Other, Field::Uint))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Str(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Field<'a>, E> {
                Ok(Field::Str(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Field<'a>, E> {
                Ok(Field::Str(std::borrow::Cow::Owned(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Field<'a>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Field<'a>, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawCommand<'a> {
    #[serde(borrow)]
    id: Option<Field<'a>>,
    op: Option<&'a str>,
    #[serde(borrow)]
    channel: Option<Field<'a>>,
    #[serde(borrow)]
    from: Option<Field<'a>>,
    #[serde(borrow)]
    epoch: Option<Field<'a>>,
    #[serde(borrow)]
    last: Option<Field<'a>>,
    #[serde(borrow)]
    since: Option<Field<'a>>,
    #[serde(borrow)]
    msg_id: Option<Field<'a>>,
    #[serde(borrow)]
    token: Option<Field<'a>>,
    #[serde(borrow)]
    offset: Option<Field<'a>>,
    #[serde(borrow)]
    q: Option<Field<'a>>,
    #[serde(borrow)]
    from_user: Option<Field<'a>>,
    #[serde(borrow)]
    until: Option<Field<'a>>,
    #[serde(borrow)]
    limit: Option<Field<'a>>,
    #[serde(borrow)]
    skip: Option<Field<'a>>,
    #[serde(borrow)]
    order: Option<Field<'a>>,
    #[serde(borrow)]
    presence: Option<Field<'a>>,
    #[serde(borrow)]
    depth: Option<Field<'a>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

fn err(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError {
        id,
        code,
        message: message.into(),
    }
}

/// Longest client message id accepted; ids are kept in the idempotency window.
pub const MAX_MSG_ID_LEN: usize = 128;

/// Parses one text frame into a command. (A plain publish is read faster by
/// [`crate::scan_publish`], which falls back to this.)
pub fn parse_command(frame: &[u8]) -> Result<Command, CommandError> {
    if frame.len() > MAX_COMMAND_BYTES {
        // Still name the command in the reply when its id can be read; the transport caps
        // frames (4 MiB), so this scan is bounded.
        #[derive(Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow)]
            id: Option<Field<'a>>,
        }
        let id = match serde_json::from_slice::<IdOnly<'_>>(frame) {
            Ok(IdOnly {
                id: Some(Field::Uint(n)),
            }) => Some(n),
            _ => None,
        };
        return Err(err(
            id,
            ErrorCode::TooLarge,
            format!(
                "command is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                frame.len()
            ),
        ));
    }
    let raw: RawCommand<'_> = serde_json::from_slice(frame).map_err(|e| {
        err(
            None,
            ErrorCode::BadJson,
            format!("not a JSON command object: {e}"),
        )
    })?;
    let id = match raw.id {
        Some(Field::Uint(n)) => Some(n),
        _ => None,
    }
    .ok_or_else(|| {
        err(
            None,
            ErrorCode::BadRequest,
            "`id` is required and must be a non-negative integer",
        )
    })?;
    let op = raw
        .op
        .ok_or_else(|| err(Some(id), ErrorCode::BadRequest, "`op` is required"))?;
    let channel = || -> Result<Channel, CommandError> {
        match &raw.channel {
            None => Err(err(
                Some(id),
                ErrorCode::BadRequest,
                format!("`channel` is required for `{op}`"),
            )),
            Some(Field::Str(s)) => Channel::parse_cached(s)
                .map_err(|e: ModelError| err(Some(id), ErrorCode::BadChannel, e.to_string())),
            Some(_) => Err(err(
                Some(id),
                ErrorCode::BadRequest,
                "`channel` must be a string",
            )),
        }
    };
    let uint = |v: &Option<Field<'_>>, name: &str| match v {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Uint(n)) => Ok(Some(*n)),
        Some(_) => Err(err(
            Some(id),
            ErrorCode::BadRequest,
            format!("`{name}` must be a non-negative integer"),
        )),
    };
    let required_uint = |v: &Option<Field<'_>>, name: &str| {
        uint(v, name)?.ok_or_else(|| {
            err(
                Some(id),
                ErrorCode::BadRequest,
                format!("`{name}` (a non-negative integer) is required for `{op}`"),
            )
        })
    };
    let msg_id = || match &raw.msg_id {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Str(s)) if !s.is_empty() && s.len() <= MAX_MSG_ID_LEN => {
            Ok(Some(s.to_string()))
        }
        Some(_) => Err(err(
            Some(id),
            ErrorCode::BadRequest,
            format!("`msg_id` must be a non-empty string of at most {MAX_MSG_ID_LEN} bytes"),
        )),
    };
    let op = match op {
        "subscribe" => {
            let from = match &raw.from {
                None | Some(Field::Null) => None,
                Some(Field::Uint(n)) => Some(*n),
                Some(_) => {
                    return Err(err(
                        Some(id),
                        ErrorCode::BadRequest,
                        "`from` must be a non-negative integer offset",
                    ))
                }
            };
            let epoch = match &raw.epoch {
                None | Some(Field::Null) => None,
                Some(Field::Str(e)) => Some(Epoch::parse(e).ok_or_else(|| {
                    err(
                        Some(id),
                        ErrorCode::BadRequest,
                        "`epoch` must be the 16 hex digits a subscribe reply gave",
                    )
                })?),
                Some(_) => {
                    return Err(err(
                        Some(id),
                        ErrorCode::BadRequest,
                        "`epoch` must be a string of 16 hex digits",
                    ))
                }
            };
            let last = uint(&raw.last, "last")?;
            let since = uint(&raw.since, "since")?;
            if [from.is_some(), last.is_some(), since.is_some()]
                .iter()
                .filter(|x| **x)
                .count()
                > 1
            {
                return Err(err(
                    Some(id),
                    ErrorCode::BadRequest,
                    "give at most one of `from`, `last` and `since`",
                ));
            }
            let presence = match &raw.presence {
                None | Some(Field::Null) => false,
                Some(Field::Bool(b)) => *b,
                Some(_) => {
                    return Err(err(
                        Some(id),
                        ErrorCode::BadRequest,
                        "`presence` must be true or false",
                    ))
                }
            };
            // A depth is for book channels, which are state: the stream options make no sense
            // with it, and a client that sends both has mistaken one channel for another.
            let depth = match uint(&raw.depth, "depth")? {
                None => None,
                Some(d) => Some(u32::try_from(d).map_err(|_| {
                    err(
                        Some(id),
                        ErrorCode::BadRequest,
                        format!("`depth` must be at most {} levels", u32::MAX),
                    )
                })?),
            };
            if depth.is_some() && (from.is_some() || last.is_some() || since.is_some()) {
                return Err(err(
                    Some(id),
                    ErrorCode::BadRequest,
                    "`depth` is an option of book channels; `from`, `last` and `since` are for stream channels",
                ));
            }
            Op::Subscribe {
                channel: channel()?,
                from,
                epoch,
                last,
                since,
                presence,
                depth,
            }
        }
        "unsubscribe" => Op::Unsubscribe {
            channel: channel()?,
        },
        "publish" => {
            let data = raw.data.ok_or_else(|| {
                err(
                    Some(id),
                    ErrorCode::BadRequest,
                    "`data` is required for `publish`",
                )
            })?;
            Op::Publish {
                channel: channel()?,
                msg_id: msg_id()?,
                data: data.get().into(),
            }
        }
        "edit" => {
            let data = raw.data.ok_or_else(|| {
                err(
                    Some(id),
                    ErrorCode::BadRequest,
                    "`data` is required for `edit` (the message's new data)",
                )
            })?;
            Op::Edit {
                channel: channel()?,
                offset: required_uint(&raw.offset, "offset")?,
                data: data.get().into(),
                msg_id: msg_id()?,
            }
        }
        "delete" => Op::Delete {
            channel: channel()?,
            offset: required_uint(&raw.offset, "offset")?,
            msg_id: msg_id()?,
        },
        "read" => Op::Read {
            channel: channel()?,
            offset: required_uint(&raw.offset, "offset")?,
        },
        "markers" => Op::Markers,
        "presence" => Op::Presence {
            channel: channel()?,
        },
        "search" => {
            let q = match &raw.q {
                Some(Field::Str(q)) => q.to_string(),
                _ => {
                    return Err(err(
                        Some(id),
                        ErrorCode::BadRequest,
                        "`q` (a string) is required for `search`",
                    ))
                }
            };
            let string = |v: &Option<Field<'_>>, name: &str| match v {
                None | Some(Field::Null) => Ok(None),
                Some(Field::Str(s)) => Ok(Some(s.to_string())),
                Some(_) => Err(err(
                    Some(id),
                    ErrorCode::BadRequest,
                    format!("`{name}` must be a string"),
                )),
            };
            Op::Search(SearchQuery {
                q,
                channel: match raw.channel {
                    None | Some(Field::Null) => None,
                    Some(_) => Some(channel()?),
                },
                from_user: string(&raw.from_user, "from_user")?,
                since: uint(&raw.since, "since")?,
                until: uint(&raw.until, "until")?,
                limit: uint(&raw.limit, "limit")?,
                skip: uint(&raw.skip, "skip")?,
                order: string(&raw.order, "order")?,
            })
        }
        "ping" => Op::Ping,
        "connect" | "refresh" => {
            let token = match &raw.token {
                Some(Field::Str(t)) if !t.is_empty() => t.to_string(),
                _ => {
                    return Err(err(
                        Some(id),
                        ErrorCode::BadRequest,
                        format!("`token` (a non-empty string) is required for `{op}`"),
                    ))
                }
            };
            if op == "connect" {
                Op::Connect { token }
            } else {
                Op::Refresh { token }
            }
        }
        other => {
            return Err(err(
                Some(id),
                ErrorCode::UnknownOp,
                format!("unknown op `{other}`; expected subscribe, unsubscribe, publish, edit, delete, search, read, markers, presence, ping, connect or refresh"),
            ))
        }
    };
    Ok(Command { id, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(frame: &str) -> ErrorCode {
        parse_command(frame.as_bytes()).unwrap_err().code
    }

    #[test]
    fn parses_each_op() {
        let c = parse_command(br#"{"id":1,"op":"subscribe","channel":"quotes.EURUSD"}"#).unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(
            c.op,
            Op::Subscribe {
                channel: Channel::parse("quotes.EURUSD").unwrap(),
                from: None,
                epoch: None,
                last: None,
                since: None,
                presence: false,
                depth: None,
            }
        );
        let c = parse_command(br#"{"id":2,"op":"subscribe","channel":"chat.lobby","from":42}"#)
            .unwrap();
        assert_eq!(
            c.op,
            Op::Subscribe {
                channel: Channel::parse("chat.lobby").unwrap(),
                from: Some(42),
                epoch: None,
                last: None,
                since: None,
                presence: false,
                depth: None,
            }
        );
        let c = parse_command(br#"{"id":3,"op":"publish","channel":"chat.lobby","msg_id":"c-1","data":{"text":"hi"}}"#)
            .unwrap();
        assert_eq!(
            c.op,
            Op::Publish {
                channel: Channel::parse("chat.lobby").unwrap(),
                msg_id: Some("c-1".into()),
                data: r#"{"text":"hi"}"#.into()
            }
        );
        assert_eq!(
            parse_command(br#"{"id":4,"op":"ping"}"#).unwrap().op,
            Op::Ping
        );
        assert_eq!(
            parse_command(br#"{"id":6,"op":"connect","token":"a.b.c"}"#)
                .unwrap()
                .op,
            Op::Connect {
                token: "a.b.c".into()
            }
        );
        assert_eq!(
            parse_command(br#"{"id":7,"op":"refresh","token":"k"}"#)
                .unwrap()
                .op,
            Op::Refresh { token: "k".into() }
        );
        assert_eq!(code(r#"{"id":8,"op":"refresh"}"#), ErrorCode::BadRequest);
        let c = parse_command(br#"{"id":5,"op":"unsubscribe","channel":"chat.lobby"}"#).unwrap();
        assert_eq!(
            c.op,
            Op::Unsubscribe {
                channel: Channel::parse("chat.lobby").unwrap()
            }
        );
    }

    #[test]
    fn parses_the_chat_ops() {
        let op = |f: &str| parse_command(f.as_bytes()).unwrap().op;
        assert_eq!(
            op(r#"{"id":1,"op":"edit","channel":"chat.a","offset":7,"data":{"text":"x"}}"#),
            Op::Edit {
                channel: Channel::parse("chat.a").unwrap(),
                offset: 7,
                data: r#"{"text":"x"}"#.into(),
                msg_id: None,
            }
        );
        assert_eq!(
            op(r#"{"id":1,"op":"delete","channel":"chat.a","offset":7,"msg_id":"d1"}"#),
            Op::Delete {
                channel: Channel::parse("chat.a").unwrap(),
                offset: 7,
                msg_id: Some("d1".into()),
            }
        );
        assert_eq!(
            op(r#"{"id":1,"op":"read","channel":"chat.a","offset":9}"#),
            Op::Read {
                channel: Channel::parse("chat.a").unwrap(),
                offset: 9
            }
        );
        assert_eq!(op(r#"{"id":1,"op":"markers"}"#), Op::Markers);
        assert_eq!(
            op(r#"{"id":1,"op":"search","q":"hi \"you\"","from_user":"42","limit":5}"#),
            Op::Search(SearchQuery {
                q: r#"hi "you""#.into(),
                from_user: Some("42".into()),
                limit: Some(5),
                ..SearchQuery::default()
            })
        );
        match op(r#"{"id":1,"op":"subscribe","channel":"chat.a","presence":true}"#) {
            Op::Subscribe { presence, .. } => assert!(presence),
            other => panic!("unexpected {other:?}"),
        }
        match op(r#"{"id":1,"op":"subscribe","channel":"book.EURUSD","depth":5}"#) {
            Op::Subscribe { depth, .. } => assert_eq!(depth, Some(5)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code(r#"{"id":1,"op":"edit","channel":"chat.a","data":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":1,"op":"delete","channel":"chat.a","offset":-1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"id":1,"op":"search"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"id":1,"op":"subscribe","channel":"chat.a","presence":1}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn refuses_bad_commands_with_codes() {
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"op":"ping"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":-1,"op":"ping"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":1,"op":"dance"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"id":1,"op":"subscribe"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"id":1,"op":"subscribe","channel":"nope"}"#),
            ErrorCode::BadChannel
        );
        assert_eq!(
            code(r#"{"id":1,"op":"subscribe","channel":"chat.x","from":-3}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":1,"op":"subscribe","channel":"chat.x","from":"3"}"#),
            ErrorCode::BadRequest
        );
        for bad in [r#"-1"#, r#"2.5"#, r#""5""#, r#"4294967296"#, r#"true"#] {
            let frame = format!(r#"{{"id":1,"op":"subscribe","channel":"book.X","depth":{bad}}}"#);
            assert_eq!(code(&frame), ErrorCode::BadRequest, "{frame}");
        }
        assert_eq!(
            code(r#"{"id":1,"op":"subscribe","channel":"book.X","depth":3,"last":5}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":1,"op":"publish","channel":"chat.x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":1,"op":"publish","channel":"chat.x","msg_id":5,"data":1}"#),
            ErrorCode::BadRequest
        );
        let e = parse_command(br#"{"id":9,"op":"dance"}"#).unwrap_err();
        assert_eq!(e.id, Some(9));
        let big = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert_eq!(parse_command(&big).unwrap_err().code, ErrorCode::TooLarge);
        let big = format!(
            r#"{{"id":77,"op":"publish","channel":"chat.x","data":"{}"}}"#,
            "z".repeat(MAX_COMMAND_BYTES)
        );
        let e = parse_command(big.as_bytes()).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::TooLarge, Some(77)));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_command(&bytes);
        }

        #[test]
        fn publish_round_trips_data(text in "[a-zA-Z0-9 ]{0,40}", id in 0u64..u64::MAX) {
            let data = serde_json::json!({"text": text}).to_string();
            let frame = format!(r#"{{"id":{id},"op":"publish","channel":"chat.r","data":{data}}}"#);
            let c = parse_command(frame.as_bytes()).unwrap();
            assert_eq!(c.id, id);
            match c.op {
                Op::Publish { data: d, .. } => assert_eq!(&*d, data.as_str()),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
