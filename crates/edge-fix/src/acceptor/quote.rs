//! Quote channels (MarketDepth 1): the last value sent per symbol, and W / X built from it.

use super::*;

/// The last value sent for one symbol of one request: what X is computed against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct QuoteView {
    bid: Option<(String, Option<String>)>,
    ask: Option<(String, Option<String>)>,
    last: Option<String>,
}

impl QuoteView {
    /// The parsed quote of a hub message, built once per message and shared by every FIX
    /// subscriber (cached in the message like the other edges' encodings).
    pub(super) fn of(msg: &tickwire_hub::Message) -> Arc<QuoteView> {
        static FIX_FORMAT: std::sync::OnceLock<tickwire_hub::Format> = std::sync::OnceLock::new();
        let format = *FIX_FORMAT.get_or_init(|| tickwire_hub::Format::register("fix-quote"));
        msg.encoded(format, |p| Arc::new(QuoteView::from_json(&p.data)))
    }

    /// The quote fields of a hub message (read by `tickwire_feed::fields`), keeping only
    /// exact decimals.
    fn from_json(data: &[u8]) -> QuoteView {
        let f = fields::read(fields::Kind::Quote, data).unwrap_or_default();
        let dec = |v: Option<&[u8]>| {
            v.and_then(|b| std::str::from_utf8(b).ok())
                .filter(|s| Decimal::new(s).is_ok())
                .map(str::to_string)
        };
        QuoteView {
            bid: dec(f.bid).map(|p| (p, dec(f.bid_size))),
            ask: dec(f.ask).map(|p| (p, dec(f.ask_size))),
            last: dec(f.last),
        }
    }
}

impl Client {
    /// Per delivery, so per subscriber: the requests are updated in place, and nothing is
    /// copied but the symbol the first time a request is sent it. The messages are queued;
    /// the caller flushes and counts them once per batch of deliveries. Returns how many.
    pub(super) async fn on_delivery(
        &mut self,
        d: Delivery,
        conn: &mut C,
        ev: &mut Vec<AppEvent>,
    ) -> u64 {
        if self.books.contains_key(&d.message.publication.channel) {
            return self.on_book_delivery(&d, conn, ev).await;
        }
        let p = &d.message.publication;
        let sym = p.channel.name();
        let q = QuoteView::of(&d.message);
        let mut sent = 0;
        for (id, req) in self.subs.iter_mut() {
            if req.serves_book() || !req.channels.contains(&p.channel) {
                continue;
            }
            let prev = match req.sent.get_mut(sym) {
                Some((o, _)) if p.offset <= *o => continue,
                Some(slot) => std::mem::replace(slot, (p.offset, q.clone())).1,
                None => {
                    req.sent.insert(sym.to_string(), (p.offset, q.clone()));
                    Arc::default()
                }
            };
            if req.full_refresh {
                conn.queue_app(&snapshot(id, sym, req, &q), ev).await;
            } else if let Some(x) = incremental(id, sym, req, &prev, &q) {
                conn.queue_app(&x, ev).await;
            } else {
                continue;
            }
            sent += 1;
        }
        sent
    }
}

/// W with the entry types `req` asked for.
pub(super) fn snapshot<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    q: &'a QuoteView,
) -> MarketDataSnapshotFullRefresh<'a> {
    let mut entries = Vec::new();
    if let (true, Some((p, z))) = (req.bid, &q.bid) {
        entries.extend(snap_entry(MdEntryType::Bid, p, z.as_deref()));
    }
    if let (true, Some((p, z))) = (req.offer, &q.ask) {
        entries.extend(snap_entry(MdEntryType::Offer, p, z.as_deref()));
    }
    if let (true, Some(p)) = (req.trade, &q.last) {
        entries.extend(snap_entry(MdEntryType::Trade, p, None));
    }
    MarketDataSnapshotFullRefresh {
        md_req_id: Some(id),
        symbol: sym,
        entries,
    }
}

/// X with the differences between what the client has and the new quote: a moved price is
/// Delete(old) + New(new), since level books are keyed by price; a size change is Change.
/// `None` when nothing the request asked for changed.
pub(super) fn incremental<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    prev: &'a QuoteView,
    q: &'a QuoteView,
) -> Option<MarketDataIncrementalRefresh<'a>> {
    let mut entries: Vec<IncrementalEntry<'_>> = Vec::new();
    let mk = |a, t, px, sz| inc_entry(a, t, sym, px, sz);
    let sides = [
        (req.bid, MdEntryType::Bid, &prev.bid, &q.bid),
        (req.offer, MdEntryType::Offer, &prev.ask, &q.ask),
    ];
    for (want, t, old, new) in sides {
        if !want || old == new {
            continue;
        }
        match (old, new) {
            (Some((op, _)), Some((np, nz))) if op == np => {
                entries.extend(mk(MdUpdateAction::Change, t, np, nz.as_deref()));
            }
            (old, new) => {
                if let Some((op, oz)) = old {
                    entries.extend(mk(MdUpdateAction::Delete, t, op, oz.as_deref()));
                }
                if let Some((np, nz)) = new {
                    entries.extend(mk(MdUpdateAction::New, t, np, nz.as_deref()));
                }
            }
        }
    }
    if req.trade && q.last != prev.last {
        if let Some(l) = &q.last {
            entries.extend(mk(MdUpdateAction::New, MdEntryType::Trade, l, None));
        }
    }
    if entries.is_empty() {
        return None;
    }
    Some(MarketDataIncrementalRefresh {
        md_req_id: Some(id),
        entries,
    })
}

pub(super) fn snap_entry<'a>(
    t: MdEntryType,
    px: &'a str,
    sz: Option<&'a str>,
) -> Option<SnapshotEntry<'a>> {
    Some(SnapshotEntry {
        entry_type: t,
        px: Some(Decimal::new(px).ok()?),
        size: sz.and_then(|z| Decimal::new(z).ok()),
        date: None,
        time: None,
    })
}

pub(super) fn inc_entry<'a>(
    a: MdUpdateAction,
    t: MdEntryType,
    sym: &'a str,
    px: &'a str,
    sz: Option<&'a str>,
) -> Option<IncrementalEntry<'a>> {
    let mut e = IncrementalEntry::new(a);
    e.entry_type = Some(t);
    e.symbol = Some(sym);
    e.px = Some(Decimal::new(px).ok()?);
    e.size = sz.and_then(|z| Decimal::new(z).ok());
    Some(e)
}
