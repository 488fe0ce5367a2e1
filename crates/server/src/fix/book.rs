//! An instrument's order book as a provider describes it in W and X, and the quote (top of
//! book) and depth views published from it. Prices stay the provider's decimal text; ordering
//! uses an exact integer key, never a float.

use std::collections::{BTreeMap, HashMap};

use tickwire_fix::{
    md::{IncrementalEntry, MdEntryType, MdUpdateAction, SnapshotEntry},
    Decimal,
};

/// A price as an exact integer at scale 10^-18 (`i64` mantissa × 10^(18-scale) fits `i128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PxKey(i128);

impl PxKey {
    pub fn of(d: &Decimal<'_>) -> Option<PxKey> {
        let (m, scale) = d.to_scaled()?;
        if scale > 18 {
            return None;
        }
        Some(PxKey(i128::from(m) * 10i128.pow(18 - scale)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Bid,
    Ask,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Level {
    px: String,
    size: Option<String>,
}

/// One instrument's book plus its last trade.
#[derive(Debug, Default)]
pub(crate) struct Book {
    bids: BTreeMap<PxKey, Level>,
    asks: BTreeMap<PxKey, Level>,
    /// MDEntryID → where that entry sits, for Change/Delete by ID.
    ids: HashMap<String, (Side, PxKey)>,
    last: Option<(String, Option<String>)>,
    /// The quote JSON (without `source`) last published, to publish only changes (a re-sent
    /// snapshot after a reconnect does not repeat a quote).
    published_quote: Option<String>,
    published_book: Option<String>,
}

/// A trade seen in an X, to append to `trades.<SYM>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trade {
    pub price: String,
    pub size: Option<String>,
}

fn side(t: Option<MdEntryType>) -> Option<Side> {
    match t {
        Some(MdEntryType::Bid) => Some(Side::Bid),
        Some(MdEntryType::Offer) => Some(Side::Ask),
        _ => None,
    }
}

impl Book {
    fn levels(&mut self, s: Side) -> &mut BTreeMap<PxKey, Level> {
        match s {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    /// W: the whole state is replaced.
    pub fn apply_snapshot(&mut self, entries: &[SnapshotEntry<'_>]) {
        self.bids.clear();
        self.asks.clear();
        self.ids.clear();
        for e in entries {
            match (side(Some(e.entry_type)), e.px) {
                (Some(s), Some(px)) => {
                    if let Some(k) = PxKey::of(&px) {
                        self.levels(s).insert(
                            k,
                            Level {
                                px: px.as_str().to_string(),
                                size: e.size.map(|z| z.as_str().to_string()),
                            },
                        );
                    }
                }
                (None, Some(px)) if e.entry_type == MdEntryType::Trade => {
                    self.last = Some((
                        px.as_str().to_string(),
                        e.size.map(|z| z.as_str().to_string()),
                    ));
                }
                _ => {}
            }
        }
    }

    /// One X entry; returns a trade to record, if it is one.
    pub fn apply_incremental(&mut self, e: &IncrementalEntry<'_>) -> Option<Trade> {
        if e.entry_type == Some(MdEntryType::Trade) {
            if e.update_action == MdUpdateAction::Delete {
                return None;
            }
            let px = e.px?;
            let size = e.size.map(|z| z.as_str().to_string());
            self.last = Some((px.as_str().to_string(), size.clone()));
            return Some(Trade {
                price: px.as_str().to_string(),
                size,
            });
        }
        // Where the entry is: by MDEntryID when the provider uses IDs, else by price.
        let known = e.entry_id.and_then(|id| self.ids.get(id).copied());
        let s = side(e.entry_type).or(known.map(|(s, _)| s))?;
        let key = e.px.as_ref().and_then(PxKey::of);
        match e.update_action {
            MdUpdateAction::Delete => {
                if let Some(k) = key.filter(|_| known.is_none()).or(known.map(|(_, k)| k)) {
                    self.levels(s).remove(&k);
                }
                if let Some(id) = e.entry_id {
                    self.ids.remove(id);
                }
            }
            MdUpdateAction::New | MdUpdateAction::Change => {
                // A Change by ID may move the price: drop the old level first.
                if let Some((os, ok)) = known {
                    if Some(ok) != key {
                        self.levels(os).remove(&ok);
                    }
                }
                let (k, px) = match (key, e.px) {
                    (Some(k), Some(px)) => (k, px.as_str().to_string()),
                    // A Change of size only, by ID.
                    _ => {
                        let (_, ok) = known?;
                        let lvl = self.levels(s).get_mut(&ok)?;
                        lvl.size = e.size.map(|z| z.as_str().to_string());
                        return None;
                    }
                };
                let size = e.size.map(|z| z.as_str().to_string());
                self.levels(s).insert(k, Level { px, size });
                if let Some(id) = e.entry_id {
                    self.ids.insert(id.to_string(), (s, k));
                }
            }
        }
        None
    }

    fn best(&self) -> (Option<&Level>, Option<&Level>) {
        (
            self.bids.iter().next_back().map(|(_, l)| l),
            self.asks.iter().next().map(|(_, l)| l),
        )
    }

    /// The L1 quote as JSON text if it changed since last time (and is not empty):
    /// `{"ask","ask_size","bid","bid_size","last","source"}`, keys in that (sorted) order,
    /// byte for byte what serializing a `serde_json` map gave, without building one per change.
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
        let side = |out: &mut String, levels: &mut dyn Iterator<Item = &Level>| {
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
pub(crate) fn push_json_str(out: &mut String, s: &str) {
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

    fn d(s: &str) -> Decimal<'_> {
        Decimal::new(s).unwrap()
    }

    fn parsed(s: Option<String>) -> Value {
        serde_json::from_str(&s.expect("a change")).unwrap()
    }

    fn snap<'a>(t: MdEntryType, px: &'a str, sz: Option<&'a str>) -> SnapshotEntry<'a> {
        SnapshotEntry {
            entry_type: t,
            px: Some(d(px)),
            size: sz.map(d),
            date: None,
            time: None,
        }
    }

    fn inc<'a>(
        a: MdUpdateAction,
        t: MdEntryType,
        px: &'a str,
        sz: &'a str,
        id: Option<&'a str>,
    ) -> IncrementalEntry<'a> {
        let mut e = IncrementalEntry::new(a);
        e.entry_type = Some(t);
        e.px = Some(d(px));
        e.size = Some(d(sz));
        e.entry_id = id;
        e
    }

    #[test]
    fn top_of_book_orders_prices_exactly_and_dedups() {
        let mut b = Book::default();
        b.apply_snapshot(&[
            snap(MdEntryType::Bid, "1.1", Some("5")),
            snap(MdEntryType::Offer, "1.12", Some("7")),
        ]);
        let q = parsed(b.quote_if_changed("t"));
        assert_eq!(q["bid"], "1.1");
        assert_eq!(q["ask_size"], "7");
        assert!(
            b.quote_if_changed("t").is_none(),
            "same quote is not repeated"
        );
        // 1.10001 > 1.1 although it is longer text.
        b.apply_incremental(&inc(
            MdUpdateAction::New,
            MdEntryType::Bid,
            "1.10001",
            "2",
            None,
        ));
        assert_eq!(parsed(b.quote_if_changed("t"))["bid"], "1.10001");
        b.apply_incremental(&inc(
            MdUpdateAction::Delete,
            MdEntryType::Bid,
            "1.10001",
            "0",
            None,
        ));
        assert_eq!(parsed(b.quote_if_changed("t"))["bid"], "1.1");
        let t = b.apply_incremental(&inc(
            MdUpdateAction::New,
            MdEntryType::Trade,
            "1.11",
            "3",
            None,
        ));
        assert_eq!(t.unwrap().price, "1.11");
        assert_eq!(parsed(b.quote_if_changed("t"))["last"], "1.11");
        let bk = parsed(b.book_if_changed(0));
        assert_eq!(bk["bids"][0][0], "1.1");
    }

    #[test]
    fn change_by_entry_id_moves_the_level() {
        let mut b = Book::default();
        b.apply_incremental(&inc(
            MdUpdateAction::New,
            MdEntryType::Offer,
            "2.5",
            "1",
            Some("a1"),
        ));
        b.apply_incremental(&inc(
            MdUpdateAction::Change,
            MdEntryType::Offer,
            "2.4",
            "1",
            Some("a1"),
        ));
        assert_eq!(b.asks.len(), 1);
        assert_eq!(parsed(b.quote_if_changed("t"))["ask"], "2.4");
        let mut del = IncrementalEntry::new(MdUpdateAction::Delete);
        del.entry_id = Some("a1");
        b.apply_incremental(&del);
        assert!(b.asks.is_empty());
    }

    /// The hand-written JSON is byte for byte what serde_json wrote for the same map before
    /// (sorted keys), so stored quotes and books do not change format; and a source name that
    /// needs escaping is escaped.
    #[test]
    fn json_text_matches_serde_json() {
        let mut b = Book::default();
        b.apply_snapshot(&[
            snap(MdEntryType::Bid, "1.1", Some("5")),
            snap(MdEntryType::Offer, "1.12", None),
            snap(MdEntryType::Bid, "1.09", Some("8")),
        ]);
        b.apply_incremental(&inc(
            MdUpdateAction::New,
            MdEntryType::Trade,
            "1.11",
            "3",
            None,
        ));
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
