//! Typed payloads ↔ the JSON a namespace stores.

use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use tickwire_feed::{
    book::Side,
    depth::{self, DepthMessage, SideOrTrade, UpdateAction},
    l2::{is_zero, L2Msg},
    names,
};
use tickwire_model::{check_decimal, NamespaceSpec, Publication, Schema};

use crate::{
    v1::{self, payload::Kind, server_message},
    ProtoError,
};

/// Which typed message a namespace's data is read into and written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// Schema `quote`: [`v1::Quote`].
    Quote,
    /// Schema `trade`: [`v1::Trade`].
    Trade,
    /// Book channels (`book.<SYM>`): [`v1::BookUpdate`] as snapshot or sequenced delta.
    Book,
    /// A feed's depth (`depth.<SYM>`, the book projection's input): [`v1::BookUpdate`] as a
    /// snapshot or an update of levels.
    Depth,
    /// Live candles (`candles.<SYM>.<res>`): [`v1::Candle`].
    Candle,
    /// Anything else: the JSON text.
    Json,
}

impl PayloadKind {
    fn name(self) -> &'static str {
        match self {
            PayloadKind::Quote => "quote",
            PayloadKind::Trade => "trade",
            PayloadKind::Book => "book update",
            PayloadKind::Depth => "depth update",
            PayloadKind::Candle => "candle",
            PayloadKind::Json => "JSON",
        }
    }
}

/// The typed form of a namespace's data: by its schema, and for the namespaces the server
/// derives (books, depth, candles) by its name.
pub fn kind_of(spec: &NamespaceSpec) -> PayloadKind {
    match spec.schema {
        Schema::Quote => PayloadKind::Quote,
        Schema::Trade => PayloadKind::Trade,
        Schema::Any => match spec.name.as_str() {
            names::BOOK => PayloadKind::Book,
            names::DEPTH => PayloadKind::Depth,
            names::CANDLES => PayloadKind::Candle,
            _ => PayloadKind::Json,
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteJson<'a> {
    #[serde(borrow, default)]
    bid: Option<&'a str>,
    #[serde(borrow, default)]
    ask: Option<&'a str>,
    #[serde(borrow, default)]
    last: Option<&'a str>,
    #[serde(borrow, default)]
    bid_size: Option<&'a str>,
    #[serde(borrow, default)]
    ask_size: Option<&'a str>,
    #[serde(borrow, default)]
    volume: Option<&'a str>,
    #[serde(default)]
    ts: Option<i64>,
    #[serde(borrow, default)]
    source: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TradeJson<'a> {
    #[serde(borrow)]
    price: &'a str,
    #[serde(borrow, default)]
    size: Option<&'a str>,
    #[serde(default)]
    ts: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandleJson<'a> {
    #[serde(borrow)]
    symbol: &'a str,
    #[serde(borrow)]
    resolution: &'a str,
    #[serde(rename = "final", default)]
    closed: bool,
    #[serde(default)]
    corrected: bool,
    start_ms: i64,
    #[serde(borrow)]
    open: &'a str,
    #[serde(borrow)]
    high: &'a str,
    #[serde(borrow)]
    low: &'a str,
    #[serde(borrow)]
    close: &'a str,
    #[serde(borrow)]
    volume: &'a str,
    ticks: u64,
}

/// An absent field is "" in proto3: a present empty string cannot be told from it, so such
/// data is carried as JSON instead.
fn text(v: Option<&str>) -> Option<String> {
    match v {
        Some("") => None,
        Some(s) => Some(s.to_string()),
        None => Some(String::new()),
    }
}

fn quote_of(data: &[u8]) -> Option<v1::Quote> {
    let q: QuoteJson<'_> = serde_json::from_slice(data).ok()?;
    Some(v1::Quote {
        bid: text(q.bid)?,
        ask: text(q.ask)?,
        last: text(q.last)?,
        bid_size: text(q.bid_size)?,
        ask_size: text(q.ask_size)?,
        volume: text(q.volume)?,
        ts: q.ts,
        source: text(q.source)?,
    })
}

fn trade_of(data: &[u8]) -> Option<v1::Trade> {
    let t: TradeJson<'_> = serde_json::from_slice(data).ok()?;
    Some(v1::Trade {
        price: text(Some(t.price))?,
        size: text(t.size)?,
        ts: t.ts,
    })
}

/// Whether every text is an exact decimal: only such data is typed, since a typed message
/// written back must be data its namespace takes (json_of checks them).
fn decimals(texts: &[&str]) -> bool {
    texts.iter().all(|t| check_decimal(t.as_bytes()).is_ok())
}

fn candle_of(data: &[u8]) -> Option<v1::Candle> {
    let c: CandleJson<'_> = serde_json::from_slice(data).ok()?;
    if !decimals(&[c.open, c.high, c.low, c.close, c.volume]) {
        return None;
    }
    Some(v1::Candle {
        symbol: c.symbol.to_string(),
        resolution: c.resolution.to_string(),
        start_ms: c.start_ms,
        open: c.open.to_string(),
        high: c.high.to_string(),
        low: c.low.to_string(),
        close: c.close.to_string(),
        volume: c.volume.to_string(),
        ticks: c.ticks,
        r#final: c.closed,
        corrected: c.corrected,
    })
}

fn levels(v: &[(String, String)]) -> Vec<v1::BookLevel> {
    v.iter()
        .map(|(p, s)| v1::BookLevel {
            price: p.clone(),
            size: s.clone(),
        })
        .collect()
}

fn book_of(data: &[u8]) -> Option<v1::BookUpdate> {
    let m = L2Msg::parse(data).ok()?;
    Some(v1::BookUpdate {
        snapshot: m.snapshot,
        seq: m.seq,
        prev_seq: m.prev,
        checksum: m.checksum,
        depth: m.depth,
        bids: levels(&m.bids),
        asks: levels(&m.asks),
    })
}

/// A depth message as levels: a snapshot of bids and asks with sizes, or updates by side and
/// price. Entry ids, trades and levels without a size have no typed form.
fn depth_of(data: &[u8]) -> Option<v1::BookUpdate> {
    let m: DepthMessage<'_> = depth::parse(data).ok()?;
    let level = |price: &str, size: &str| v1::BookLevel {
        price: price.to_string(),
        size: size.to_string(),
    };
    let mut out = v1::BookUpdate::default();
    match (&m.snapshot, &m.updates) {
        (Some(snapshot), None) => {
            out.snapshot = true;
            for l in snapshot {
                let size = l.size?;
                if !decimals(&[l.price, size]) {
                    return None;
                }
                match l.side {
                    SideOrTrade::Bid => out.bids.push(level(l.price, size)),
                    SideOrTrade::Ask => out.asks.push(level(l.price, size)),
                    SideOrTrade::Trade => return None,
                }
            }
        }
        (None, Some(updates)) => {
            for u in updates {
                if u.id.is_some() {
                    return None;
                }
                let price = u.price?;
                let size = match u.action {
                    UpdateAction::Delete => "0",
                    // A zero size in a typed update means delete: a new or changed level of
                    // size zero has no typed form that keeps its action.
                    UpdateAction::New | UpdateAction::Change => match u.size? {
                        s if is_zero(s) => return None,
                        s => s,
                    },
                    UpdateAction::Trade => return None,
                };
                if !decimals(&[price, size]) {
                    return None;
                }
                match u.side? {
                    Side::Bid => out.bids.push(level(price, size)),
                    Side::Ask => out.asks.push(level(price, size)),
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The typed payload of stored `data` in a namespace of `kind`: the typed message when it
/// carries the data exactly, the JSON text otherwise.
pub fn payload_of(kind: PayloadKind, data: &Bytes) -> v1::Payload {
    let typed = match kind {
        PayloadKind::Quote => quote_of(data).map(Kind::Quote),
        PayloadKind::Trade => trade_of(data).map(Kind::Trade),
        PayloadKind::Book => book_of(data).map(Kind::Book),
        PayloadKind::Depth => depth_of(data).map(Kind::Book),
        PayloadKind::Candle => candle_of(data).map(Kind::Candle),
        PayloadKind::Json => None,
    };
    v1::Payload {
        kind: Some(typed.unwrap_or_else(|| Kind::Json(data.clone()))),
    }
}

/// A stored publication as a [`v1::Push`].
pub fn push_of(p: &Publication, snapshot: bool, kind: PayloadKind, msg_id: bool) -> v1::Push {
    v1::Push {
        channel: p.channel.as_str().to_string(),
        offset: p.offset,
        ts: p.timestamp / 1_000_000,
        snapshot,
        payload: Some(payload_of(kind, &p.data)),
        msg_id: if msg_id {
            p.msg_id.clone().unwrap_or_default()
        } else {
            String::new()
        },
    }
}

/// A delivery as the bytes of a [`v1::ServerMessage`] holding its [`v1::Push`]: a binary
/// WebSocket frame, a gRPC Subscribe stream item. Built once per message and shared.
pub fn encode_push(p: &Publication, snapshot: bool, kind: PayloadKind) -> Bytes {
    let m = v1::ServerMessage {
        kind: Some(server_message::Kind::Push(push_of(
            p, snapshot, kind, false,
        ))),
    };
    Bytes::from(m.encode_to_vec())
}

/// Appends `"key":` and `v` as a JSON string (decimals need no escaping; anything else is
/// escaped by serde_json).
fn field(out: &mut String, key: &str, v: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    tickwire_feed::book::push_json_str(out, v);
}

fn opt_field(out: &mut String, key: &str, v: &str) {
    if !v.is_empty() {
        field(out, key, v);
    }
}

fn ts_field(out: &mut String, ts: Option<i64>) {
    if let Some(ts) = ts {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str("\"ts\":");
        out.push_str(itoa::Buffer::new().format(ts));
    }
}

fn decimal(field: &'static str, v: &str) -> Result<(), ProtoError> {
    check_decimal(v.as_bytes()).map_err(|_| ProtoError::NotDecimal {
        field,
        value: v.to_string(),
    })
}

fn check_levels(b: &v1::BookUpdate) -> Result<(), ProtoError> {
    for l in b.bids.iter().chain(&b.asks) {
        decimal("price", &l.price)?;
        decimal("size", &l.size)?;
    }
    Ok(())
}

fn pairs(v: &[v1::BookLevel]) -> Vec<(String, String)> {
    v.iter()
        .map(|l| (l.price.clone(), l.size.clone()))
        .collect()
}

/// The depth form of a typed book update (a feed publishing to `depth.<SYM>`): a snapshot of
/// levels, or updates by side and price (size zero deletes).
fn depth_json(b: &v1::BookUpdate) -> Result<String, ProtoError> {
    check_levels(b)?;
    let sides = b
        .bids
        .iter()
        .map(|l| (Side::Bid, l))
        .chain(b.asks.iter().map(|l| (Side::Ask, l)));
    let msg = if b.snapshot {
        DepthMessage {
            snapshot: Some(
                sides
                    .map(|(s, l)| depth::SnapshotLevel {
                        side: match s {
                            Side::Bid => SideOrTrade::Bid,
                            Side::Ask => SideOrTrade::Ask,
                        },
                        price: &l.price,
                        size: Some(&l.size),
                    })
                    .collect(),
            ),
            updates: None,
        }
    } else {
        DepthMessage {
            snapshot: None,
            updates: Some(
                sides
                    .map(|(s, l)| {
                        let delete = is_zero(&l.size);
                        depth::Update {
                            action: if delete {
                                UpdateAction::Delete
                            } else {
                                UpdateAction::Change
                            },
                            side: Some(s),
                            price: Some(&l.price),
                            size: (!delete).then_some(l.size.as_str()),
                            id: None,
                        }
                    })
                    .collect(),
            ),
        }
    };
    serde_json::to_string(&msg).map_err(|e| ProtoError::Invalid(e.to_string()))
}

/// The JSON to store for a typed payload published to a namespace of `kind` (named
/// `namespace`, for errors). JSON payloads pass as they are; the hub checks every item
/// against its namespace's schema either way.
pub fn json_of(
    kind: PayloadKind,
    namespace: &str,
    payload: Option<&v1::Payload>,
) -> Result<Bytes, ProtoError> {
    let k = payload
        .and_then(|p| p.kind.as_ref())
        .ok_or(ProtoError::NoPayload)?;
    let mut out = String::with_capacity(96);
    out.push('{');
    match k {
        Kind::Json(b) => return Ok(b.clone()),
        Kind::Quote(q) => {
            opt_field(&mut out, "bid", &q.bid);
            opt_field(&mut out, "ask", &q.ask);
            opt_field(&mut out, "last", &q.last);
            opt_field(&mut out, "bid_size", &q.bid_size);
            opt_field(&mut out, "ask_size", &q.ask_size);
            opt_field(&mut out, "volume", &q.volume);
            ts_field(&mut out, q.ts);
            opt_field(&mut out, "source", &q.source);
        }
        Kind::Trade(t) => {
            field(&mut out, "price", &t.price);
            opt_field(&mut out, "size", &t.size);
            ts_field(&mut out, t.ts);
        }
        Kind::Candle(c) => {
            field(&mut out, "symbol", &c.symbol);
            field(&mut out, "resolution", &c.resolution);
            if c.r#final {
                out.push_str(",\"final\":true");
            }
            if c.corrected {
                out.push_str(",\"corrected\":true");
            }
            out.push_str(",\"start_ms\":");
            out.push_str(itoa::Buffer::new().format(c.start_ms));
            for (key, v) in [
                ("open", &c.open),
                ("high", &c.high),
                ("low", &c.low),
                ("close", &c.close),
                ("volume", &c.volume),
            ] {
                decimal(key, v)?;
                field(&mut out, key, v);
            }
            out.push_str(",\"ticks\":");
            out.push_str(itoa::Buffer::new().format(c.ticks));
        }
        Kind::Book(b) => match kind {
            PayloadKind::Book => {
                check_levels(b)?;
                let m = L2Msg {
                    snapshot: b.snapshot,
                    seq: b.seq,
                    prev: b.prev_seq,
                    checksum: b.checksum,
                    depth: b.depth,
                    bids: pairs(&b.bids),
                    asks: pairs(&b.asks),
                };
                return Ok(Bytes::from(m.to_json()));
            }
            PayloadKind::Depth => return Ok(Bytes::from(depth_json(b)?)),
            other => {
                return Err(ProtoError::WrongKind {
                    given: "book update",
                    expected: other.name(),
                    namespace: namespace.to_string(),
                })
            }
        },
    }
    out.push('}');
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(k: Kind) -> v1::Payload {
        v1::Payload { kind: Some(k) }
    }

    fn typed(kind: PayloadKind, json: &str) -> Kind {
        payload_of(kind, &Bytes::from(json.to_string()))
            .kind
            .unwrap()
    }

    /// Typed → JSON → typed gives the same message, and the JSON keeps every digit.
    #[test]
    fn typed_payloads_round_trip_through_their_json() {
        let q = v1::Quote {
            bid: "1.084120000000000000000000001".into(),
            ask: "1.0843".into(),
            bid_size: "1000000".into(),
            ts: Some(1_700_000_000_123),
            source: "fix:\"lp\"".into(),
            ..v1::Quote::default()
        };
        let json = json_of(
            PayloadKind::Quote,
            "quotes",
            Some(&payload(Kind::Quote(q.clone()))),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"bid":"1.084120000000000000000000001","ask":"1.0843","bid_size":"1000000","ts":1700000000123,"source":"fix:\"lp\""}"#
        );
        // An escaped string cannot be borrowed: the quote is carried as JSON, whole.
        assert_eq!(
            typed(PayloadKind::Quote, std::str::from_utf8(&json).unwrap()),
            Kind::Json(json.clone())
        );
        let q = v1::Quote {
            source: "fix:lp".into(),
            ..q
        };
        let json = json_of(
            PayloadKind::Quote,
            "quotes",
            Some(&payload(Kind::Quote(q.clone()))),
        )
        .unwrap();
        assert_eq!(
            typed(PayloadKind::Quote, std::str::from_utf8(&json).unwrap()),
            Kind::Quote(q)
        );

        let t = v1::Trade {
            price: "99.5".into(),
            size: "0.001".into(),
            ts: None,
        };
        let json = json_of(
            PayloadKind::Trade,
            "trades",
            Some(&payload(Kind::Trade(t.clone()))),
        )
        .unwrap();
        assert_eq!(&json[..], br#"{"price":"99.5","size":"0.001"}"#);
        assert_eq!(
            typed(PayloadKind::Trade, std::str::from_utf8(&json).unwrap()),
            Kind::Trade(t)
        );

        let c = v1::Candle {
            symbol: "EURUSD".into(),
            resolution: "1m".into(),
            start_ms: 1_700_000_040_000,
            open: "1.1".into(),
            high: "1.2".into(),
            low: "1.0".into(),
            close: "1.15".into(),
            volume: "3".into(),
            ticks: 3,
            r#final: true,
            corrected: false,
        };
        let json = json_of(
            PayloadKind::Candle,
            "candles",
            Some(&payload(Kind::Candle(c.clone()))),
        )
        .unwrap();
        assert_eq!(
            typed(PayloadKind::Candle, std::str::from_utf8(&json).unwrap()),
            Kind::Candle(c)
        );
    }

    /// What a typed message cannot carry exactly stays JSON: unknown fields, empty strings,
    /// numbers where strings belong.
    #[test]
    fn data_a_typed_message_cannot_carry_stays_json() {
        for (kind, json) in [
            (PayloadKind::Quote, r#"{"bid":"1.1","extra":1}"#),
            (PayloadKind::Quote, r#"{"bid":""}"#),
            (PayloadKind::Quote, r#"[1]"#),
            (PayloadKind::Trade, r#"{"price":1.5}"#),
            (
                PayloadKind::Depth,
                r#"{"updates":[{"action":"change","id":"b7","size":"4"}]}"#,
            ),
            (
                PayloadKind::Depth,
                r#"{"updates":[{"action":"trade","price":"1.1","size":"1"}]}"#,
            ),
            (PayloadKind::Book, r#"{"seq":1}"#),
            // Found by the proto_decode fuzz target: typed, they did not write back the same.
            (
                PayloadKind::Candle,
                r#"{"symbol":"X","resolution":"1m","start_ms":0,"open":"1","high":"1","low":"1","close":"1.!5","volume":"3","ticks":3}"#,
            ),
            (
                PayloadKind::Depth,
                r#"{"updates":[{"action":"change","side":"bid","price":"1.1","size":"0.0"}]}"#,
            ),
            (
                PayloadKind::Depth,
                r#"{"snapshot":[{"side":"bid","price":"x","size":"1"}]}"#,
            ),
            (PayloadKind::Json, r#"{"bid":"1.1"}"#),
        ] {
            assert_eq!(typed(kind, json), Kind::Json(Bytes::from(json)), "{json}");
        }
    }

    #[test]
    fn book_updates_become_depth_messages_and_book_values() {
        let b = v1::BookUpdate {
            bids: vec![v1::BookLevel {
                price: "1.1".into(),
                size: "5".into(),
            }],
            asks: vec![v1::BookLevel {
                price: "1.12".into(),
                size: "0".into(),
            }],
            ..v1::BookUpdate::default()
        };
        let json = json_of(
            PayloadKind::Depth,
            "depth",
            Some(&payload(Kind::Book(b.clone()))),
        )
        .unwrap();
        assert_eq!(
            &json[..],
            br#"{"updates":[{"action":"change","side":"bid","price":"1.1","size":"5"},{"action":"delete","side":"ask","price":"1.12"}]}"#
        );
        assert_eq!(
            typed(PayloadKind::Depth, std::str::from_utf8(&json).unwrap()),
            Kind::Book(b.clone())
        );
        let snap = v1::BookUpdate {
            snapshot: true,
            asks: vec![],
            ..b.clone()
        };
        let json = json_of(
            PayloadKind::Depth,
            "depth",
            Some(&payload(Kind::Book(snap.clone()))),
        )
        .unwrap();
        assert_eq!(
            typed(PayloadKind::Depth, std::str::from_utf8(&json).unwrap()),
            Kind::Book(snap)
        );

        let delta = v1::BookUpdate {
            seq: 5,
            prev_seq: 4,
            checksum: 77,
            ..b
        };
        let json = json_of(
            PayloadKind::Book,
            "book",
            Some(&payload(Kind::Book(delta.clone()))),
        )
        .unwrap();
        assert_eq!(
            typed(PayloadKind::Book, std::str::from_utf8(&json).unwrap()),
            Kind::Book(delta.clone())
        );

        let bad = v1::BookUpdate {
            bids: vec![v1::BookLevel {
                price: "1e5".into(),
                size: "1".into(),
            }],
            ..delta.clone()
        };
        assert!(matches!(
            json_of(PayloadKind::Depth, "depth", Some(&payload(Kind::Book(bad)))),
            Err(ProtoError::NotDecimal { field: "price", .. })
        ));
        assert!(matches!(
            json_of(PayloadKind::Json, "chat", Some(&payload(Kind::Book(delta)))),
            Err(ProtoError::WrongKind { .. })
        ));
        assert_eq!(
            json_of(PayloadKind::Json, "chat", None),
            Err(ProtoError::NoPayload)
        );
    }
}
