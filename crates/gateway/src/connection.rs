//! A client connection as every edge holds it: the principal, the hub session, the limits
//! that apply to it, and its end (close reasons, token expiry, the per-IP count).

use super::*;

/// One long-lived client connection: a principal, a hub session and a permit; unregistered
/// and counted down when dropped.
pub struct Connection {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) edge: Edge,
    /// This edge's counters, looked up once: delivery and publish paths count per batch.
    pub(crate) counters: Arc<EdgeCounters>,
    /// The delivery counters of the namespaces this connection received from, looked up once
    /// each (a client reads a handful of namespaces; a linear search beats a map here).
    pub(crate) namespaces: Vec<(Box<str>, Arc<crate::metrics::NamespaceCounters>)>,
    pub(crate) principal: Principal,
    pub(crate) session: Session,
    pub(crate) id: u64,
    pub(crate) _permit: OwnedSemaphorePermit,
    /// This connection's rate-limit buckets, made on its first publish or command (most
    /// connections only read: nothing to keep for them).
    pub(crate) buckets: Mutex<Option<Box<limits::Buckets>>>,
    /// Its principal's buckets, shared with the principal's other connections.
    pub(crate) shared: Option<Arc<Mutex<limits::Buckets>>>,
    /// What few connections use (presence, book depths, a trace parent), made on first use.
    pub(crate) rare: Option<Box<Rare>>,
    /// When tracing is on: when the first publication of the batch being read was checked
    /// (Unix ns; 0: none yet), the start of a traced batch's `validate` span.
    pub(crate) first_check: AtomicU64,
    pub(crate) _ip: IpCount,
}

/// A connection's place in the per-IP count, given back when it closes.
pub(crate) struct IpCount {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) ip: Option<std::net::IpAddr>,
}

impl Drop for IpCount {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.gateway.limiter.disconnect_ip(ip);
        }
    }
}

/// What [`Connection::next`] has for the edge.
#[derive(Debug)]
pub enum Event {
    /// Messages to write, in order (state snapshots and updates, stream messages).
    Deliver(Vec<Delivery>),
    /// The hub closed the session: tell the client why and where to resume, then close.
    Close(CloseReason),
}

/// The parts of a connection most connections never use, in one allocation made on first
/// use: every connection carries one pointer for them instead of ~110 bytes, and thousands
/// of idle connections hold nothing else of them (bench/results/idle.md).
#[derive(Default)]
pub(crate) struct Rare {
    /// Channels this connection counts its user in (presence), and the user's id.
    present: Vec<(Channel, String)>,
    /// Channels whose joins and leaves this connection also receives.
    presence_subs: Vec<Channel>,
    /// The W3C `traceparent` this connection's publishes are traced under (a gRPC stream's
    /// metadata), if it gave one.
    traceparent: Option<Box<[u8]>>,
    /// Book channels subscribed at a depth of the client's own (empty for almost every
    /// connection: then deliveries pass through untouched).
    depths: crate::depth::Depths,
}

impl Connection {
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// A connection that presents its credential after opening (WebSocket `connect`), or a
    /// fresh token for the same user (`refresh`): who it is from now on. A refresh must name
    /// the same user, so a connection can never change hands.
    pub fn set_principal(&mut self, principal: Principal) -> Result<(), Refusal> {
        match (&self.principal, &principal) {
            (Principal::Anonymous, _) => {}
            (Principal::User(a), Principal::User(b)) if a.sub == b.sub => {}
            (a, b) if a == b => {}
            (a, b) => {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    format!(
                        "this connection is {}; a credential for {} cannot take it over",
                        a.identity(),
                        b.identity()
                    ),
                ))
            }
        }
        if let Some(old) = self.shared.take() {
            self.gateway
                .limiter
                .release_principal(&self.principal.identity(), old);
        }
        self.shared = self.gateway.shared_buckets(&principal);
        if let Some(r) = self.gateway.sessions.lock().get_mut(&self.id) {
            r.identity = principal.identity().into();
        }
        self.principal = principal;
        Ok(())
    }

    /// The client's own name for itself (MQTT client id, FIX SenderCompID), shown to operators
    /// beside the connection.
    ///
    /// One string shared with the edge's own copies where it keeps them (MQTT's broker holds
    /// the client id three more times, bench/results/idle.md).
    pub fn set_client_id(&self, client_id: impl Into<Arc<str>>) {
        if let Some(r) = self.gateway.sessions.lock().get_mut(&self.id) {
            r.client_id = Some(client_id.into());
        }
    }

    /// [`Principal::identity`] as the registry keeps it: one string an edge can share rather
    /// than copy (MQTT keeps it as the client id's and the stored session's owner).
    pub fn identity(&self) -> Arc<str> {
        match self.gateway.sessions.lock().get(&self.id) {
            Some(r) => r.identity.clone(),
            None => self.principal.identity().into(),
        }
    }

    /// One command against this connection's command bucket (clients only).
    fn command(&self) -> Result<(), Refusal> {
        if !Gateway::limited(&self.principal) {
            return Ok(());
        }
        let rate = self.gateway.limiter.config.commands;
        let mut b = self.buckets.lock();
        let b = b.get_or_insert_with(Default::default);
        let r = b.command_at(rate);
        if r.is_err() {
            self.refused_by_limit();
        }
        r
    }

    /// Counts a command that does not go through another call here (a search) against this
    /// connection's command rate.
    pub fn count_command(&self) -> Result<(), Refusal> {
        self.command()
    }

    fn refused_by_limit(&self) {
        self.counters.rate_limited();
    }

    pub fn edge(&self) -> Edge {
        self.edge
    }

    /// The edge drops this connection because its client took no data for the write timeout
    /// (gone, or reading too slowly for its socket to make progress): counted and logged here,
    /// the same for every edge.
    pub fn write_timed_out(&self) {
        self.gateway.metrics().note_write_timeout();
        tracing::debug!(
            edge = self.edge.0,
            id = self.id,
            "client took no data for the write timeout; disconnected"
        );
    }

    /// The hub session underneath, for edges with subscription rules of their own (MQTT).
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Subscribes to a channel; `from` (stream channels) replays from that offset first.
    /// With `epoch`, the client says which incarnation of the stream its `from` belongs to: a
    /// different one is refused (`epoch_mismatch`) instead of replaying a new stream's offsets.
    pub fn subscribe(
        &mut self,
        channel: &Channel,
        from: Option<Offset>,
        epoch: Option<Epoch>,
    ) -> Result<SubscribeInfo, Refusal> {
        self.command()?;
        self.gateway.can_subscribe(&self.principal, channel)?;
        if let Some(given) = epoch {
            let current = self.gateway.hub.epoch(channel.namespace())?;
            if given != current {
                return Err(Refusal::new(
                    ErrorCode::EpochMismatch,
                    format!(
                        "namespace `{}` was recreated: its stream is epoch {current}, not {given}; offsets started again at 0, so subscribe without `epoch` (from 0 to replay it)",
                        channel.namespace()
                    ),
                ));
            }
        }
        let info = self
            .session
            .subscribe(channel, from)
            .map_err(Refusal::from)?;
        self.joined(channel);
        Ok(info)
    }

    /// Subscribes to a book channel (`book.<SYM>`) at the client's own depth: `depth` N of 1
    /// or more serves the best N levels a side (a snapshot of them, then deltas that keep the
    /// client's N levels exactly the book's best N, checksums of what it holds); 0 is every
    /// level the channel keeps, as a plain subscribe. Any other channel is refused: a depth
    /// means nothing there.
    pub fn subscribe_book(
        &mut self,
        channel: &Channel,
        depth: u32,
    ) -> Result<SubscribeInfo, Refusal> {
        if !self.gateway.hub.is_book(channel)? {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "`depth` is an option of book channels (`{}.<SYM>`); `{channel}` is not one",
                    tickwire_feed::names::BOOK
                ),
            ));
        }
        let info = self.subscribe(channel, None, None)?;
        if depth > 0 {
            self.rare().depths.add(channel.clone(), depth);
        }
        Ok(info)
    }

    /// Counts this connection's user in `channel` (namespaces with presence).
    fn joined(&mut self, channel: &Channel) {
        let Some(user) = self.principal.user() else {
            return;
        };
        if !self.gateway.has_presence(channel) {
            return;
        }
        self.gateway.presence.join(channel, user);
        let entry = (channel.clone(), user.sub.clone());
        self.rare().present.push(entry);
    }

    fn left(&mut self, channel: &Channel) {
        let Some(rare) = self.rare.as_mut() else {
            return;
        };
        if let Some(i) = rare.present.iter().position(|(c, _)| c == channel) {
            let (c, sub) = rare.present.swap_remove(i);
            self.gateway.presence.leave(&c, &sub);
        }
    }

    /// The connection's rarely used parts, made now if this is their first use.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Also delivers who joins and leaves `channel` (a subscription to `presence.<channel>`,
    /// live) and returns how to learn who is there now (a read from the cluster in cluster
    /// mode, so off the connection's task). The connection must be subscribed to `channel`.
    pub fn subscribe_presence(
        &mut self,
        channel: &Channel,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<PresenceMember>, Refusal>> + Send + 'static,
        Refusal,
    > {
        self.gateway.can_subscribe(&self.principal, channel)?;
        let pc = presence_channel(channel).ok_or_else(|| {
            Refusal::new(
                ErrorCode::BadChannel,
                format!("`{channel}` is too long to carry presence"),
            )
        })?;
        // Subscribed before the members are read: a change made after the read reaches the
        // client as an event (read first, a change between the two would be lost).
        let known = self
            .rare
            .as_ref()
            .is_some_and(|r| r.presence_subs.contains(channel));
        if self.gateway.has_presence(channel) && !known {
            self.session.subscribe(&pc, None).map_err(Refusal::from)?;
            self.rare().presence_subs.push(channel.clone());
        }
        let (gateway, principal, channel) = (
            self.gateway.clone(),
            self.principal.clone(),
            channel.clone(),
        );
        Ok(async move { gateway.presence_of(&principal, &channel).await })
    }

    /// Subscribes to a stream channel starting with its recent history: its newest `n`
    /// messages, or those since a time, then live. For a chat page that shows the latest
    /// lines without replaying the channel from offset 0.
    pub fn subscribe_recent(
        &mut self,
        channel: &Channel,
        recent: tickwire_hub::Recent,
    ) -> Result<SubscribeInfo, Refusal> {
        if let tickwire_hub::Recent::Last(n) = recent {
            if n == 0 || n > tickwire_hub::MAX_LAST {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("`last` must be 1 to {}", tickwire_hub::MAX_LAST),
                ));
            }
        }
        self.command()?;
        self.gateway.can_subscribe(&self.principal, channel)?;
        let from = self.gateway.hub.recent_start(channel, recent)?;
        let info = self
            .session
            .subscribe(channel, Some(from))
            .map_err(Refusal::from)?;
        self.joined(channel);
        Ok(info)
    }

    /// Subscribes to every channel matching `pattern` (see `Session::subscribe_pattern`).
    pub fn subscribe_pattern(
        &mut self,
        pattern: Pattern,
        from: Option<Offset>,
    ) -> Result<Vec<(Channel, SubscribeInfo)>, Refusal> {
        self.command()?;
        self.gateway
            .can_subscribe_pattern(&self.principal, &pattern)?;
        self.session
            .subscribe_pattern(pattern, from)
            .map_err(Refusal::from)
    }

    pub fn unsubscribe(&mut self, channel: &Channel) -> Result<(), Refusal> {
        self.command()?;
        self.session.unsubscribe(channel).map_err(Refusal::from)?;
        self.left(channel);
        if let Some(rare) = self.rare.as_mut() {
            rare.depths.remove(channel);
            if let Some(i) = rare.presence_subs.iter().position(|c| c == channel) {
                let c = rare.presence_subs.swap_remove(i);
                if let Some(pc) = presence_channel(&c) {
                    let _ = self.session.unsubscribe(&pc);
                }
            }
        }
        Ok(())
    }

    /// The W3C `traceparent` every publish on this connection is traced under.
    pub fn set_traceparent(&mut self, traceparent: Vec<u8>) {
        self.rare().traceparent = Some(traceparent.into_boxed_slice());
    }

    /// Validates one publication for this connection's principal, within its rate limits.
    pub fn check(&self, request: PublishRequest) -> Result<Checked, Refusal> {
        self.check_scanned(request, None)
    }

    /// [`Connection::check`] with the data's quote/trade fields already read
    /// ([`Gateway::check_scanned`]).
    pub fn check_scanned(
        &self,
        request: PublishRequest,
        fields: Option<&SchemaFields<'_>>,
    ) -> Result<Checked, Refusal> {
        if self.gateway.tracer.get().is_some() && self.first_check.load(Ordering::Relaxed) == 0 {
            self.first_check
                .store(tickwire_model::clock::now_nanos(), Ordering::Relaxed);
        }
        self.limit_publish(request.channel.namespace(), request.data.len())?;
        self.gateway.check_scanned(&self.principal, request, fields)
    }

    /// One publication of `bytes` to `namespace` against this connection's publish limits.
    fn limit_publish(&self, namespace: &str, bytes: usize) -> Result<(), Refusal> {
        if Gateway::limited(&self.principal) {
            let mut b = self.buckets.lock();
            let b = b.get_or_insert_with(Default::default);
            let r =
                self.gateway
                    .limiter
                    .publish(b, self.shared.as_deref(), namespace, bytes as u64);
            if let Err(r) = r {
                self.refused_by_limit();
                return Err(r);
            }
        }
        Ok(())
    }

    /// An edit or a delete of the message at `target` (within this connection's publish
    /// limits): a future that checks it against the target and stores its record, resolving to
    /// the record's acknowledgement. It owns what it needs, so the edge keeps it in its window
    /// of pending replies like a publish.
    pub fn amend(
        &self,
        channel: Channel,
        target: Offset,
        change: Change,
        msg_id: Option<String>,
    ) -> impl Future<Output = Result<Ack, Refusal>> + Send + 'static {
        let size = match &change {
            Change::Edit(d) => d.len(),
            Change::Delete => 0,
        };
        let limited = self.limit_publish(channel.namespace(), size);
        let (gw, principal, edge) = (self.gateway.clone(), self.principal.clone(), self.edge);
        async move {
            limited?;
            let checked = gw
                .amend(&principal, &channel, target, change, msg_id)
                .await?;
            gw.store(edge, checked).await
        }
    }

    /// A `read`: the user has read `channel` up to `offset`. A future (it waits for the marker
    /// to be durable) resolving to the channel's unread count after it.
    pub fn read(
        &self,
        channel: Channel,
        offset: Offset,
    ) -> impl Future<Output = Result<Unread, Refusal>> + Send + 'static {
        let checked = self
            .command()
            .and_then(|()| self.gateway.read_marker(&self.principal, &channel, offset));
        let (gw, principal, edge) = (self.gateway.clone(), self.principal.clone(), self.edge);
        async move {
            if let Some(c) = checked? {
                gw.store(edge, c).await?;
                if let (Some(store), Some(u)) = (gw.marker_store(), principal.user()) {
                    store.noted(&u.sub, &channel, offset);
                }
            }
            gw.unread(&principal, &channel).ok_or_else(|| {
                Refusal::new(ErrorCode::Unavailable, "read markers are not available")
            })
        }
    }

    /// This connection's user's unread count of `channel` (subscribe replies).
    pub fn unread(&self, channel: &Channel) -> Option<Unread> {
        self.gateway.unread(&self.principal, channel)
    }

    /// Hands checked publications to their namespace writers now (waiting only while a
    /// writer's queue is full) and returns their acknowledgements as a future, one per item in
    /// order. An edge keeps these futures in a window and reads its next command meanwhile.
    pub async fn enqueue(
        &self,
        checked: Vec<Checked>,
    ) -> impl Future<Output = Vec<Result<Ack, Refusal>>> + Send + 'static {
        let n = checked.len() as u64;
        let counters = self.counters.clone();
        // Edges without a traceparent (WebSocket, MQTT, a gRPC stream's items) trace a batch
        // of publishes read together as one publish request, when sampled.
        let traced = if self.gateway.tracer.get().is_some() {
            let now = tickwire_model::clock::now_nanos();
            let first = match self.first_check.swap(0, Ordering::Relaxed) {
                0 => now,
                t => t,
            };
            let parent = self.rare.as_ref().and_then(|r| r.traceparent.as_deref());
            self.gateway
                .trace_publish_since(first, parent)
                .map(|trace| {
                    let timing = crate::trace::PublishTiming {
                        items: checked.len(),
                        validated: (first, now),
                        timings: Vec::new(),
                    };
                    (trace, timing, self.gateway.clone(), self.edge.0)
                })
        } else {
            None
        };
        let acks = self.gateway.hub.enqueue(checked).await;
        async move {
            let acks = match traced {
                None => acks.await,
                Some((trace, mut timing, gateway, edge)) => {
                    let (acks, timings) = acks.timed().await;
                    timing.timings = timings;
                    let error = acks
                        .iter()
                        .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
                    gateway.finish_publish_trace(trace, edge, timing, error);
                    acks
                }
            };
            counters.published(n);
            acks.into_iter().map(|r| r.map_err(Refusal::from)).collect()
        }
    }

    /// Waits for the next thing to do: deliveries to write, or the session's end. Cancel-safe
    /// while waiting; the drain after the wait runs to completion.
    pub async fn next(&mut self) -> Event {
        tokio::select! {
            biased;
            _ = self.session.closed() => {}
            _ = self.session.wait() => {}
        }
        self.drain().await
    }

    /// Whatever is ready now, without waiting for more. Not cancel-safe: call it outside
    /// `select!`.
    pub async fn drain(&mut self) -> Event {
        match self.session.drain().await {
            Ok(mut batch) => {
                if let Some(rare) = self.rare.as_mut().filter(|r| !r.depths.is_empty()) {
                    rare.depths.apply(&mut batch, &self.gateway.hub);
                }
                self.count_batch(&batch);
                Event::Deliver(batch)
            }
            Err(reason) => {
                self.gateway.metrics.note_close(&reason);
                Event::Close(reason)
            }
        }
    }

    /// Counts a batch the edge is about to write: payload bytes per edge, messages and bytes
    /// per namespace (one atomic add per run of one namespace, not per message), and the
    /// delivery lag: the age of the batch's newest live message as the edge takes it
    /// (snapshots are old by nature and left out), one clock read per batch.
    fn count_batch(&mut self, batch: &[Delivery]) {
        let mut newest: Option<u64> = None;
        let mut total_bytes = 0u64;
        let mut run: Option<(&str, u64, u64)> = None;
        for d in batch {
            let p = &d.message.publication;
            if !d.snapshot {
                newest = Some(newest.map_or(p.timestamp, |n| n.max(p.timestamp)));
            }
            let bytes = p.data.len() as u64;
            total_bytes += bytes;
            let ns = p.channel.namespace();
            match &mut run {
                Some((name, n, b)) if *name == ns => {
                    *n += 1;
                    *b += bytes;
                }
                _ => {
                    if let Some((name, n, b)) = run.take() {
                        self.namespace_counters(name).delivered(n, b);
                    }
                    run = Some((ns, 1, bytes));
                }
            }
        }
        if let Some((name, n, b)) = run {
            self.namespace_counters(name).delivered(n, b);
        }
        self.counters.delivered_bytes(total_bytes);
        if let Some(newest) = newest {
            let age = tickwire_model::clock::now_nanos().saturating_sub(newest);
            self.counters
                .lag
                .observe(std::time::Duration::from_nanos(age));
        }
    }

    /// Lent, not cloned: a reference count taken and dropped per batch would be one more
    /// line every delivering thread writes.
    fn namespace_counters(&mut self, ns: &str) -> &crate::metrics::NamespaceCounters {
        let i = match self.namespaces.iter().position(|(n, _)| &**n == ns) {
            Some(i) => i,
            None => {
                let c = self.gateway.metrics.namespace(ns);
                self.namespaces.push((ns.into(), c));
                self.namespaces.len() - 1
            }
        };
        &self.namespaces[i].1
    }

    /// Counts messages written to the client.
    pub fn delivered(&self, n: u64) {
        self.counters.delivered(n);
    }

    /// Counts a refused command or publication.
    pub fn refused(&self) {
        self.counters.rejected();
    }

    /// Where each stream subscription would resume (for a disconnect frame).
    pub fn resume_points(&self) -> Vec<(String, Offset)> {
        self.session.resume_points()
    }

    /// Resolves when the hub closes this session. Cancel-safe.
    pub async fn closed(&self) {
        self.session.closed().await
    }

    /// Resolves when something may be ready to drain. Cancel-safe. A wake-up taken is owed a
    /// drain ([`tickwire_hub::Session::wait`]): the next comes only after one.
    pub async fn wait(&self) {
        self.session.wait().await
    }

    /// [`Connection::wait`] as the bare future: a parked WebSocket connection's task holds it
    /// (each `async fn` layer around it would add to every such task).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.session.notified()
    }

    /// A handle that wakes this connection's task from another one, as a delivery would
    /// ([`tickwire_hub::SessionCloser::wake`]), or closes its session.
    pub fn waker(&self) -> tickwire_hub::SessionCloser {
        self.session.closer()
    }

    /// When the credential of `principal` expires, as an instant of the runtime's clock.
    pub fn token_deadline(&self) -> Option<tokio::time::Instant> {
        let exp = self.principal.expires_at()?;
        let now = tickwire_model::clock::now_nanos() / 1_000_000_000;
        Some(tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(now)))
    }

    /// Ends the connection because its token expired: the edge's close path (a disconnect
    /// with resume points) runs as for any server-side close.
    pub fn expire(&self) {
        self.session.closer().close(CloseReason::TokenExpired);
    }

    /// Counts this connection as parked while idle (`true`) or served again (`false`), in its
    /// edge's gauge.
    pub fn set_parked(&self, parked: bool) {
        self.counters.set_parked(parked);
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.session.close_reason()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(rare) = self.rare.as_mut() {
            for (c, sub) in rare.present.drain(..) {
                self.gateway.presence.leave(&c, &sub);
            }
        }
        self.gateway.sessions.lock().remove(&self.id);
        self.counters.disconnected();
        if let Some(shared) = self.shared.take() {
            self.gateway
                .limiter
                .release_principal(&self.principal.identity(), shared);
        }
    }
}

/// The acknowledgements of a batch handed to the hub ([`Connection::enqueue`]), boxed so an
/// edge can keep several in a window while it goes on reading.
pub type AckFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Result<Ack, Refusal>>> + Send>>;
