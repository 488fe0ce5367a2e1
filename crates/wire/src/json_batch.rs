//! The JSON body of `POST /v1/publish`: one publication `{"channel":..,"data":..,"msg_id":..}`
//! or an array of them (docs/protocol.md).
//!
//! serde reads it through [`JsonItem`]; in front of serde sits a hand-written reader for the
//! shape nearly every publisher sends (ASCII, strings without escapes, `data` a scalar or a
//! flat object of scalars). It answers `None` whenever it is not sure, and the caller asks
//! serde, so what it accepts is exactly what serde accepts with the same items, and every
//! refusal is worded by serde (fuzzed: crates/wire/fuzz, `publish_batch`). serde's general
//! reader was ~13 % of server CPU under JSON ingest.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use tickwire_model::{
    jsonlex::{object, scalar, skip_ws, string},
    scan_flat_object, SchemaFields,
};

use crate::BatchItem;

/// One publication of a JSON publish body as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonItem<'a> {
    /// Borrowed from the body unless it holds escapes.
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    msg_id: Option<Cow<'a, str>>,
}

impl JsonItem<'_> {
    /// The item's fields, borrowed (`data` is its exact JSON text).
    pub fn borrowed(&self) -> BatchItem<'_> {
        BatchItem {
            channel: &self.channel,
            msg_id: self.msg_id.as_deref(),
            data: self.data.get().as_bytes(),
        }
    }
}

/// Most items [`scan_json_batch`] makes room for before it reads any: what a body is likely to
/// hold, not what it may (a larger batch grows its vector as usual).
const RESERVE_MAX: usize = 8192;

/// One publication read by [`scan_json_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedItem<'a> {
    pub item: BatchItem<'a>,
    /// The quote/trade fields of `data` when it is a flat object, read while skipping it, so
    /// the schema check need not read it again (`tickwire_model::validate_schema_fields`).
    pub fields: Option<SchemaFields<'a>>,
}

/// The items of a JSON publish body (`single`: one object, else an array of them) read by
/// hand, or `None` when the body is not of the common shape or not valid: then serde decides.
pub fn scan_json_batch(text: &str, single: bool) -> Option<Vec<ScannedItem<'_>>> {
    let d = text.as_bytes();
    if !d.is_ascii() {
        return None;
    }
    // Room for an item per 128 bytes of an array body up front (a quote item is ~150), at
    // most `RESERVE_MAX`: grown from empty, a 5,000-item batch's vector was copied a dozen
    // times (~1 % of server CPU under JSON ingest). A single publication is one item, however
    // large its data.
    let reserve = if single {
        1
    } else {
        (d.len() / 128).clamp(1, RESERVE_MAX)
    };
    let mut items = Vec::with_capacity(reserve);
    let mut i = skip_ws(d, 0);
    if single {
        i = item(text, i, &mut items)?;
    } else {
        if d.get(i) != Some(&b'[') {
            return None;
        }
        i = skip_ws(d, i + 1);
        if d.get(i) == Some(&b']') {
            i += 1;
        } else {
            loop {
                i = skip_ws(d, item(text, i, &mut items)?);
                match d.get(i)? {
                    b',' => i = skip_ws(d, i + 1),
                    b']' => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
    }
    (skip_ws(d, i) == d.len()).then_some(items)
}

/// One publication object at `i`, pushed to `out`; the index after its `}`.
fn item<'a>(text: &'a str, i: usize, out: &mut Vec<ScannedItem<'a>>) -> Option<usize> {
    let (scanned, end) = item_with(text, i, |_, _| None)?;
    out.push(scanned);
    Some(end)
}

/// The publication object at `i` and the index after its `}`. A key other than `channel`,
/// `data` and `msg_id` goes to `other` (with where its value starts), which reads the value
/// and returns the index after it, or `None` to give up (the WebSocket publish command has
/// `id` and `op` too; the HTTP envelope has nothing else).
pub(crate) fn item_with<'a>(
    text: &'a str,
    i: usize,
    mut other: impl FnMut(&[u8], usize) -> Option<usize>,
) -> Option<(ScannedItem<'a>, usize)> {
    let d = text.as_bytes();
    let mut channel: Option<&str> = None;
    let mut data: Option<&[u8]> = None;
    let mut fields = None;
    // Outer `Some`: the field was present (serde refuses a repeated one); inner: not `null`.
    let mut msg_id: Option<Option<&str>> = None;
    // The content of the string at `i` as a `str` (ASCII, so any index is a char boundary).
    let str_at = |i: usize| -> Option<(&'a str, usize)> {
        let (_, end) = string(d, i)?;
        Some((text.get(i + 1..end - 1)?, end))
    };
    let end = object(d, i, |key, i| match key {
        b"channel" if channel.is_none() => {
            let (s, end) = str_at(i)?;
            channel = Some(s);
            Some(end)
        }
        b"msg_id" if msg_id.is_none() => {
            if d.get(i..i + 4) == Some(b"null") {
                msg_id = Some(None);
                Some(i + 4)
            } else {
                let (s, end) = str_at(i)?;
                msg_id = Some(Some(s));
                Some(end)
            }
        }
        b"data" if data.is_none() => {
            // A raw value: serde checks its syntax but not repeated keys inside it.
            let end = if d.get(i) == Some(&b'{') {
                let (f, end) = scan_flat_object(d, i)?;
                fields = f;
                end
            } else {
                scalar(d, i)?
            };
            data = Some(d.get(i..end)?);
            Some(end)
        }
        b"channel" | b"msg_id" | b"data" => None, // repeated: serde words the error
        _ => other(key, i),
    })?;
    let item = ScannedItem {
        item: BatchItem {
            channel: channel?,
            msg_id: msg_id.flatten(),
            data: data?,
        },
        fields,
    };
    Some((item, end))
}

/// The whole body through serde in one call: the reference the hand-written reader is tested
/// against (the server's fallback reads item by item, to name every bad index).
pub fn parse_json_batch(text: &str, single: bool) -> serde_json::Result<Vec<JsonItem<'_>>> {
    if single {
        serde_json::from_str::<JsonItem<'_>>(text).map(|i| vec![i])
    } else {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_model::{validate_schema_fields, validate_schema_json, Schema};

    fn agree(text: &str, single: bool) -> bool {
        let fast = scan_json_batch(text, single);
        if let Some(items) = &fast {
            let reference = parse_json_batch(text, single).map(|v| {
                v.iter()
                    .map(|i| {
                        let b = i.borrowed();
                        (
                            b.channel.to_string(),
                            b.msg_id.map(str::to_string),
                            b.data.to_vec(),
                        )
                    })
                    .collect::<Vec<_>>()
            });
            let got: Vec<_> = items
                .iter()
                .map(|s| &s.item)
                .map(|b| {
                    (
                        b.channel.to_string(),
                        b.msg_id.map(str::to_string),
                        b.data.to_vec(),
                    )
                })
                .collect();
            assert_eq!(reference.ok(), Some(got), "{text:?} single={single}");
            // The fields read on the way agree with the schema check over the data alone.
            for s in items {
                if let Some(f) = &s.fields {
                    for schema in [Schema::Quote, Schema::Trade] {
                        assert_eq!(
                            validate_schema_fields(schema, f),
                            validate_schema_json(schema, s.item.data),
                            "{text:?}"
                        );
                    }
                }
            }
        }
        fast.is_some()
    }

    #[test]
    fn reads_the_common_shapes() {
        for (t, single) in [
            (r#"[{"channel":"quotes.A","data":{"bid":"1.1","ask":"1.2","ts":17}}]"#, false),
            (
                " [ {\"channel\" : \"quotes.A\", \"data\": {} , \"msg_id\":\"m-1\"} ,\n{\"data\":5,\"channel\":\"c.x\",\"msg_id\":null} ] ",
                false,
            ),
            ("[]", false),
            (r#"{"channel":"chat.x","data":"hi"}"#, true),
            (r#"{"channel":"chat.x","data":{"a":1,"a":2}}"#, true),
        ] {
            assert!(agree(t, single), "{t}");
        }
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for (t, single) in [
            (r#"[{"channel":"q.A","data":{"x":[1]}}]"#, false),
            (r#"[{"channel":"q.\u0041","data":1}]"#, false),
            (r#"[{"channel":"q.A","data":1,"extra":2}]"#, false),
            (r#"[{"channel":"q.A","channel":"q.B","data":1}]"#, false),
            (r#"[{"channel":"q.A"}]"#, false),
            (r#"[{"channel":"q.A","data":1},]"#, false),
            (r#"[{"channel":"q.A","data":1}] x"#, false),
            (r#"[{"channel":"é","data":1}]"#, false),
            (r#"{"channel":"q.A","data":1}"#, false),
            (r#"[{"channel":"q.A","data":1}]"#, true),
            (r#"[{"channel":1,"data":1}]"#, false),
            (r#"[{"channel":"q.A","data":01}]"#, false),
            ("\x0c[]", false),
        ] {
            assert!(!agree(t, single), "{t}");
        }
    }

    proptest::proptest! {
        /// Whenever the hand-written reader answers, serde reads the same items.
        #[test]
        fn agrees_with_serde(
            items in proptest::collection::vec((
                proptest::collection::vec((
                    proptest::prop_oneof!["channel", "data", "msg_id", "[a-z]{0,3}"],
                    proptest::prop_oneof![
                        "\"[ -~]{0,8}\"",
                        "-?[0-9]{1,3}(\\.[0-9]{1,2})?",
                        "null|true|fals",
                        "\\{\\}|\\{\"b\":\"1.5\", \"t\":7\\}|\\{\"a\":\\[\\]\\}|\\[\\]",
                        "\\{\"bid\":\"1.5\",\"ask\":(\"2\"|2|null)\\}|\\{\"price\":\"x\",\"price\":\"1\"\\}|\\{\"last\":\"-0.5\",\"size\":\"3\"\\}",
                    ],
                    "[ \t\n]{0,1}",
                ), 0..4),
            ), 0..3),
            single in proptest::bool::ANY,
            tail in "[ ,\\]x]{0,1}",
        ) {
            let obj = |fields: &Vec<(String, String, String)>| {
                let parts: Vec<String> = fields.iter().map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}")).collect();
                format!("{{{}}}", parts.join(","))
            };
            let text = if single {
                items.first().map(|(f,)| obj(f)).unwrap_or_default() + &tail
            } else {
                let objs: Vec<String> = items.iter().map(|(f,)| obj(f)).collect();
                format!("[{}]{tail}", objs.join(","))
            };
            agree(&text, single);
        }
    }
}
