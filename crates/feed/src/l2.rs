//! The values of a book channel (`book.<SYM>`): a **snapshot** of the levels a subscription
//! keeps, or a **delta** (levels to set; size zero deletes), each numbered with the book's
//! sequence number and carrying a CRC32 checksum of the top levels after it, so a client
//! detects a gap (`prev` is not the sequence number it holds) or a divergence (the checksum of
//! its book differs) and subscribes again for a fresh snapshot (docs/books.md).
//!
//! ```json
//! {"snapshot":true,"seq":41,"checksum":3496367375,"depth":10,"bids":[["1.1","5"]],"asks":[["1.12","3"]]}
//! {"seq":42,"prev":41,"checksum":667803890,"bids":[["1.1","0"],["1.09","2"]],"asks":[]}
//! ```
//!
//! Levels are `[price, size]` decimal strings, best first (highest bid, lowest ask). A delta
//! may jump more than one number (`prev` 38, `seq` 42): a slow subscriber's deltas conflated
//! per level ([`merge`]). Prices are keyed and ordered as exact decimals ([`Price`]); the text
//! of a level is the one last sent for it, and the checksum is taken over that text. A
//! subscriber that asked for its own depth N holds a [`DepthView`] of the book instead, served
//! as the differences between views.

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};
use tickwire_model::check_decimal;

use crate::Price;

mod view;
pub use view::{DepthView, LevelChange, ViewChanges};

/// Levels per side the checksum covers (fewer when the book has fewer).
pub const CHECKSUM_LEVELS: usize = 10;

/// One level as text: price and size.
pub type LevelText = (String, String);

/// A snapshot or a delta of a book channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Msg {
    /// Replace the book (a snapshot) instead of changing it.
    pub snapshot: bool,
    /// The book's sequence number after this value.
    pub seq: u64,
    /// Deltas: the sequence number of the book this applies to.
    pub prev: u64,
    /// [`checksum`] of the book after this value.
    pub checksum: u32,
    /// Snapshots: levels per side the channel keeps (0: all).
    pub depth: u32,
    /// Best first.
    pub bids: Vec<LevelText>,
    /// Best first.
    pub asks: Vec<LevelText>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The JSON text, field order fixed (snapshot, seq, prev, checksum, depth, bids, asks).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(default, skip_serializing_if = "is_false")]
    snapshot: bool,
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<u64>,
    checksum: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    depth: Option<u32>,
    #[serde(borrow)]
    bids: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    #[serde(borrow)]
    asks: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl L2Msg {
    /// Reads a book channel value; a sentence saying what is wrong otherwise. Prices and sizes
    /// must be exact decimals within the protocol's range (docs/protocol.md), and a snapshot
    /// has no `prev` while a delta has one below its `seq`.
    pub fn parse(data: &[u8]) -> Result<L2Msg, String> {
        let w: Wire<'_> = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        match (w.snapshot, w.prev) {
            (true, Some(_)) => return Err("a snapshot has no `prev`".into()),
            (false, None) => return Err("a delta needs `prev` (the seq it applies to)".into()),
            (false, Some(p)) if p >= w.seq => {
                return Err(format!("`prev` {p} must be below `seq` {}", w.seq))
            }
            _ => {}
        }
        let side = |levels: Vec<(Cow<'_, str>, Cow<'_, str>)>, name: &str| {
            levels
                .into_iter()
                .map(|(p, s)| {
                    check_decimal(p.as_bytes())
                        .map_err(|e| format!("{name} price {p:?}: {}", problem(e)))?;
                    check_decimal(s.as_bytes())
                        .map_err(|e| format!("{name} size {s:?}: {}", problem(e)))?;
                    Ok((p.into_owned(), s.into_owned()))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(L2Msg {
            snapshot: w.snapshot,
            seq: w.seq,
            prev: w.prev.unwrap_or(0),
            checksum: w.checksum,
            depth: w.depth.unwrap_or(0),
            bids: side(w.bids, "bid")?,
            asks: side(w.asks, "ask")?,
        })
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        fn pairs(v: &[LevelText]) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
            v.iter()
                .map(|(p, s)| (Cow::Borrowed(p.as_str()), Cow::Borrowed(s.as_str())))
                .collect()
        }
        let w = Wire {
            snapshot: self.snapshot,
            seq: self.seq,
            prev: (!self.snapshot).then_some(self.prev),
            checksum: self.checksum,
            depth: self.snapshot.then_some(self.depth),
            bids: pairs(&self.bids),
            asks: pairs(&self.asks),
        };
        // Strings and integers only: serializing cannot fail.
        serde_json::to_string(&w).unwrap_or_default()
    }

    /// Whether the data is a snapshot, without reading the rest: book values are written by
    /// [`L2Msg::to_json`], which puts `snapshot` first.
    pub fn is_snapshot_text(data: &[u8]) -> bool {
        data.starts_with(br#"{"snapshot":true"#)
    }
}

fn problem(e: tickwire_model::DecimalProblem) -> &'static str {
    match e {
        tickwire_model::DecimalProblem::NotDecimal => "not a decimal string",
        tickwire_model::DecimalProblem::TooManyPlaces => "more than 28 digits after the point",
        tickwire_model::DecimalProblem::TooLarge => "more digits than the exact range holds",
    }
}

/// Whether a size deletes its level: any spelling of zero ("0", "0.00").
pub fn is_zero(size: &str) -> bool {
    Price::parse(size).is_some_and(|p| p.is_zero())
}

/// The checksum of a book: CRC32 (IEEE 802.3, as zlib's `crc32`) of the concatenated text of
/// the best [`CHECKSUM_LEVELS`] asks (lowest first) and then the best bids (highest first),
/// each level written as its price then its size, each with the decimal point removed and
/// then its leading zeros (`"0.00120"` → `"120"`, `"12.5"` → `"125"`).
pub fn checksum<'a>(
    bids: impl Iterator<Item = (&'a str, &'a str)>,
    asks: impl Iterator<Item = (&'a str, &'a str)>,
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut put = |t: &str| {
        let mut leading = true;
        for b in t.bytes() {
            if b == b'.' {
                continue;
            }
            if leading && b == b'0' {
                continue;
            }
            leading = false;
            h.update(&[b]);
        }
    };
    for (p, s) in asks.take(CHECKSUM_LEVELS) {
        put(p);
        put(s);
    }
    for (p, s) in bids.take(CHECKSUM_LEVELS) {
        put(p);
        put(s);
    }
    h.finalize()
}

/// A book as a book channel's subscriber holds it: levels by exact price, the sequence number
/// it is at, and whether it is known at all (a delta that does not follow leaves it unknown
/// until the next snapshot).
#[derive(Debug, Clone, Default)]
pub struct L2Book {
    bids: BTreeMap<Price, LevelText>,
    asks: BTreeMap<Price, LevelText>,
    seq: u64,
    depth: u32,
    known: bool,
}

/// What applying a value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Ok,
    /// A delta whose `prev` is not the book's `seq` (or no snapshot yet): the book is unknown.
    Gap,
}

impl L2Book {
    /// The book after a snapshot.
    pub fn from_snapshot(m: &L2Msg) -> L2Book {
        let mut b = L2Book::default();
        b.apply(m);
        b
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn is_known(&self) -> bool {
        self.known
    }

    /// Levels per side the channel keeps (from its snapshots; 0: all).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Applies a snapshot (replaces) or a delta (sets levels; zero deletes). A delta that does
    /// not follow the book's sequence number leaves the book unknown.
    pub fn apply(&mut self, m: &L2Msg) -> Applied {
        if m.snapshot {
            self.bids.clear();
            self.asks.clear();
            self.depth = m.depth;
        } else if !self.known || m.prev != self.seq {
            self.known = false;
            return Applied::Gap;
        }
        set_levels(&mut self.bids, &m.bids);
        set_levels(&mut self.asks, &m.asks);
        self.seq = m.seq;
        self.known = true;
        Applied::Ok
    }

    /// Sets one level (size zero deletes) without touching the sequence number: for a
    /// producer building the next delta.
    pub fn set(&mut self, bid: bool, price: &str, size: &str) {
        let side = if bid { &mut self.bids } else { &mut self.asks };
        set_levels(side, &[(price.to_string(), size.to_string())]);
    }

    /// Bids best (highest) first.
    pub fn bids(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.bids
            .values()
            .rev()
            .map(|(p, s)| (p.as_str(), s.as_str()))
    }

    /// Asks best (lowest) first.
    pub fn asks(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.asks.values().map(|(p, s)| (p.as_str(), s.as_str()))
    }

    /// The level at `price` on a side, by exact value.
    pub fn level(&self, bid: bool, price: &Price) -> Option<&LevelText> {
        if bid {
            self.bids.get(price)
        } else {
            self.asks.get(price)
        }
    }

    /// [`checksum`] of this book.
    pub fn checksum(&self) -> u32 {
        checksum(self.bids(), self.asks())
    }

    /// This book as a snapshot value (`None` while it is unknown).
    pub fn snapshot(&self) -> Option<L2Msg> {
        if !self.known {
            return None;
        }
        let own = |(p, s): (&str, &str)| (p.to_string(), s.to_string());
        Some(L2Msg {
            snapshot: true,
            seq: self.seq,
            prev: 0,
            checksum: self.checksum(),
            depth: self.depth,
            bids: self.bids().map(own).collect(),
            asks: self.asks().map(own).collect(),
        })
    }

    /// Levels per side, for tests and comparisons: best first.
    pub fn levels(&self) -> (Vec<LevelText>, Vec<LevelText>) {
        let own = |(p, s): (&str, &str)| (p.to_string(), s.to_string());
        (
            self.bids().map(own).collect(),
            self.asks().map(own).collect(),
        )
    }
}

fn set_levels(side: &mut BTreeMap<Price, LevelText>, levels: &[LevelText]) {
    for (p, s) in levels {
        // Levels were checked as decimals when the value was read or built.
        let Some(key) = Price::parse(p) else { continue };
        if is_zero(s) {
            side.remove(&key);
        } else {
            side.insert(key, (p.clone(), s.clone()));
        }
    }
}

/// One value with the effect of `values` applied in order: what a slow subscriber gets
/// instead of all of them (the newest size per level, the last sequence number and checksum).
/// A snapshot among them replaces what came before it; deltas after a snapshot fold into it
/// (zero sizes drop levels); deltas after a delta keep their zero sizes, since the client
/// still holds those levels. `None` for no values.
pub fn merge(values: &[L2Msg]) -> Option<L2Msg> {
    let start = values.iter().rposition(|m| m.snapshot).unwrap_or(0);
    let first = values.get(start)?;
    let mut bids: BTreeMap<Price, LevelText> = BTreeMap::new();
    let mut asks: BTreeMap<Price, LevelText> = BTreeMap::new();
    let fold = |side: &mut BTreeMap<Price, LevelText>, levels: &[LevelText], drop_zero: bool| {
        for (p, s) in levels {
            let Some(key) = Price::parse(p) else { continue };
            if drop_zero && is_zero(s) {
                side.remove(&key);
            } else {
                side.insert(key, (p.clone(), s.clone()));
            }
        }
    };
    let snapshot = first.snapshot;
    let mut last = first;
    for m in &values[start..] {
        fold(&mut bids, &m.bids, snapshot);
        fold(&mut asks, &m.asks, snapshot);
        last = m;
    }
    Some(L2Msg {
        snapshot,
        seq: last.seq,
        prev: first.prev,
        checksum: last.checksum,
        depth: first.depth,
        bids: bids.into_values().rev().collect(),
        asks: asks.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(p: &str, s: &str) -> LevelText {
        (p.to_string(), s.to_string())
    }

    fn snap(seq: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> L2Msg {
        let mut b = L2Book::default();
        let m = L2Msg {
            snapshot: true,
            seq,
            bids: bids.iter().map(|(p, s)| lv(p, s)).collect(),
            asks: asks.iter().map(|(p, s)| lv(p, s)).collect(),
            ..L2Msg::default()
        };
        b.apply(&m);
        b.snapshot().unwrap()
    }

    fn delta(book: &mut L2Book, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> L2Msg {
        let mut m = L2Msg {
            seq: book.seq() + 1,
            prev: book.seq(),
            bids: bids.iter().map(|(p, s)| lv(p, s)).collect(),
            asks: asks.iter().map(|(p, s)| lv(p, s)).collect(),
            ..L2Msg::default()
        };
        let mut after = book.clone();
        assert_eq!(after.apply(&m), Applied::Ok);
        m.checksum = after.checksum();
        *book = after;
        m
    }

    /// The formula as documented, against values computed by Python's `zlib.crc32`:
    /// asks first (1.12/3 → "112" "3", 1.2/3 → "12" "3"), then bids (1.1/5 → "11" "5"):
    /// `zlib.crc32(b"1123123115")`.
    #[test]
    fn checksum_follows_the_documented_formula() {
        let b = snap(1, &[("1.1", "5")], &[("1.12", "3"), ("1.2", "3")]);
        assert_eq!(b.checksum, 1_082_956_473);
        // Leading zeros go after the point does: "0.00120" → "120", "010" → "10";
        // `zlib.crc32(b"12010")`.
        assert_eq!(
            checksum(std::iter::empty(), [("0.00120", "010")].into_iter()),
            3_299_771_535
        );
    }

    #[test]
    fn json_round_trips_and_is_checked() {
        let s = snap(7, &[("1.1", "5")], &[("1.12", "3")]);
        let text = s.to_json();
        assert!(L2Msg::is_snapshot_text(text.as_bytes()));
        assert_eq!(L2Msg::parse(text.as_bytes()).unwrap(), s);
        let mut b = L2Book::from_snapshot(&s);
        let d = delta(&mut b, &[("1.1", "0")], &[]);
        let text = d.to_json();
        assert!(
            text.starts_with(r#"{"seq":8,"prev":7,"checksum":"#),
            "{text}"
        );
        assert_eq!(L2Msg::parse(text.as_bytes()).unwrap(), d);
        for bad in [
            r#"{"seq":1,"checksum":0,"bids":[],"asks":[]}"#,
            r#"{"snapshot":true,"seq":1,"prev":0,"checksum":0,"bids":[],"asks":[]}"#,
            r#"{"seq":1,"prev":1,"checksum":0,"bids":[],"asks":[]}"#,
            r#"{"seq":2,"prev":1,"checksum":0,"bids":[["1.1",5]],"asks":[]}"#,
            r#"{"seq":2,"prev":1,"checksum":0,"bids":[["1e3","5"]],"asks":[]}"#,
            r#"{"seq":2,"prev":1,"checksum":0,"bids":[],"asks":[],"x":1}"#,
        ] {
            assert!(L2Msg::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_delta_that_does_not_follow_leaves_the_book_unknown() {
        let s = snap(3, &[("1", "1")], &[]);
        let mut b = L2Book::from_snapshot(&s);
        let mut d = delta(&mut b.clone(), &[("2", "1")], &[]);
        d.prev = 4;
        d.seq = 5;
        assert_eq!(b.apply(&d), Applied::Gap);
        assert!(b.snapshot().is_none());
        b.apply(&s);
        assert!(b.is_known());
    }

    /// Prices are keyed by value: "1.10" and "1.1" are one level (the newer text wins), and
    /// "1.10001" sorts above "1.1".
    #[test]
    fn levels_are_keyed_and_ordered_as_exact_decimals() {
        let s = snap(1, &[("1.1", "5"), ("1.10001", "1")], &[]);
        let mut b = L2Book::from_snapshot(&s);
        assert_eq!(b.levels().0, vec![lv("1.10001", "1"), lv("1.1", "5")]);
        delta(&mut b, &[("1.10", "7")], &[]);
        assert_eq!(b.levels().0, vec![lv("1.10001", "1"), lv("1.10", "7")]);
        delta(&mut b, &[("1.1000", "0.000")], &[]);
        assert_eq!(b.levels().0, vec![lv("1.10001", "1")]);
    }

    /// A merged run of deltas, applied to the book before it, gives the book after the last
    /// one; a snapshot followed by deltas merges into the snapshot of the end state.
    #[test]
    fn merging_has_the_effect_of_applying_in_order() {
        let s = snap(1, &[("1", "1"), ("0.9", "2")], &[("1.1", "1")]);
        let mut server = L2Book::from_snapshot(&s);
        let d1 = delta(&mut server, &[("1", "0"), ("0.95", "3")], &[]);
        let d2 = delta(&mut server, &[("0.95", "4")], &[("1.1", "0"), ("1.2", "1")]);
        let d3 = delta(&mut server, &[("1", "2")], &[("1.2", "0")]);
        let m = merge(&[d1.clone(), d2.clone(), d3.clone()]).unwrap();
        assert_eq!((m.prev, m.seq, m.checksum), (1, 4, d3.checksum));
        let mut client = L2Book::from_snapshot(&s);
        assert_eq!(client.apply(&m), Applied::Ok);
        assert_eq!(client.levels(), server.levels());
        assert_eq!(client.checksum(), m.checksum);
        let ms = merge(&[s.clone(), d1, d2, d3]).unwrap();
        assert!(ms.snapshot);
        assert_eq!(L2Book::from_snapshot(&ms).levels(), server.levels());
        assert_eq!(ms.checksum, server.checksum());
        // A snapshot in the middle (a restarted producer) replaces what came before it.
        let s2 = snap(9, &[("5", "5")], &[]);
        let m = merge(&[s, s2.clone()]).unwrap();
        assert_eq!(m, s2);
    }
}
