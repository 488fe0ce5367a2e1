//! Publishing: checks, the namespace writers' acknowledgements.

use super::*;

impl Hub {
    /// Validates and stores publications, in order; one result per request. Requests for the
    /// same namespace go to its writer together, so they share one group commit.
    pub async fn publish(&self, requests: Vec<PublishRequest>) -> Vec<Result<Ack, HubError>> {
        let mut results: Vec<Option<Result<Ack, HubError>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut idx = Vec::with_capacity(requests.len());
        let mut checked = Vec::with_capacity(requests.len());
        for (i, r) in requests.into_iter().enumerate() {
            match self.check(r) {
                Ok(c) => {
                    idx.push(i);
                    checked.push(c);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for (i, r) in idx.into_iter().zip(self.publish_checked(checked).await) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(HubError::ShuttingDown)))
            .collect()
    }

    /// Validates a publication without storing it (namespace, size, schema). An edge that must
    /// answer before storing (refuse a whole HTTP batch, give an MQTT packet its reason code)
    /// checks first and then stores the [`Checked`] values with [`Hub::publish_checked`], so
    /// nothing is validated twice.
    pub fn check(&self, request: PublishRequest) -> Result<Checked, HubError> {
        let ns = self.validate(&request, false, None)?.id;
        Ok(Checked {
            ns,
            request,
            spans: None,
        })
    }

    /// [`Hub::check`] with the quote/trade fields of `request.data` already read (by
    /// `tickwire_model::scan_flat_object` over exactly that text, as the JSON publish
    /// envelope reader does while skipping it), so the schema check does not read it again.
    pub fn check_scanned(
        &self,
        request: PublishRequest,
        fields: &SchemaFields<'_>,
    ) -> Result<Checked, HubError> {
        let rt = self.validate(&request, false, Some(fields))?;
        // Handed on with the item for the append feed's reader, which would read the same
        // text again otherwise (bench/results/ingest.md, "The edge hands the candle
        // projection its fields"). Only while the feed has one: it costs a little here.
        let spans = rt
            .feed
            .as_ref()
            .is_some_and(|f| f.wanted())
            .then(|| fields.spans(&request.data, rt.spec.schema))
            .flatten();
        Ok(Checked {
            ns: rt.id,
            request,
            spans,
        })
    }

    /// [`Hub::check`] for data that no JSON parser has read yet (the binary publish batch):
    /// it must also be one JSON value. The quote and trade schema checks prove that already;
    /// only schema-free namespaces need the extra pass.
    pub fn check_unparsed(&self, request: PublishRequest) -> Result<Checked, HubError> {
        let ns = self.validate(&request, true, None)?.id;
        Ok(Checked {
            ns,
            request,
            spans: None,
        })
    }

    /// Stores already checked publications, in order; one result per item (only storage or
    /// shutdown can fail now).
    pub async fn publish_checked(&self, checked: Vec<Checked>) -> Vec<Result<Ack, HubError>> {
        self.enqueue(checked).await.await
    }

    /// Hands checked publications to their namespace writers, in order, and returns their
    /// acknowledgements as a future (one result per item). Waits only while a writer's queue is
    /// full, never for an acknowledgement: a connection keeps several of these in flight and
    /// reads its next command meanwhile. Requests enqueued one after the other by one caller
    /// are appended in that order.
    pub async fn enqueue(&self, checked: Vec<Checked>) -> Acks {
        let n = checked.len();
        let by_ns = match checked.first().map(|c| c.ns) {
            // The common case, one namespace: its items are the call's, in order, and need no
            // index list (for a pipelining connection's turn, the list's growth was a chain
            // of ever larger allocations on the connection's worker).
            Some(first) if checked.iter().all(|c| c.ns == first) => {
                // A new vector, not `collect` (which would reuse `checked`'s larger allocation
                // in place and send it to the writer's thread to be freed there: server RSS
                // max in the ingest row rose from 140 to 190 MB with it).
                let mut items = Vec::with_capacity(n);
                items.extend(checked.into_iter().map(item));
                vec![(first, None, items)]
            }
            _ => {
                // A handful of namespaces at most: a linear search by identity beats hashing
                // (and cloning) the namespace name for every item of a 10,000-item batch.
                let mut by_ns: Vec<NamespaceBatch> = Vec::new();
                for (i, c) in checked.into_iter().enumerate() {
                    let ns = c.ns;
                    let k = match by_ns.iter().position(|b| b.0 == ns) {
                        Some(k) => k,
                        None => {
                            by_ns.push((ns, Some(Vec::new()), Vec::with_capacity(n)));
                            by_ns.len() - 1
                        }
                    };
                    let e = &mut by_ns[k];
                    if let Some(idx) = &mut e.1 {
                        idx.push(i);
                    }
                    e.2.push(item(c));
                }
                by_ns
            }
        };
        let started = std::time::Instant::now();
        let mut waits = Vec::with_capacity(by_ns.len());
        for (ns, idx, items) in by_ns {
            let bytes: usize = items.iter().map(|it| it.data.len()).sum();
            let (reply, rx) = oneshot::channel();
            let sent = match self.inner.namespaces.get(ns) {
                Some(ns) => ns.tx.send(WriterMsg::Write { items, reply }).await.is_ok(),
                None => false, // a Checked comes from this hub: cannot happen
            };
            waits.push(NamespaceWait {
                ns,
                bytes: bytes as u64,
                idx,
                rx: sent.then_some(rx),
            });
        }
        Acks {
            n,
            started,
            waits,
            inner: self.inner.clone(),
        }
    }

    /// Checks one publication; its namespace (the caller needs its id, and the JSON edge also
    /// its feed and schema, without looking it up again per item). `unparsed`: the data has not been through
    /// a JSON parser, so a schema-free namespace must check it is JSON at all.
    fn validate(
        &self,
        r: &PublishRequest,
        unparsed: bool,
        fields: Option<&SchemaFields<'_>>,
    ) -> Result<&NamespaceRt, HubError> {
        let ns = self.inner.namespace_ref(r.channel.namespace())?;
        if r.data.len() > ns.spec.max_message_bytes {
            return Err(HubError::TooLarge {
                namespace: ns.spec.name.clone(),
                size: r.data.len(),
                max: ns.spec.max_message_bytes,
            });
        }
        // Straight from the JSON text: publishing is the hot path, and a Value tree per quote
        // cost more than the append itself.
        match fields {
            Some(f) => validate_schema_fields(ns.spec.schema, f)?,
            None => validate_schema_json(ns.spec.schema, &r.data)?,
        }
        // The quote and trade checks above prove it is JSON already.
        if unparsed && ns.spec.schema == Schema::Any {
            validate_json(&r.data)?;
        }
        Ok(ns)
    }
}

/// A namespace's share of a publish call: its id, the callers' indexes (`None`: every item of
/// the call, in order), the items.
type NamespaceBatch = (usize, Option<Vec<usize>>, Vec<Item>);

fn item(c: Checked) -> Item {
    Item {
        channel: c.request.channel,
        msg_id: c.request.msg_id,
        data: c.request.data,
        spans: c.spans,
    }
}

/// A namespace writer's answer to one write request: one result per item, and its timing.
type AckReceiver = oneshot::Receiver<WriteReply>;

/// When one namespace's share of a publish was appended and fsynced (see [`Acks::timed`]).
#[derive(Debug, Clone)]
pub struct NamespaceTiming {
    pub namespace: String,
    pub timing: BatchTiming,
}

/// The acknowledgements of an [`Hub::enqueue`] call: resolves to one result per item, in the
/// order given, once every namespace writer involved has answered.
pub struct Acks {
    n: usize,
    /// When the requests were handed to the hub (the acknowledgement latency's start).
    started: std::time::Instant,
    waits: Vec<NamespaceWait>,
    inner: Arc<HubInner>,
}

/// One namespace's share of an [`Acks`]: the callers' indexes (`None`: all of them, in
/// order), the bytes of data, and the writer's reply (`None`: never sent).
struct NamespaceWait {
    ns: usize,
    bytes: u64,
    idx: Option<Vec<usize>>,
    rx: Option<AckReceiver>,
}

impl std::future::IntoFuture for Acks {
    type Output = Vec<Result<Ack, HubError>>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.resolve(false).await.0 })
    }
}

impl Acks {
    /// The acknowledgements and, per namespace involved, when its group-commit batch was
    /// appended and fsynced: what a traced publish reports as its `append` and `fsync` spans.
    pub async fn timed(self) -> (Vec<Result<Ack, HubError>>, Vec<NamespaceTiming>) {
        self.resolve(true).await
    }

    async fn resolve(self, timed: bool) -> (Vec<Result<Ack, HubError>>, Vec<NamespaceTiming>) {
        let Acks {
            n,
            started,
            waits,
            inner,
        } = self;
        // One slot per item, made only when the answers must be put back in the caller's order.
        let mut results: Vec<Option<Result<Ack, HubError>>> = Vec::new();
        // Counted here and added once: one shared atomic per item was a contended line.
        let mut published: u64 = 0;
        let mut timings = Vec::new();
        for NamespaceWait { ns, bytes, idx, rx } in waits {
            let answer = match rx {
                Some(rx) => rx.await.ok(),
                None => None,
            };
            let acks = match answer {
                Some(WriteReply { acks, timing }) => {
                    if timed {
                        if let Some(rt) = inner.namespaces.get(ns) {
                            timings.push(NamespaceTiming {
                                namespace: rt.spec.name.clone(),
                                timing,
                            });
                        }
                    }
                    let fresh = acks
                        .iter()
                        .filter(|a| a.as_ref().is_ok_and(|a| !a.duplicate))
                        .count() as u64;
                    published += fresh;
                    if let Some(rt) = inner.namespaces.get(ns) {
                        let m = &rt.metrics;
                        m.published.fetch_add(fresh, Ordering::Relaxed);
                        if acks.iter().all(|a| a.is_ok()) {
                            m.published_bytes.fetch_add(bytes, Ordering::Relaxed);
                            m.ack.observe(started.elapsed());
                        }
                    }
                    acks
                }
                // Never answered: its slots stay empty, refused as shut down below.
                None => Vec::new(),
            };
            // No index list: the call's only namespace (`enqueue`), so a full answer is the
            // call's, as it stands.
            if idx.is_none() && acks.len() == n {
                inner.published.fetch_add(published, Ordering::Relaxed);
                return (acks, timings);
            }
            if results.is_empty() {
                results = (0..n).map(|_| None).collect();
            }
            match idx {
                Some(idx) => {
                    for (i, a) in idx.into_iter().zip(acks) {
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(a);
                        }
                    }
                }
                // A short answer (never expected): what is missing is refused below.
                None => {
                    for (slot, a) in results.iter_mut().zip(acks) {
                        *slot = Some(a);
                    }
                }
            }
        }
        inner.published.fetch_add(published, Ordering::Relaxed);
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(HubError::ShuttingDown)))
            .collect();
        (results, timings)
    }
}
