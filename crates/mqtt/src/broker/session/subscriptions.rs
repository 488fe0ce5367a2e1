//! Subscriptions: SUBSCRIBE and UNSUBSCRIBE, a stored session's subscriptions re-created at
//! their stored positions, the hub subscriptions they take through the [`Router`], and the QoS
//! each channel's messages go out with.

use tickwire_model::{Channel, Class, Offset, Pattern};

use super::delivery::ChanPos;
use super::{BrokerSession, Refused, Router};
use crate::broker::stored::StoredSession;
use crate::broker::topic::{filter_to_target, Target};
use crate::{Packet, Property, PubRel, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe};

/// A client's subscription.
pub(super) struct Sub {
    pub(super) filter: String,
    pub(super) qos: QoS,
    target: Target,
}

impl BrokerSession {
    /// Re-creates a stored session's subscriptions at their stored positions.
    pub(super) fn restore(&mut self, s: StoredSession, router: &mut dyn Router) {
        for &pid in &s.qos2_awaiting_rel {
            if self.proto.restore_awaiting_pubrel(pid) {
                self.flows.qos2_in.insert(pid);
            }
        }
        for stored in s.subs {
            let Ok(target) = filter_to_target(&stored.filter) else {
                continue;
            };
            let qos = QoS::from_u8(stored.qos).unwrap_or(QoS::AtMostOnce);
            let ok = match &target {
                Target::Channel(ch) => {
                    let from = s.positions.get(ch.as_str()).copied();
                    self.subscribe_channel(ch, from, router).is_ok()
                }
                Target::Pattern(p) => {
                    // Channels the client had seen resume at their own positions...
                    for (name, pos) in &s.positions {
                        let Ok(ch) = Channel::parse(name) else {
                            continue;
                        };
                        if p.matches(&ch)
                            && !self.flows.chans.contains_key(&ch)
                            && router.subscribe(&ch, Some(*pos)).is_ok()
                        {
                            let mut cp = ChanPos::new(*pos);
                            cp.for_pattern = true;
                            self.flows.chans.insert(ch, cp);
                        }
                    }
                    // ...and those that appeared while it was away from the namespace mark.
                    let mark = p.namespace().and_then(|ns| s.marks.get(ns).copied());
                    self.subscribe_pattern(p, mark, router).is_ok()
                }
            };
            if ok {
                self.flows.subs.push(Sub {
                    filter: stored.filter,
                    qos,
                    target,
                });
            } else {
                tracing::warn!(client = %self.client_id, filter = %stored.filter, "stored MQTT subscription no longer valid; dropped");
            }
        }
        self.regrant();
        for (name, acked) in s.acked_ahead {
            if let Some(cp) = Channel::parse(&name)
                .ok()
                .and_then(|c| self.flows.chans.get_mut(&c))
            {
                cp.acked_ahead.extend(acked);
            }
        }
        // Unfinished outgoing QoS 2 flows [MQTT-4.4.0-1]: PUBREL again for the released ones,
        // and the others resent with DUP and their own ids when the stream replays them.
        for pid in s.qos2_out_awaiting_comp {
            if self.proto.restore_outgoing(pid, true) {
                self.send(Packet::PubRel(PubRel::new(pid)));
            }
        }
        for f in s.qos2_out_unreceived {
            let Ok(ch) = Channel::parse(&f.channel) else {
                continue;
            };
            if self
                .flows
                .chans
                .get(&ch)
                .is_some_and(|cp| cp.granted.is_some())
                && self.proto.restore_outgoing(f.packet_id, false)
            {
                self.flows
                    .resend
                    .entry(ch)
                    .or_default()
                    .insert(f.offset, f.packet_id);
            }
        }
        self.dirty = true;
    }

    fn subscribe_channel(
        &mut self,
        ch: &Channel,
        from: Option<Offset>,
        router: &mut dyn Router,
    ) -> Result<(), Refused> {
        let stream = router.class(ch.namespace()) == Some(Class::Stream);
        if let Some(cp) = self.flows.chans.get_mut(ch) {
            if cp.for_pattern {
                cp.for_pattern = false;
                return Ok(());
            }
        }
        let start = router.subscribe(ch, if stream { from } else { None })?;
        if stream {
            let start = start.or(from).unwrap_or(0);
            self.flows
                .chans
                .entry(ch.clone())
                .or_insert_with(|| ChanPos::new(start));
        }
        Ok(())
    }

    fn subscribe_pattern(
        &mut self,
        p: &Pattern,
        from: Option<Offset>,
        router: &mut dyn Router,
    ) -> Result<(), Refused> {
        let stream_ns = p
            .namespace()
            .filter(|ns| router.class(ns) == Some(Class::Stream))
            .map(str::to_string);
        let now = match &stream_ns {
            Some(ns) => Some(router.next_offset(ns)?),
            None => None,
        };
        let from = if stream_ns.is_some() { from } else { None };
        let matched = router.subscribe_pattern(p, from)?;
        for (ch, class, start) in matched {
            if class == Class::Stream {
                let start = start.or(from).or(now).unwrap_or(0);
                self.flows
                    .chans
                    .entry(ch)
                    .or_insert_with(|| ChanPos::new(start));
            }
        }
        if let (Some(ns), Some(now)) = (stream_ns, now) {
            let mark = from.map_or(now, |f| f.min(now));
            self.flows.marks.entry(ns).or_insert(mark);
        }
        Ok(())
    }

    /// One filter of a SUBSCRIBE: the granted QoS or why not.
    fn add_sub(
        &mut self,
        filter: &str,
        requested: QoS,
        router: &mut dyn Router,
    ) -> Result<QoS, Refused> {
        let refused = |code, reason: String| Refused { code, reason };
        if crate::topic::parse_shared(filter).ok().flatten().is_some() {
            return Err(refused(
                ReasonCode::SharedSubscriptionsNotSupported,
                "shared subscriptions are not supported".into(),
            ));
        }
        let target =
            filter_to_target(filter).map_err(|e| refused(ReasonCode::TopicFilterInvalid, e))?;
        let namespace = match &target {
            Target::Channel(c) => Some(c.namespace().to_string()),
            Target::Pattern(p) => p.namespace().map(str::to_string),
        };
        let class = match &namespace {
            Some(ns) => Some(router.class(ns).ok_or_else(|| {
                refused(
                    ReasonCode::TopicFilterInvalid,
                    format!(
                        "unknown namespace `{ns}`; configured namespaces: {}",
                        router.namespaces().join(", ")
                    ),
                )
            })?),
            None => None,
        };
        // State channels are latest-wins values: QoS 0 is what they can promise.
        let granted = match class {
            Some(Class::State) => QoS::AtMostOnce,
            _ => requested,
        };
        if let Some(existing) = self.flows.subs.iter_mut().find(|s| s.filter == filter) {
            existing.qos = granted;
            self.regrant();
            return Ok(granted);
        }
        match &target {
            Target::Channel(ch) => self.subscribe_channel(ch, None, router)?,
            Target::Pattern(p) => self.subscribe_pattern(p, None, router)?,
        }
        self.flows.subs.push(Sub {
            filter: filter.to_string(),
            qos: granted,
            target,
        });
        self.regrant();
        self.dirty = true;
        Ok(granted)
    }

    fn remove_sub(&mut self, filter: &str, router: &mut dyn Router) -> ReasonCode {
        let Some(i) = self.flows.subs.iter().position(|s| s.filter == filter) else {
            return ReasonCode::NoSubscriptionExisted;
        };
        let sub = self.flows.subs.remove(i);
        match &sub.target {
            Target::Channel(ch) => {
                if self.flows.subs.iter().any(|s| matches(&s.target, ch)) {
                    // Another (pattern) subscription still wants it: keep the hub's.
                    if let Some(cp) = self.flows.chans.get_mut(ch) {
                        cp.for_pattern = true;
                    }
                } else {
                    router.unsubscribe(ch);
                }
            }
            Target::Pattern(p) => {
                router.unsubscribe_pattern(p);
                let behalf: Vec<Channel> = self
                    .flows
                    .chans
                    .iter()
                    .filter(|(c, cp)| cp.for_pattern && p.matches(c))
                    .map(|(c, _)| c.clone())
                    .collect();
                for ch in behalf {
                    if !self.flows.subs.iter().any(|s| matches(&s.target, &ch)) {
                        router.unsubscribe(&ch);
                    }
                }
                if let Some(ns) = p.namespace() {
                    let still = self.flows.subs.iter().any(
                        |s| matches!(&s.target, Target::Pattern(q) if q.namespace() == Some(ns)),
                    );
                    if !still {
                        self.flows.marks.remove(ns);
                    }
                }
            }
        }
        let f = &mut *self.flows;
        f.chans
            .retain(|ch, _| f.subs.iter().any(|s| matches(&s.target, ch)));
        self.regrant();
        self.dirty = true;
        ReasonCode::Success
    }

    /// Recomputes every channel's delivery QoS after the subscriptions changed.
    fn regrant(&mut self) {
        let f = &mut *self.flows;
        for (ch, cp) in &mut f.chans {
            cp.granted = granted_for(&f.subs, ch);
        }
    }

    pub(super) fn on_subscribe(&mut self, s: Subscribe, router: &mut dyn Router) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut why: Option<String> = None;
        for f in &s.filters {
            match self.add_sub(&f.filter, f.options.qos, router) {
                Ok(q) => codes.push(ReasonCode::granted(q)),
                Err(r) => {
                    codes.push(r.code);
                    why.get_or_insert(format!("{}: {}", f.filter, r.reason));
                }
            }
        }
        // The session is on disk before the client is told it exists.
        self.persist_before_send = true;
        let mut ack = SubAck {
            packet_id: s.packet_id,
            reason_codes: codes,
            properties: Default::default(),
        };
        if let (Some(w), true) = (why, self.problem_info) {
            ack.properties.push(Property::ReasonString(w));
        }
        self.send(Packet::SubAck(ack));
    }

    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe, router: &mut dyn Router) {
        let codes: Vec<ReasonCode> = u
            .filters
            .iter()
            .map(|f| self.remove_sub(f, router))
            .collect();
        self.persist_before_send = true;
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reason_codes: codes,
            properties: Default::default(),
        }));
    }
}

/// The QoS a message of `ch` is delivered with: the highest granted by a matching filter.
pub(super) fn granted_for(subs: &[Sub], ch: &Channel) -> Option<QoS> {
    subs.iter()
        .filter(|s| matches(&s.target, ch))
        .map(|s| s.qos)
        .max()
}

fn matches(target: &Target, ch: &Channel) -> bool {
    match target {
        Target::Channel(c) => c == ch,
        Target::Pattern(p) => p.matches(ch),
    }
}
