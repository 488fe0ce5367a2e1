//! MarketDataRequest (V): subscribe, unsubscribe, and the rejects (Y) of what cannot be served.

use super::*;

impl Client {
    pub(super) async fn on_request(&mut self, m: &Message, conn: &mut C, ev: &mut Vec<AppEvent>) {
        let raw = m.raw();
        let v = match MarketDataRequest::decode(&raw) {
            Ok(v) => v,
            Err(e) => {
                let id = raw
                    .body_field(tags::MD_REQ_ID)
                    .ok()
                    .flatten()
                    .and_then(|f| f.as_str().ok().map(str::to_string));
                let unsupported = match &e {
                    FixError::InvalidValue { tag, .. } => match *tag {
                        tags::SUBSCRIPTION_REQUEST_TYPE => {
                            Some(MdReqRejReason::UnsupportedSubscriptionRequestType)
                        }
                        tags::MARKET_DEPTH => Some(MdReqRejReason::UnsupportedMarketDepth),
                        tags::MD_UPDATE_TYPE => Some(MdReqRejReason::UnsupportedMdUpdateType),
                        tags::MD_ENTRY_TYPE => Some(MdReqRejReason::UnsupportedMdEntryType),
                        _ => None,
                    },
                    _ => None,
                };
                match (id, unsupported) {
                    (Some(id), Some(reason)) => {
                        self.reject(conn, ev, &id, reason, &e.to_string()).await
                    }
                    _ => {
                        let (reason, tag) = match &e {
                            FixError::MissingField { tag, .. } => {
                                (REQUIRED_TAG_MISSING, Some(*tag))
                            }
                            FixError::InvalidValue { tag, .. } => (VALUE_IS_INCORRECT, Some(*tag)),
                            _ => (VALUE_IS_INCORRECT, None),
                        };
                        let a = conn.session.reject(m, reason, tag, &e.to_string(), now());
                        let _ = conn.run(a, ev).await;
                    }
                }
                return;
            }
        };
        let id = v.md_req_id.to_string();
        let ns = self.sh.cfg.namespace.clone();
        match v.subscription_request_type {
            SubscriptionRequestType::Unsubscribe => {
                if let Some(req) = self.subs.remove(&id) {
                    for ch in &req.channels {
                        self.release(ch);
                    }
                } else {
                    self.reject(
                        conn,
                        ev,
                        &id,
                        MdReqRejReason::UnknownSymbol,
                        "no subscription with this MDReqID",
                    )
                    .await;
                }
            }
            sub => {
                if self.subs.contains_key(&id) {
                    return self
                        .reject(
                            conn,
                            ev,
                            &id,
                            MdReqRejReason::DuplicateMdReqId,
                            "MDReqID already subscribed",
                        )
                        .await;
                }
                let (bid, offer, trade) = (
                    v.entry_types.contains(&MdEntryType::Bid),
                    v.entry_types.contains(&MdEntryType::Offer),
                    v.entry_types.contains(&MdEntryType::Trade),
                );
                if !(bid || offer || trade) {
                    return self
                        .reject(
                            conn,
                            ev,
                            &id,
                            MdReqRejReason::UnsupportedMdEntryType,
                            "only bid (0), offer (1) and trade (2) are served",
                        )
                        .await;
                }
                // MarketDepth 1 is the quote (its `last` is the trade entry); any other depth
                // is the book, which holds no trades: a request for both is refused rather
                // than answered without the trades as if they had been served.
                let book = v.market_depth != 1;
                if book && trade {
                    return self
                        .reject(
                            conn,
                            ev,
                            &id,
                            MdReqRejReason::UnsupportedMdEntryType,
                            &format!(
                                "MarketDepth {} serves the book's bid (0) and offer (1) levels; ask for trades (2) with MarketDepth 1",
                                v.market_depth
                            ),
                        )
                        .await;
                }
                // Every symbol must be a channel with a value (a book channel: a known book);
                // otherwise the whole request is refused, so a client never holds a
                // half-working MDReqID.
                let mut chans = Vec::new();
                let mut unknown = Vec::new();
                for s in &v.symbols {
                    let name = if book {
                        names::book(s)
                    } else {
                        format!("{ns}.{s}")
                    };
                    match Channel::parse(&name) {
                        Ok(ch) if matches!(self.sh.gateway.hub().latest(&ch), Ok(Some(_))) => {
                            chans.push(ch)
                        }
                        _ => unknown.push(*s),
                    }
                }
                if v.symbols.is_empty() || !unknown.is_empty() {
                    let text = format!("unknown symbol: {}", unknown.join(","));
                    return self
                        .reject(conn, ev, &id, MdReqRejReason::UnknownSymbol, &text)
                        .await;
                }
                let keep = sub == SubscriptionRequestType::SnapshotPlusUpdates;
                if keep {
                    // Subscribe before reading the snapshot: an update that lands in between
                    // arrives as a delivery with a newer offset and is sent as X.
                    for (k, ch) in chans.iter().enumerate() {
                        if !self.channels.contains_key(ch) {
                            if let Err(e) = self.hub.subscribe(ch, None, None) {
                                // The request is refused whole: give back what it already
                                // took, or those channels stay subscribed (and count toward
                                // the session's limit) with no request to release them.
                                for done in chans.iter().take(k) {
                                    self.release(done);
                                }
                                return self
                                    .reject(
                                        conn,
                                        ev,
                                        &id,
                                        MdReqRejReason::InsufficientBandwidth,
                                        &e.to_string(),
                                    )
                                    .await;
                            }
                        }
                        *self.channels.entry(ch.clone()).or_insert(0) += 1;
                    }
                }
                let mut req = Request {
                    channels: chans.clone(),
                    depth: v.market_depth,
                    full_refresh: v.md_update_type == Some(MdUpdateType::FullRefresh),
                    bid,
                    offer,
                    trade,
                    sent: HashMap::new(),
                    levels: HashMap::new(),
                };
                for (&sym, ch) in v.symbols.iter().zip(&chans) {
                    let Ok(Some(msg)) = self.sh.gateway.hub().latest(ch) else {
                        continue;
                    };
                    if book {
                        let Some(b) = book_of(&msg) else { continue };
                        let view = DepthView::of(&b, req.depth);
                        self.send(conn, ev, &book_snapshot(&id, sym, &req, &view))
                            .await;
                        req.levels.insert(sym.to_string(), view);
                        if keep {
                            // One copy per channel, whichever is newest: another request may
                            // have started it, and deliveries keep it current.
                            let held = self.books.entry(ch.clone()).or_default();
                            if !held.is_known() || held.seq() < b.seq() {
                                *held = b;
                            }
                        }
                        continue;
                    }
                    let q = QuoteView::of(&msg);
                    self.send(conn, ev, &snapshot(&id, sym, &req, &q)).await;
                    req.sent
                        .insert(sym.to_string(), (msg.publication.offset, q));
                }
                if keep {
                    self.subs.insert(id, req);
                }
            }
        }
    }
}
