//! The JSON form of L2 snapshots and deltas on `depth.<SYM>` (a stream namespace): what a feed
//! publishes so the book projection builds `book.<SYM>` the same way whichever edge it came in
//! on (the FIX initiator turns W and X into these; any API-key publisher may send them).
//!
//! ```json
//! {"snapshot":[{"side":"bid","price":"1.1","size":"5"},{"side":"ask","price":"1.12"}]}
//! {"updates":[{"action":"new","side":"bid","price":"1.1","size":"5","id":"b7"},
//!             {"action":"change","id":"b7","size":"4"},
//!             {"action":"delete","side":"ask","price":"1.12"},
//!             {"action":"trade","price":"1.11","size":"3"}]}
//! ```
//!
//! Prices and sizes are decimal strings. A level is found by `id` when one is given and known,
//! else by `side` and `price`. `trade` sets the last price.

use serde::{Deserialize, Serialize};

use crate::book::{Action, Delta, EntryKind, Level, Side};

/// One message of the depth namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthMessage<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Vec<SnapshotLevel<'a>>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<Vec<Update<'a>>>,
}

/// A level of a snapshot; `side` is `bid`, `ask` or `trade` (the last trade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLevel<'a> {
    pub side: SideOrTrade,
    #[serde(borrow)]
    pub price: &'a str,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub size: Option<&'a str>,
}

/// `bid`, `ask` or `trade`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideOrTrade {
    Bid,
    Ask,
    Trade,
}

/// What an update does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateAction {
    New,
    Change,
    Delete,
    Trade,
}

/// One update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update<'a> {
    pub action: UpdateAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub price: Option<&'a str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub size: Option<&'a str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

impl SideOrTrade {
    pub fn kind(self) -> EntryKind {
        match self {
            SideOrTrade::Bid => EntryKind::Bid,
            SideOrTrade::Ask => EntryKind::Ask,
            SideOrTrade::Trade => EntryKind::Trade,
        }
    }

    pub fn of(kind: EntryKind) -> SideOrTrade {
        match kind {
            EntryKind::Bid => SideOrTrade::Bid,
            EntryKind::Ask => SideOrTrade::Ask,
            EntryKind::Trade => SideOrTrade::Trade,
        }
    }
}

impl<'a> SnapshotLevel<'a> {
    pub fn level(&self) -> Level<'a> {
        Level {
            kind: self.side.kind(),
            price: self.price,
            size: self.size,
        }
    }
}

impl<'a> Update<'a> {
    /// The book delta this update is.
    pub fn delta(&self) -> Delta<'a> {
        let side_kind = self.side.map(|s| match s {
            Side::Bid => EntryKind::Bid,
            Side::Ask => EntryKind::Ask,
        });
        let (action, kind) = match self.action {
            UpdateAction::New => (Action::New, side_kind),
            UpdateAction::Change => (Action::Change, side_kind),
            UpdateAction::Delete => (Action::Delete, side_kind),
            UpdateAction::Trade => (Action::New, Some(EntryKind::Trade)),
        };
        Delta {
            action,
            kind,
            price: self.price,
            size: self.size,
            id: self.id,
        }
    }

    /// The update for a book delta.
    pub fn of(d: &Delta<'a>) -> Update<'a> {
        let (action, side) = match (d.kind, d.action) {
            (Some(EntryKind::Trade), _) => (UpdateAction::Trade, None),
            (k, a) => (
                match a {
                    Action::New => UpdateAction::New,
                    Action::Change => UpdateAction::Change,
                    Action::Delete => UpdateAction::Delete,
                },
                k.and_then(|k| match k {
                    EntryKind::Bid => Some(Side::Bid),
                    EntryKind::Ask => Some(Side::Ask),
                    EntryKind::Trade => None,
                }),
            ),
        };
        Update {
            action,
            side,
            price: d.price,
            size: d.size,
            id: d.id,
        }
    }
}

/// Parses one depth message; a sentence saying what is wrong otherwise.
pub fn parse(data: &[u8]) -> Result<DepthMessage<'_>, String> {
    let m: DepthMessage<'_> = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    if m.snapshot.is_none() && m.updates.is_none() {
        return Err("a depth message has `snapshot` or `updates`".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Book;

    #[test]
    fn round_trip_and_apply() {
        let text = br#"{"snapshot":[{"side":"bid","price":"1.1","size":"5"},{"side":"ask","price":"1.12"}]}"#;
        let m = parse(text).unwrap();
        let mut book = Book::default();
        let levels: Vec<Level<'_>> = m.snapshot.unwrap().iter().map(|l| l.level()).collect();
        book.apply_snapshot(&levels);
        let text = br#"{"updates":[{"action":"new","side":"bid","price":"1.2","size":"1","id":"x"},{"action":"change","id":"x","size":"3"},{"action":"trade","price":"1.15","size":"2"}]}"#;
        let m = parse(text).unwrap();
        let mut trades = 0;
        for u in m.updates.unwrap() {
            if book.apply(&u.delta()).is_some() {
                trades += 1;
            }
            assert_eq!(Update::of(&u.delta()), u);
        }
        assert_eq!(trades, 1);
        assert_eq!(book.top().0, Some(("1.2", Some("3"))));
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"{"updates":[{"action":"explode"}]}"#).is_err());
    }
}
