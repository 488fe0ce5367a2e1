//! An instrument's L2 order book as a feed describes it (snapshots and deltas, by price level
//! or by entry id), and the quote (top of book) and depth views published from it. Prices stay
//! the feed's decimal text; levels are ordered by exact value ([`Price`]), never a float, so a
//! price with any number of decimals has its place.

use std::collections::{BTreeMap, HashMap};

use crate::Price;

/// A side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Bid,
    Ask,
}

/// What an entry of a snapshot or delta is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Bid,
    Ask,
    /// A trade print: it sets the last price and is recorded as a trade.
    Trade,
}

impl EntryKind {
    fn side(self) -> Option<Side> {
        match self {
            EntryKind::Bid => Some(Side::Bid),
            EntryKind::Ask => Some(Side::Ask),
            EntryKind::Trade => None,
        }
    }
}

/// What a delta does to its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    New,
    Change,
    Delete,
}

/// One level (or trade) of a full snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level<'a> {
    pub kind: EntryKind,
    pub price: &'a str,
    pub size: Option<&'a str>,
}

/// One incremental change. A feed locates the level by `id` when it uses entry ids (FIX
/// MDEntryID), else by side and price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta<'a> {
    pub action: Action,
    /// `None` only for a change or delete by id (the id knows its side).
    pub kind: Option<EntryKind>,
    pub price: Option<&'a str>,
    pub size: Option<&'a str>,
    pub id: Option<&'a str>,
}

/// A trade seen in a delta, to append to `trades.<SYM>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub price: String,
    pub size: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LevelText {
    px: String,
    size: Option<String>,
}

/// A book as stored by a projection's checkpoint: levels best first per side, the last trade
/// and the entry ids, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BookState {
    pub bids: Vec<(String, Option<String>)>,
    pub asks: Vec<(String, Option<String>)>,
    pub last: Option<(String, Option<String>)>,
    /// Entry id → side and price.
    pub ids: Vec<(String, Side, String)>,
}

/// A level as text: price and size.
pub type LevelView<'a> = (&'a str, Option<&'a str>);

impl LevelText {
    fn view(&self) -> LevelView<'_> {
        (self.px.as_str(), self.size.as_deref())
    }
}

/// One instrument's book plus its last trade.
#[derive(Debug, Default, Clone)]
pub struct Book {
    bids: BTreeMap<Price, LevelText>,
    asks: BTreeMap<Price, LevelText>,
    /// Entry id → where that entry sits, for change and delete by id.
    ids: HashMap<String, (Side, Price)>,
    last: Option<(String, Option<String>)>,
    /// The quote text (without `source`) last returned, so only changes are published (a
    /// re-sent snapshot after a reconnect does not repeat a quote).
    published_quote: Option<String>,
    published_book: Option<String>,
}

impl Book {
    fn levels(&mut self, s: Side) -> &mut BTreeMap<Price, LevelText> {
        match s {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    /// A full snapshot: the book is replaced (the last trade is kept unless the snapshot has
    /// one). Entries whose price is not a decimal are skipped; their count is returned.
    pub fn apply_snapshot(&mut self, levels: &[Level<'_>]) -> usize {
        self.bids.clear();
        self.asks.clear();
        self.ids.clear();
        let mut skipped = 0;
        for l in levels {
            let Some(key) = Price::parse(l.price) else {
                skipped += 1;
                continue;
            };
            let text = LevelText {
                px: l.price.to_string(),
                size: l.size.map(str::to_string),
            };
            match l.kind.side() {
                Some(s) => {
                    self.levels(s).insert(key, text);
                }
                None => self.last = Some((text.px, text.size)),
            }
        }
        skipped
    }

    /// One delta; returns the trade to record when it is one. A delta that names no level it
    /// can find (an unknown id, a price that is not a decimal) changes nothing.
    pub fn apply(&mut self, d: &Delta<'_>) -> Option<Trade> {
        if d.kind == Some(EntryKind::Trade) {
            if d.action == Action::Delete {
                return None;
            }
            let px = d.price?;
            Price::parse(px)?;
            let size = d.size.map(str::to_string);
            self.last = Some((px.to_string(), size.clone()));
            return Some(Trade {
                price: px.to_string(),
                size,
            });
        }
        let known = d.id.and_then(|id| self.ids.get(id).cloned());
        let s = d
            .kind
            .and_then(EntryKind::side)
            .or(known.as_ref().map(|(s, _)| *s))?;
        let key = d.price.and_then(Price::parse);
        match d.action {
            Action::Delete => {
                let at = match &known {
                    Some((_, k)) => Some(k.clone()),
                    None => key,
                };
                if let Some(k) = at {
                    self.levels(s).remove(&k);
                }
                if let Some(id) = d.id {
                    self.ids.remove(id);
                }
            }
            Action::New | Action::Change => {
                // A change by id may move the price: drop the old level first (a change that
                // gives no price keeps the level and changes its size below).
                if let (Some((os, ok)), Some(k)) = (&known, &key) {
                    if ok != k {
                        let (os, ok) = (*os, ok.clone());
                        self.levels(os).remove(&ok);
                    }
                }
                let (k, px) = match (key, d.price) {
                    (Some(k), Some(px)) => (k, px.to_string()),
                    // A change of size only, by id.
                    _ => {
                        let (_, ok) = known?;
                        let lvl = self.levels(s).get_mut(&ok)?;
                        lvl.size = d.size.map(str::to_string);
                        return None;
                    }
                };
                let size = d.size.map(str::to_string);
                self.levels(s).insert(k.clone(), LevelText { px, size });
                if let Some(id) = d.id {
                    self.ids.insert(id.to_string(), (s, k));
                }
            }
        }
        None
    }

    fn best(&self) -> (Option<&LevelText>, Option<&LevelText>) {
        (
            self.bids.iter().next_back().map(|(_, l)| l),
            self.asks.iter().next().map(|(_, l)| l),
        )
    }

    /// The book as text, for a checkpoint.
    pub fn export(&self) -> BookState {
        let own = |l: &LevelText| (l.px.clone(), l.size.clone());
        BookState {
            bids: self.bids.values().rev().map(own).collect(),
            asks: self.asks.values().map(own).collect(),
            last: self.last.clone(),
            ids: self
                .ids
                .iter()
                .filter_map(|(id, (side, key))| {
                    let text = match side {
                        Side::Bid => self.bids.get(key),
                        Side::Ask => self.asks.get(key),
                    }?;
                    Some((id.clone(), *side, text.px.clone()))
                })
                .collect(),
        }
    }

    /// A book from a checkpoint (prices that are not decimals are skipped).
    pub fn import(state: &BookState) -> Book {
        let mut b = Book::default();
        for (side, levels) in [(Side::Bid, &state.bids), (Side::Ask, &state.asks)] {
            for (px, size) in levels {
                if let Some(k) = Price::parse(px) {
                    b.levels(side).insert(
                        k,
                        LevelText {
                            px: px.clone(),
                            size: size.clone(),
                        },
                    );
                }
            }
        }
        b.last = state.last.clone();
        for (id, side, px) in &state.ids {
            if let Some(k) = Price::parse(px) {
                b.ids.insert(id.clone(), (*side, k));
            }
        }
        b
    }

    /// The best bid and ask, as (price, size) text.
    pub fn top(&self) -> (Option<LevelView<'_>>, Option<LevelView<'_>>) {
        let (b, a) = self.best();
        (b.map(LevelText::view), a.map(LevelText::view))
    }

    /// Levels per side, best first, at most `depth` (0: all).
    pub fn depth(&self, depth: usize) -> (Vec<LevelView<'_>>, Vec<LevelView<'_>>) {
        let n = if depth == 0 { usize::MAX } else { depth };
        (
            self.bids
                .values()
                .rev()
                .take(n)
                .map(LevelText::view)
                .collect(),
            self.asks.values().take(n).map(LevelText::view).collect(),
        )
    }

    /// The L1 quote as JSON text if it changed since last time (and is not empty):
    /// `{"ask","ask_size","bid","bid_size","last","source"}`, keys in that (sorted) order.
    pub fn quote_if_changed(&mut self, source: &str) -> Option<String> {
        let (bid, ask) = self.best();
        let mut fields = String::with_capacity(96);
        let mut field = |k: &str, v: &str| {
            if !fields.is_empty() {
                fields.push(',');
            }
            push_json_str(&mut fields, k);
            fields.push(':');
            push_json_str(&mut fields, v);
        };
        if let Some(a) = ask {
            field("ask", &a.px);
            if let Some(z) = &a.size {
                field("ask_size", z);
            }
        }
        if let Some(b) = bid {
            field("bid", &b.px);
            if let Some(z) = &b.size {
                field("bid_size", z);
            }
        }
        if let Some((px, _)) = &self.last {
            field("last", px);
        }
        if fields.is_empty() || self.published_quote.as_ref() == Some(&fields) {
            return None;
        }
        let mut out = String::with_capacity(fields.len() + source.len() + 16);
        out.push('{');
        out.push_str(&fields);
        out.push_str(",\"source\":");
        push_json_str(&mut out, source);
        out.push('}');
        self.published_quote = Some(fields);
        Some(out)
    }

    /// Depth as JSON text, `{"asks":[[px,size],...],"bids":[...]}` (best `depth` levels per
    /// side, all with 0), if it changed since last time.
    pub fn book_if_changed(&mut self, depth: u32) -> Option<String> {
        let n = if depth == 0 {
            usize::MAX
        } else {
            depth as usize
        };
        if self.bids.is_empty() && self.asks.is_empty() && self.published_book.is_none() {
            return None;
        }
        let mut out = String::with_capacity(64);
        let side = |out: &mut String, levels: &mut dyn Iterator<Item = &LevelText>| {
            out.push('[');
            for (i, l) in levels.take(n).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                push_json_str(out, &l.px);
                out.push(',');
                push_json_str(out, l.size.as_deref().unwrap_or_default());
                out.push(']');
            }
            out.push(']');
        };
        out.push_str("{\"asks\":");
        side(&mut out, &mut self.asks.values());
        out.push_str(",\"bids\":");
        side(&mut out, &mut self.bids.values().rev());
        out.push('}');
        if self.published_book.as_ref() == Some(&out) {
            return None;
        }
        self.published_book = Some(out.clone());
        Some(out)
    }
}

/// Appends `s` as a JSON string. Prices and sizes are decimals and need no escaping, so the
/// common case is a plain copy; anything else (a source name) is escaped by serde_json.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // Serializing a str cannot fail.
    if let Ok(j) = serde_json::to_string(s) {
        out.push_str(&j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{json, Value};

    fn parsed(s: Option<String>) -> Value {
        serde_json::from_str(&s.expect("a change")).unwrap()
    }

    fn lvl<'a>(kind: EntryKind, price: &'a str, size: Option<&'a str>) -> Level<'a> {
        Level { kind, price, size }
    }

    fn delta<'a>(
        action: Action,
        kind: EntryKind,
        price: &'a str,
        size: &'a str,
        id: Option<&'a str>,
    ) -> Delta<'a> {
        Delta {
            action,
            kind: Some(kind),
            price: Some(price),
            size: Some(size),
            id,
        }
    }

    #[test]
    fn top_of_book_orders_prices_exactly_and_dedups() {
        let mut b = Book::default();
        b.apply_snapshot(&[
            lvl(EntryKind::Bid, "1.1", Some("5")),
            lvl(EntryKind::Ask, "1.12", Some("7")),
        ]);
        let q = parsed(b.quote_if_changed("t"));
        assert_eq!(q["bid"], "1.1");
        assert_eq!(q["ask_size"], "7");
        assert!(
            b.quote_if_changed("t").is_none(),
            "same quote is not repeated"
        );
        // 1.10001 > 1.1 although it is longer text.
        b.apply(&delta(Action::New, EntryKind::Bid, "1.10001", "2", None));
        assert_eq!(parsed(b.quote_if_changed("t"))["bid"], "1.10001");
        b.apply(&delta(Action::Delete, EntryKind::Bid, "1.10001", "0", None));
        assert_eq!(parsed(b.quote_if_changed("t"))["bid"], "1.1");
        let t = b.apply(&delta(Action::New, EntryKind::Trade, "1.11", "3", None));
        assert_eq!(t.unwrap().price, "1.11");
        assert_eq!(parsed(b.quote_if_changed("t"))["last"], "1.11");
        let bk = parsed(b.book_if_changed(0));
        assert_eq!(bk["bids"][0][0], "1.1");
    }

    #[test]
    fn a_price_with_nineteen_decimals_has_its_level() {
        let mut b = Book::default();
        b.apply(&delta(Action::New, EntryKind::Bid, "10", "1", None));
        b.apply(&delta(
            Action::New,
            EntryKind::Bid,
            "10.0000000000000000001",
            "2",
            None,
        ));
        assert_eq!(
            parsed(b.quote_if_changed("t"))["bid"],
            "10.0000000000000000001"
        );
        assert_eq!(b.depth(0).0.len(), 2);
    }

    #[test]
    fn export_import_round_trips() {
        let mut b = Book::default();
        b.apply(&delta(Action::New, EntryKind::Bid, "1.1", "5", Some("b1")));
        b.apply(&delta(Action::New, EntryKind::Ask, "1.2", "6", None));
        b.apply(&delta(Action::New, EntryKind::Trade, "1.15", "1", None));
        let mut c = Book::import(&b.export());
        assert_eq!(c.export(), b.export());
        c.apply(&Delta {
            action: Action::Delete,
            kind: None,
            price: None,
            size: None,
            id: Some("b1"),
        });
        assert_eq!(c.top().0, None, "ids survive the round trip");
    }

    #[test]
    fn change_by_entry_id_moves_the_level() {
        let mut b = Book::default();
        b.apply(&delta(Action::New, EntryKind::Ask, "2.5", "1", Some("a1")));
        b.apply(&delta(
            Action::Change,
            EntryKind::Ask,
            "2.4",
            "1",
            Some("a1"),
        ));
        assert_eq!(b.asks.len(), 1);
        assert_eq!(parsed(b.quote_if_changed("t"))["ask"], "2.4");
        b.apply(&Delta {
            action: Action::Delete,
            kind: None,
            price: None,
            size: None,
            id: Some("a1"),
        });
        assert!(b.asks.is_empty());
    }

    /// The hand-written JSON is byte for byte what serde_json writes for the same map (sorted
    /// keys), so stored quotes and books keep their format; a source that needs escaping is
    /// escaped.
    #[test]
    fn json_text_matches_serde_json() {
        let mut b = Book::default();
        b.apply_snapshot(&[
            lvl(EntryKind::Bid, "1.1", Some("5")),
            lvl(EntryKind::Ask, "1.12", None),
            lvl(EntryKind::Bid, "1.09", Some("8")),
        ]);
        b.apply(&delta(Action::New, EntryKind::Trade, "1.11", "3", None));
        let src = "fix:\"lp\\1\"\n\u{8}\u{1f}";
        let want =
            json!({"bid": "1.1", "bid_size": "5", "ask": "1.12", "last": "1.11", "source": src});
        assert_eq!(b.quote_if_changed(src).unwrap(), want.to_string());
        let want = json!({"bids": [["1.1", "5"], ["1.09", "8"]], "asks": [["1.12", ""]]});
        assert_eq!(b.book_if_changed(0).unwrap(), want.to_string());
        assert_eq!(b.book_if_changed(0), None);
        let want = json!({"bids": [["1.1", "5"]], "asks": [["1.12", ""]]});
        assert_eq!(b.book_if_changed(1).unwrap(), want.to_string());
    }
}
