//! Books (any MarketDepth but 1): the connection's copy of each book, and W / X of each
//! request's best N levels.

use super::*;

impl Client {
    /// A book channel's value: the connection's copy of the book follows it, and each
    /// MarketDepth N request on it gets the levels of its best N that changed (X), or its
    /// best N again (W, when it asked for full refreshes). Nothing is sent to a request whose
    /// best N did not change. Returns how many messages were queued.
    pub(super) async fn on_book_delivery(
        &mut self,
        d: &Delivery,
        conn: &mut C,
        ev: &mut Vec<AppEvent>,
    ) -> u64 {
        let ch = &d.message.publication.channel;
        let Some(book) = self.books.get_mut(ch) else {
            return 0;
        };
        let value = book_value(&d.message);
        let Some(m) = value.as_ref() else { return 0 };
        if !m.snapshot && book.is_known() && m.seq <= book.seq() {
            // Already in the copy (it was read from the channel's newest value after the
            // subscription started).
            return 0;
        }
        if book.apply(m) == tickwire_feed::l2::Applied::Gap {
            // The hub's conflation keeps a subscriber's deltas contiguous, so this is a book
            // the channel itself lost (a restart before its next snapshot): start again from
            // the channel's book, or send nothing until it has one.
            match self.sh.gateway.hub().latest(ch) {
                Ok(Some(msg)) => match book_of(&msg) {
                    Some(b) => *book = b,
                    None => return 0,
                },
                _ => return 0,
            }
        }
        let sym = ch.name();
        let mut sent = 0;
        for (id, req) in self.subs.iter_mut() {
            if !req.serves_book() || !req.channels.contains(ch) {
                continue;
            }
            let view = DepthView::of(book, req.depth);
            let prev = req.levels.get(sym).cloned().unwrap_or_default();
            if prev == view {
                continue;
            }
            if req.full_refresh {
                conn.queue_app(&book_snapshot(id, sym, req, &view), ev)
                    .await;
            } else {
                let x = book_incremental(id, sym, req, &prev, &view);
                if x.entries.is_empty() {
                    continue;
                }
                conn.queue_app(&x, ev).await;
            }
            req.levels.insert(sym.to_string(), view);
            sent += 1;
        }
        sent
    }
}

/// W of a book: up to N levels a side, best first, of the sides `req` asked for.
pub(super) fn book_snapshot<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    view: &'a DepthView,
) -> MarketDataSnapshotFullRefresh<'a> {
    let mut entries = Vec::new();
    if req.bid {
        entries.extend(
            view.bids()
                .filter_map(|(p, z)| snap_entry(MdEntryType::Bid, p, Some(z))),
        );
    }
    if req.offer {
        entries.extend(
            view.asks()
                .filter_map(|(p, z)| snap_entry(MdEntryType::Offer, p, Some(z))),
        );
    }
    MarketDataSnapshotFullRefresh {
        md_req_id: Some(id),
        symbol: sym,
        entries,
    }
}

/// X from the levels a client holds (`prev`) to the best N now (`view`): Delete for a level
/// that left the best N, Change for a new size, New for a level that came in. Deletes go
/// first, so a client that caps its book at N levels never holds N + 1. A price respelled
/// ("1.10" for "1.1") is Delete + New, right for clients that key levels by text and for
/// those that key them by value.
pub(super) fn book_incremental<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    prev: &'a DepthView,
    view: &'a DepthView,
) -> MarketDataIncrementalRefresh<'a> {
    use MdUpdateAction::{Change, Delete, New};
    let mut deletes = Vec::new();
    let mut rest = Vec::new();
    let changes = prev.changes(view);
    let sides = [
        (req.bid, MdEntryType::Bid, &changes.bids),
        (req.offer, MdEntryType::Offer, &changes.asks),
    ];
    for (want, t, side) in sides {
        if !want {
            continue;
        }
        let entry = |a, (p, z): &'a (String, String)| inc_entry(a, t, sym, p, Some(z));
        for c in side {
            match *c {
                LevelChange::Left(old) => deletes.extend(entry(Delete, old)),
                LevelChange::Entered(new) => rest.extend(entry(New, new)),
                LevelChange::Changed { old, new } if old.0 == new.0 => {
                    rest.extend(entry(Change, new));
                }
                LevelChange::Changed { old, new } => {
                    deletes.extend(entry(Delete, old));
                    rest.extend(entry(New, new));
                }
            }
        }
    }
    deletes.extend(rest);
    MarketDataIncrementalRefresh {
        md_req_id: Some(id),
        entries: deletes,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn view(bids: &[(&str, &str)], asks: &[(&str, &str)]) -> DepthView {
        let own = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(p, s)| (p.to_string(), s.to_string()))
                .collect()
        };
        let book = L2Book::from_snapshot(&tickwire_feed::l2::L2Msg {
            snapshot: true,
            bids: own(bids),
            asks: own(asks),
            ..Default::default()
        });
        DepthView::of(&book, 0)
    }

    fn request(depth: u32) -> Request {
        Request {
            channels: Vec::new(),
            depth,
            full_refresh: false,
            bid: true,
            offer: true,
            trade: false,
            sent: HashMap::new(),
            levels: HashMap::new(),
        }
    }

    /// (action, bid?, price, size) of each entry.
    fn entries(
        x: &MarketDataIncrementalRefresh<'_>,
    ) -> Vec<(MdUpdateAction, bool, String, String)> {
        x.entries
            .iter()
            .map(|e| {
                (
                    e.update_action,
                    e.entry_type == Some(MdEntryType::Bid),
                    e.px.unwrap().as_str().to_string(),
                    e.size.map(|z| z.as_str().to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// A level that left the best N is deleted before anything comes in; a new size is a
    /// Change; a respelled price is Delete + New; unchanged levels send nothing.
    #[test]
    fn x_takes_the_clients_levels_to_the_best_n() {
        use MdUpdateAction::{Change, Delete, New};
        let req = request(2);
        let prev = view(
            &[("1.10", "5"), ("1.09", "2")],
            &[("1.12", "3"), ("1.13", "1")],
        );
        let now = view(
            &[("1.09", "4"), ("1.08", "7")],
            &[("1.12", "3"), ("1.130", "1")],
        );
        let x = book_incremental("r", "S", &req, &prev, &now);
        assert_eq!(
            entries(&x),
            vec![
                (Delete, true, "1.10".into(), "5".into()),
                (Delete, false, "1.13".into(), "1".into()),
                (Change, true, "1.09".into(), "4".into()),
                (New, true, "1.08".into(), "7".into()),
                (New, false, "1.130".into(), "1".into()),
            ]
        );
        assert!(book_incremental("r", "S", &req, &now, &now)
            .entries
            .is_empty());
    }
}
