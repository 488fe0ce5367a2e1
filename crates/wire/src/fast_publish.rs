//! The fast path for the one command a publisher sends in a loop:
//! `{"id":N,"op":"publish","channel":"…","data":…}` (with an optional `msg_id`).
//!
//! serde_json took about a microsecond to read such a frame into the general command struct
//! (nineteen optional fields, UTF-8 checked string by string), the largest single cost of one
//! WebSocket connection publishing as fast as it can. [`scan_publish`] reads only that shape,
//! with the HTTP envelope's reader (`json_batch::item_with`, over `model::jsonlex`): ASCII,
//! strings without escapes, `data` a scalar or a flat object whose quote/trade fields it notes
//! on the way, so the schema check need not read the data again. For anything else it answers
//! `None` and the caller uses [`crate::parse_command`], which gives the same answer or the
//! error it always did: the tests here and the `ws_command` fuzz target check that whenever
//! this answers, `parse_command` reads the same publish.

use tickwire_model::jsonlex::{scalar, skip_ws, string};

use crate::{command::MAX_MSG_ID_LEN, json_batch::item_with, ScannedItem, MAX_COMMAND_BYTES};

/// A publish command read by [`scan_publish`], borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedPublish<'a> {
    /// The command id the reply carries.
    pub id: u64,
    /// Channel (not yet validated as a channel name), msg_id, data and the data's quote/trade
    /// fields.
    pub item: ScannedItem<'a>,
}

/// The publish in `frame` when it has the plain shape; `None` sends it to
/// [`crate::parse_command`].
pub fn scan_publish(frame: &str) -> Option<ScannedPublish<'_>> {
    let d = frame.as_bytes();
    if d.len() > MAX_COMMAND_BYTES || !d.is_ascii() {
        return None;
    }
    let (mut id, mut op) = (None, false);
    let (item, end) = item_with(frame, skip_ws(d, 0), |key, i| match key {
        b"id" if id.is_none() => {
            let (n, end) = uint(frame, i)?;
            id = Some(n);
            Some(end)
        }
        b"op" if !op => {
            let (name, end) = string(d, i)?;
            op = name == b"publish";
            op.then_some(end)
        }
        _ => None,
    })?;
    if skip_ws(d, end) != d.len() || !op {
        return None;
    }
    // `"data":null` reads as no data, and a bad msg_id is refused: the general parser's words.
    if item.item.data == b"null" {
        return None;
    }
    if let Some(m) = item.item.msg_id {
        if m.is_empty() || m.len() > MAX_MSG_ID_LEN {
            return None;
        }
    }
    Some(ScannedPublish { id: id?, item })
}

/// A command id at `i`: a JSON number (`jsonlex::scalar`) that reads as a u64, and the index
/// after it. A sign, a fraction, an exponent or an overflow: the general parser's.
fn uint(frame: &str, i: usize) -> Option<(u64, usize)> {
    let end = scalar(frame.as_bytes(), i)?;
    Some((frame.get(i..end)?.parse().ok()?, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_command, Op};
    use proptest::strategy::Strategy;

    /// Where the scan answers, `parse_command` reads the same publish (the channel name is
    /// validated by the caller; a bad one goes to `parse_command` for its error).
    fn agree(frame: &str) -> bool {
        let Some(p) = scan_publish(frame) else {
            return false;
        };
        match parse_command(frame.as_bytes()) {
            Ok(c) => {
                assert_eq!(c.id, p.id, "{frame}");
                match c.op {
                    Op::Publish {
                        channel,
                        msg_id,
                        data,
                    } => {
                        assert_eq!(channel.as_str(), p.item.item.channel, "{frame}");
                        assert_eq!(msg_id.as_deref(), p.item.item.msg_id, "{frame}");
                        assert_eq!(data.as_bytes(), p.item.item.data, "{frame}");
                    }
                    other => panic!("{frame}: {other:?}"),
                }
            }
            Err(e) => assert!(
                tickwire_model::Channel::parse(p.item.item.channel).is_err(),
                "{frame}: {e:?}"
            ),
        }
        true
    }

    #[test]
    fn reads_the_plain_publish_shapes() {
        for frame in [
            r#"{"id":1,"op":"publish","channel":"quotes.EURUSD","data":{"bid":"1.1","n":-0,"x":2.5e-3,"t":true,"f":false,"z":null}}"#,
            r#" { "op" : "publish" , "data" : "x" , "channel" : "chat.a" , "id" : 0 , "msg_id" : "m-1" } "#,
            r#"{"id":18446744073709551615,"op":"publish","channel":"quotes.X","data":{}}"#,
            r#"{"id":7,"op":"publish","channel":"quotes.X","data":-12.5E+7,"msg_id":null}"#,
            r#"{"id":7,"op":"publish","channel":"nope","data":1}"#,
        ] {
            assert!(agree(frame), "{frame}");
        }
        let p = scan_publish(
            r#"{"id":3,"op":"publish","channel":"quotes.A","data":{"bid":"1.5","ask":"1.6"}}"#,
        );
        assert!(p.is_some_and(|p| p.item.fields.is_some()));
    }

    #[test]
    fn hands_everything_else_to_the_general_parser() {
        for frame in [
            r#"{"id":1,"op":"subscribe","channel":"quotes.X"}"#,
            r#"{"op":"subscribe","id":1,"channel":"quotes.X","data":1}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":null}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X"}"#,
            r#"{"id":1,"op":"publish","data":1}"#,
            r#"{"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":-1,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":1.0,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":1e2,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":01,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":18446744073709551616,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1,"id":2}"#,
            r#"{"id":1,"op":"publish","op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1,"extra":2}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1,"msg_id":""}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":"é"}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":"a\"b"}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":[1]}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":{"a":{}}}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":01}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1} x"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1"#,
            r#"{"i\u0064":1,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"[1,"publish"]"#,
        ] {
            assert!(!agree(frame), "{frame}");
        }
        let long = format!(
            r#"{{"id":1,"op":"publish","channel":"quotes.X","msg_id":"{}","data":1}}"#,
            "m".repeat(MAX_MSG_ID_LEN + 1)
        );
        assert!(!agree(&long));
    }

    proptest::proptest! {
        /// Frames assembled from publish-like pieces, valid and not: wherever the scan
        /// answers, the general parser reads the same publish.
        #[test]
        fn agrees_with_the_general_parser(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(r#""id":1"#.to_string()),
                    "[0-9]{1,21}".prop_map(|n| format!(r#""id":{n}"#)),
                    proptest::strategy::Just(r#""op":"publish""#.to_string()),
                    proptest::strategy::Just(r#""op":"ping""#.to_string()),
                    "[a-z.A-Z]{0,12}".prop_map(|c| format!(r#""channel":"{c}""#)),
                    "[ -~]{0,6}".prop_map(|m| format!(r#""msg_id":"{m}""#)),
                    r#"[ -~\t\n\\]{0,24}"#.prop_map(|d| format!(r#""data":{d}"#)),
                    r#"[\[\]{}",:0-9a-z.eE+\- \\]{0,24}"#.prop_map(|d| format!(r#""data":{d}"#)),
                ],
                0..7,
            ),
            sep in "[ ,]{1,2}",
        ) {
            let frame = format!("{{{}}}", parts.join(&sep));
            let _ = agree(&frame);
        }

        /// The publish frames a quote publisher sends are always read by the scan.
        #[test]
        fn reads_every_plain_quote(id in 0u64..u64::MAX, sym in "[A-Z]{1,8}", bid in "[0-9]{1,4}\\.[0-9]{1,6}") {
            let frame = format!(
                r#"{{"id":{id},"op":"publish","channel":"quotes.{sym}","data":{{"bid":"{bid}","ask":"{bid}","ts":17}}}}"#
            );
            proptest::prop_assert!(agree(&frame), "{}", frame);
        }
    }
}
