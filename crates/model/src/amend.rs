//! Edits and deletes of stream messages (chat lines, notifications). An amendment is a record on
//! the same channel as the message it changes, appended after it:
//!
//! ```json
//! {"from":{"sub":"42"},"$edit":17,"data":{"from":{"sub":"42"},"text":"fixed typo"}}
//! {"from":{"sub":"42"},"$delete":17}
//! ```
//!
//! `$edit` names the offset of the message it replaces and `data` is that message's data from
//! now on, whole (the original author's `from` kept); `$delete` leaves a tombstone. A tombstone
//! is final: an edit after it changes nothing. Only the server writes these records for clients
//! (after checking who wrote the target), so a client's plain publish with a top-level `$edit`
//! or `$delete` is refused: the keys are reserved. Readers (history, search, replaying clients)
//! apply them in stream order.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::Offset;

/// The key of an edit record: the offset of the message it replaces.
pub const EDIT_KEY: &str = "$edit";
/// The key of a delete record: the offset of the message it removes.
pub const DELETE_KEY: &str = "$delete";

/// Whether a top-level key of a message is reserved for amendment records.
pub fn is_reserved_key(key: &str) -> bool {
    key == EDIT_KEY || key == DELETE_KEY
}

/// What an amendment does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The target's data is this JSON text from now on.
    Edit(&'a str),
    /// The target is gone.
    Delete,
}

/// An amendment record, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amendment<'a> {
    /// The offset of the message it changes (same namespace, same channel, earlier).
    pub target: Offset,
    pub change: Change<'a>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "$edit")]
    edit: Option<Offset>,
    #[serde(rename = "$delete")]
    delete: Option<Offset>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Whether `data` may be an amendment at all: its text holds `"$edit"` or `"$delete"` outside
/// a string (inside one the quotes would be escaped). A cheap test that passes over the bytes
/// once, so readers of every message (projections, unread counts) parse only the few that are.
pub fn maybe_amendment(data: &[u8]) -> bool {
    contains(data, b"\"$edit\"") || contains(data, b"\"$delete\"")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads `data` as an amendment record; `None` for every other message (and for a record that
/// names both or neither key, or an edit without `data`).
pub fn parse(data: &[u8]) -> Option<Amendment<'_>> {
    if !maybe_amendment(data) {
        return None;
    }
    let raw: Raw<'_> = serde_json::from_slice(data).ok()?;
    match (raw.edit, raw.delete, raw.data) {
        (Some(target), None, Some(d)) => Some(Amendment {
            target,
            change: Change::Edit(d.get()),
        }),
        (None, Some(target), _) => Some(Amendment {
            target,
            change: Change::Delete,
        }),
        _ => None,
    }
}

/// The record that replaces message `target` with `data` (JSON text), before the server's `from`
/// stamp is put in front.
pub fn edit_record(target: Offset, data: &str) -> Vec<u8> {
    format!("{{\"{EDIT_KEY}\":{target},\"data\":{data}}}").into_bytes()
}

/// The record that deletes message `target`, before the server's `from` stamp.
pub fn delete_record(target: Offset) -> Vec<u8> {
    format!("{{\"{DELETE_KEY}\":{target}}}").into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_round_trip_and_other_messages_are_not_amendments() {
        let e = edit_record(17, r#"{"text":"fixed"}"#);
        let a = parse(&e).unwrap();
        assert_eq!(a.target, 17);
        match a.change {
            Change::Edit(d) => assert_eq!(d, r#"{"text":"fixed"}"#),
            Change::Delete => panic!("an edit"),
        }
        let d = delete_record(3);
        assert_eq!(
            parse(&d),
            Some(Amendment {
                target: 3,
                change: Change::Delete
            })
        );
        let stamped = br#"{"from":{"sub":"42"},"$delete":9}"#;
        assert_eq!(parse(stamped).unwrap().target, 9);
        // A chat line that only talks about the keys is not one.
        assert!(parse(br#"{"text":"\"$edit\": 5"}"#).is_none());
        assert!(!maybe_amendment(br#"{"text":"\"$edit\": 5"}"#));
        assert!(parse(br#"{"$edit":5}"#).is_none(), "an edit needs data");
        assert!(parse(br#"{"$edit":5,"$delete":5,"data":1}"#).is_none());
        assert!(parse(b"[1,2]").is_none());
        assert!(is_reserved_key("$edit") && is_reserved_key("$delete") && !is_reserved_key("edit"));
    }
}
