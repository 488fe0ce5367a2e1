//! Presence across the nodes of a cluster: who is in a channel is whoever any live node counts
//! there, and a join or leave is published once for the cluster, not once per node.
//!
//! Two KV buckets (replicated like the streams):
//! - `presence`: one key per channel and user (`<hex channel>.<hex sub>`) whose value names the
//!   nodes that count the user there, changed only by compare-and-set. The node whose write
//!   takes the set from no live node to some publishes the join; the one whose write empties it
//!   publishes the leave. A user with tabs on two nodes is there once, and leaves with the last.
//! - `presence_nodes`: one key per running node, renewed every fifth of `presence_ttl_secs` and
//!   gone that long after its node stopped renewing (a kill -9, a lost NATS link). Members are
//!   counted only on live nodes, and the first live node (by name) sweeps a dead node's users
//!   out of the sets, publishing their leaves.
//!
//! Writes leave the connection's path: the tracker queues them and one task applies them in
//! order, so a subscribe never waits for the cluster, and a node's own joins and leaves are
//! published in the order its users made them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tickwire_hub::{Channel, PublishRequest};
use tickwire_stream::{
    kv::{hex_key, unhex_key, Kv, KvProvider},
    StreamError,
};
use tokio::sync::mpsc;

use super::{join_event, leave_event, presence_channel, Member, PresenceMember};

/// How long opening retries registering this node before the server gives up starting.
const OPEN_RETRY_FOR: Duration = Duration::from_secs(30);

/// This node's members: channel → user → member (shared with the tracker).
pub(crate) type Local = Arc<Mutex<HashMap<Channel, BTreeMap<String, Member>>>>;

/// One channel and user in the shared bucket.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<Box<RawValue>>,
    /// The nodes (holder names) that count the user in the channel.
    #[serde(default)]
    nodes: BTreeSet<String>,
}

impl Entry {
    fn decode(v: &[u8]) -> Entry {
        // An entry no node can read counts nobody; the next write replaces it.
        serde_json::from_slice(v).unwrap_or_default()
    }

    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What the tracker asks of the cluster, in the order its members changed.
pub(crate) enum Op {
    Join {
        channel: Channel,
        sub: String,
        info: Option<Box<RawValue>>,
    },
    Leave {
        channel: Channel,
        sub: String,
    },
    /// Make the shared entries match this node's members (after NATS was out of reach, or
    /// this node was taken for dead and swept).
    Reconcile,
}

/// A join or leave to publish on `presence.<channel>`.
type Event = (Channel, String);

/// Presence shared through the cluster's KV buckets.
pub(crate) struct ClusterPresence {
    ops: mpsc::UnboundedSender<Op>,
    state: Arc<State>,
}

struct State {
    entries: Arc<dyn Kv>,
    nodes: Arc<dyn Kv>,
    /// This process's holder name.
    me: String,
    /// The nodes whose liveness key was there at the last look (always this one).
    live: RwLock<BTreeSet<String>>,
    ttl: Duration,
    local: Local,
    events: Option<mpsc::UnboundedSender<PublishRequest>>,
    /// A write failed: the entries may not match this node's members until a reconcile.
    dirty: AtomicBool,
}

fn key(channel: &Channel, sub: &str) -> String {
    format!("{}.{}", hex_key(channel.as_str()), hex_key(sub))
}

fn parse_key(key: &str) -> Option<(Channel, String)> {
    let (c, s) = key.split_once('.')?;
    Some((Channel::parse(&unhex_key(c)?).ok()?, unhex_key(s)?))
}

impl ClusterPresence {
    /// Opens the buckets and says this node is alive. Blocking (round trips to the cluster).
    pub(crate) fn open(
        provider: &dyn KvProvider,
        ttl: Duration,
        local: Local,
        events: Option<mpsc::UnboundedSender<PublishRequest>>,
    ) -> Result<(ClusterPresence, mpsc::UnboundedReceiver<Op>), StreamError> {
        // `[cluster] presence_ttl_secs` is at least 1; tests use less.
        let ttl = ttl.max(Duration::from_millis(100));
        let entries = provider.bucket("presence", None)?;
        let nodes = provider.bucket("presence_nodes", Some(ttl))?;
        let me = provider.holder().to_string();
        // Alive before any entry names this node: a sweep reads entries before it reads the
        // live nodes, so it never takes a node that has entries for dead. Retried for a
        // while: a bucket just opened may still be electing its leader when a cluster starts
        // or a node restarts beside a busy one ("no stream found for given subject").
        let deadline = std::time::Instant::now() + OPEN_RETRY_FOR;
        loop {
            match nodes.put(&hex_key(&me), Bytes::from(me.clone())) {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!("presence: cannot register this node yet; retrying: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
        let state = Arc::new(State {
            entries,
            nodes,
            live: RwLock::new(BTreeSet::from([me.clone()])),
            me,
            ttl,
            local,
            events,
            dirty: AtomicBool::new(false),
        });
        // A failed first look is not fatal: the live set holds this node, and the next
        // renewal (a fifth of the TTL) looks again.
        if let Err(e) = state.refresh_live() {
            tracing::warn!("presence: cannot list the live nodes yet: {e}");
        }
        let (ops, rx) = mpsc::unbounded_channel();
        Ok((ClusterPresence { ops, state }, rx))
    }

    /// Starts the task that applies the queued changes and the one that keeps this node
    /// alive and sweeps dead ones, on the current runtime.
    pub(crate) fn run(&self, rx: mpsc::UnboundedReceiver<Op>) {
        tokio::spawn(apply_ops(self.state.clone(), rx));
        tokio::spawn(keep_alive(self.state.clone(), self.ops.clone()));
    }

    pub(crate) fn send(&self, op: Op) {
        let _ = self.ops.send(op);
    }

    /// The holders (cluster processes, `KvProvider::holder`) whose liveness key is there now,
    /// this one included: read from the cluster, not the last renewal's look. Blocking.
    pub(crate) fn live_holders(&self) -> Result<BTreeSet<String>, StreamError> {
        self.state.refresh_live()?;
        Ok(self.state.live.read().clone())
    }

    /// Who any live node counts in `channel`, by user id.
    pub(crate) async fn members(
        &self,
        channel: &Channel,
    ) -> Result<Vec<PresenceMember>, StreamError> {
        let (state, channel) = (self.state.clone(), channel.clone());
        tokio::task::spawn_blocking(move || state.members(&channel))
            .await
            .map_err(|e| StreamError::storage("", format!("presence: {e}")))?
    }
}

impl State {
    fn emit(&self, events: Vec<Event>) {
        let Some(tx) = &self.events else {
            return;
        };
        for (channel, data) in events {
            if let Some(ch) = presence_channel(&channel) {
                let _ = tx.send(PublishRequest {
                    channel: ch,
                    msg_id: None,
                    data: Bytes::from(data),
                });
            }
        }
    }

    fn is_live(&self, node: &str) -> bool {
        node == self.me || self.live.read().contains(node)
    }

    fn refresh_live(&self) -> Result<(), StreamError> {
        let mut live: BTreeSet<String> = self
            .nodes
            .keys()?
            .iter()
            .filter_map(|k| unhex_key(k))
            .collect();
        live.insert(self.me.clone());
        *self.live.write() = live;
        Ok(())
    }

    /// Counts this node's user in the shared entry; whether that made the user present.
    fn join(
        &self,
        channel: &Channel,
        sub: &str,
        info: &Option<Box<RawValue>>,
    ) -> Result<bool, StreamError> {
        let key = key(channel, sub);
        loop {
            match self.entries.get(&key)? {
                None => {
                    let e = Entry {
                        info: info.clone(),
                        nodes: BTreeSet::from([self.me.clone()]),
                    };
                    if self.entries.create(&key, e.encode())?.is_some() {
                        return Ok(true);
                    }
                }
                Some(cur) => {
                    let mut e = Entry::decode(&cur.value);
                    let was_present = e.nodes.iter().any(|n| self.is_live(n));
                    if e.nodes.contains(&self.me) {
                        return Ok(false);
                    }
                    e.nodes.insert(self.me.clone());
                    if info.is_some() {
                        e.info = info.clone();
                    }
                    if self
                        .entries
                        .update(&key, e.encode(), cur.revision)?
                        .is_some()
                    {
                        return Ok(!was_present);
                    }
                }
            }
            // Another node wrote the entry between our read and write: read it again.
        }
    }

    /// Removes `gone` nodes from the shared entry; whether the user left (no live node counts
    /// it any more).
    fn remove(&self, key: &str, gone: &dyn Fn(&str) -> bool) -> Result<bool, StreamError> {
        loop {
            let Some(cur) = self.entries.get(key)? else {
                return Ok(false);
            };
            let mut e = Entry::decode(&cur.value);
            let before = e.nodes.len();
            e.nodes.retain(|n| !gone(n));
            if e.nodes.len() == before {
                return Ok(false);
            }
            let written = if e.nodes.is_empty() {
                self.entries.delete_if(key, cur.revision)?
            } else {
                self.entries
                    .update(key, e.encode(), cur.revision)?
                    .is_some()
            };
            if written {
                return Ok(!e.nodes.iter().any(|n| self.is_live(n)));
            }
        }
    }

    fn leave(&self, channel: &Channel, sub: &str) -> Result<bool, StreamError> {
        let me = self.me.clone();
        self.remove(&key(channel, sub), &move |n| n == me)
    }

    fn apply(&self, op: Op) -> Result<Vec<Event>, StreamError> {
        Ok(match op {
            Op::Join { channel, sub, info } => {
                if self.join(&channel, &sub, &info)? {
                    vec![(channel, join_event(&sub, &info))]
                } else {
                    vec![]
                }
            }
            Op::Leave { channel, sub } => {
                if self.leave(&channel, &sub)? {
                    vec![(channel, leave_event(&sub))]
                } else {
                    vec![]
                }
            }
            Op::Reconcile => self.reconcile()?,
        })
    }

    fn reconcile(&self) -> Result<Vec<Event>, StreamError> {
        let local: Vec<(Channel, String, Option<Box<RawValue>>)> = self
            .local
            .lock()
            .iter()
            .flat_map(|(c, ms)| {
                ms.iter()
                    .map(|(sub, m)| (c.clone(), sub.clone(), m.info.clone()))
            })
            .collect();
        let want: HashSet<String> = local.iter().map(|(c, s, _)| key(c, s)).collect();
        let mut events = Vec::new();
        for (k, e) in self.entries.scan("")? {
            if want.contains(&k) || !Entry::decode(&e.value).nodes.contains(&self.me) {
                continue;
            }
            if let Some((channel, sub)) = parse_key(&k) {
                if self.leave(&channel, &sub)? {
                    events.push((channel, leave_event(&sub)));
                }
            }
        }
        for (channel, sub, info) in local {
            if self.join(&channel, &sub, &info)? {
                events.push((channel, join_event(&sub, &info)));
            }
        }
        Ok(events)
    }

    fn members(&self, channel: &Channel) -> Result<Vec<PresenceMember>, StreamError> {
        let mut out = Vec::new();
        for (k, e) in self.entries.scan(&hex_key(channel.as_str()))? {
            let e = Entry::decode(&e.value);
            if !e.nodes.iter().any(|n| self.is_live(n)) {
                continue;
            }
            if let Some((_, sub)) = parse_key(&k) {
                out.push(PresenceMember { sub, info: e.info });
            }
        }
        Ok(out)
    }

    /// Renews this node's liveness (a reconcile is due if it had lapsed), refreshes the live
    /// set and, every other time on the first live node, sweeps dead nodes' users out.
    fn tick(&self, sweep: bool) -> Result<(bool, Vec<Event>), StreamError> {
        let me = hex_key(&self.me);
        let lapsed = self.nodes.get(&me)?.is_none();
        self.nodes.put(&me, Bytes::from(self.me.clone()))?;
        // Entries first, live nodes second: an entry seen was written by a node that was
        // alive before it wrote it, so it is in the live set read after (unless it died).
        let entries = if sweep {
            Some(self.entries.scan("")?)
        } else {
            None
        };
        self.refresh_live()?;
        let mut events = Vec::new();
        let first = self.live.read().first().is_some_and(|n| *n == self.me);
        if let (Some(entries), true) = (entries, first) {
            for (k, e) in entries {
                let e = Entry::decode(&e.value);
                if e.nodes.iter().all(|n| self.is_live(n)) {
                    continue;
                }
                if self.remove(&k, &|n| !self.is_live(n))? {
                    if let Some((channel, sub)) = parse_key(&k) {
                        events.push((channel, leave_event(&sub)));
                    }
                }
            }
        }
        Ok((lapsed, events))
    }
}

/// Applies the tracker's changes in order, a batch per trip to the blocking pool.
async fn apply_ops(state: Arc<State>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, 256).await > 0 {
        let batch = std::mem::take(&mut buf);
        let s = state.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            for op in batch {
                match s.apply(op) {
                    Ok(e) => events.extend(e),
                    Err(e) => {
                        tracing::warn!("presence: a change did not reach the cluster: {e}");
                        s.dirty.store(true, Ordering::Relaxed);
                    }
                }
            }
            events
        })
        .await;
        match done {
            Ok(events) => state.emit(events),
            Err(e) => {
                tracing::warn!("presence: {e}");
                state.dirty.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Keeps this node alive in `presence_nodes`, and sweeps or reconciles when due.
async fn keep_alive(state: Arc<State>, ops: mpsc::UnboundedSender<Op>) {
    let every = (state.ttl / 5).max(Duration::from_millis(200));
    let mut round = 0u64;
    loop {
        tokio::time::sleep(every).await;
        round += 1;
        let s = state.clone();
        let done = tokio::task::spawn_blocking(move || s.tick(round.is_multiple_of(2))).await;
        match done {
            Ok(Ok((lapsed, events))) => {
                state.emit(events);
                if lapsed || state.dirty.swap(false, Ordering::Relaxed) {
                    if lapsed {
                        tracing::warn!(
                            "presence: this node was taken for dead; its members are written again"
                        );
                    }
                    if ops.send(Op::Reconcile).is_err() {
                        return;
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("presence: cannot renew this node's liveness: {e}");
                state.dirty.store(true, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("presence: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_stream::kv::MemoryKvProvider;

    fn node(
        provider: &MemoryKvProvider,
        ttl: Duration,
    ) -> (Arc<State>, mpsc::UnboundedReceiver<PublishRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (cp, _ops) = ClusterPresence::open(provider, ttl, Local::default(), Some(tx))
            .expect("memory buckets open");
        (cp.state, rx)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<PublishRequest>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(format!(
                "{} {}",
                r.channel,
                String::from_utf8_lossy(&r.data)
            ));
        }
        out
    }

    fn subs(state: &State, ch: &Channel) -> Vec<String> {
        let mut v: Vec<String> = state
            .members(ch)
            .expect("members")
            .into_iter()
            .map(|m| m.sub)
            .collect();
        v.sort();
        v
    }

    fn apply(state: &State, op: Op) {
        let events = state.apply(op).expect("applied");
        state.emit(events);
    }

    #[test]
    fn one_join_and_one_leave_for_the_cluster_and_dead_nodes_are_swept() {
        let ttl = Duration::from_millis(300);
        let a_kv = MemoryKvProvider::new("a-1");
        let b_kv = a_kv.other("b-1");
        let (a, mut a_events) = node(&a_kv, ttl);
        let (b, mut b_events) = node(&b_kv, ttl);
        a.refresh_live().expect("live");
        let lobby = Channel::parse("chat.lobby").expect("channel");
        let info = RawValue::from_string(r#"{"name":"Ann"}"#.into()).ok();
        let join = |sub: &str, info: &Option<Box<RawValue>>| Op::Join {
            channel: lobby.clone(),
            sub: sub.into(),
            info: info.clone(),
        };
        let leave = |sub: &str| Op::Leave {
            channel: lobby.clone(),
            sub: sub.into(),
        };

        // Ann on both nodes: one join, published by the node she reached first.
        apply(&a, join("ann", &info));
        apply(&b, join("ann", &None));
        assert_eq!(
            drain(&mut a_events),
            [r#"presence.chat.lobby {"join":{"info":{"name":"Ann"},"sub":"ann"}}"#]
        );
        assert!(drain(&mut b_events).is_empty(), "Ann was there already");
        apply(&b, join("bob", &None));
        assert_eq!(
            subs(&a, &lobby),
            ["ann", "bob"],
            "node a sees node b's users"
        );
        let got = a.members(&lobby).expect("members");
        assert_eq!(
            got[0].info.as_ref().map(|i| i.get()),
            Some(r#"{"name":"Ann"}"#),
            "the token's info is kept when a node without it joins"
        );

        // Ann leaves node a: still on node b, so no leave.
        apply(&a, leave("ann"));
        assert!(drain(&mut a_events).is_empty());
        assert_eq!(subs(&b, &lobby), ["ann", "bob"]);
        apply(&a, leave("ann"));
        assert!(
            drain(&mut a_events).is_empty(),
            "a second leave changes nothing"
        );

        // Node b dies (stops renewing): node a stops counting its users once its liveness key
        // expires, and the sweep publishes their leaves.
        drain(&mut b_events);
        std::thread::sleep(ttl + Duration::from_millis(50));
        let (_, events) = a.tick(true).expect("tick");
        a.emit(events);
        let mut left = drain(&mut a_events);
        left.sort();
        assert_eq!(
            left,
            [
                r#"presence.chat.lobby {"leave":{"sub":"ann"}}"#,
                r#"presence.chat.lobby {"leave":{"sub":"bob"}}"#
            ]
        );
        assert!(subs(&a, &lobby).is_empty());
        assert!(a.entries.scan("").expect("scan").is_empty(), "swept away");

        // Node b comes back (its renewal finds its key gone): a reconcile writes its members
        // again and says they joined.
        b.local.lock().entry(lobby.clone()).or_default().insert(
            "bob".into(),
            Member {
                count: 1,
                info: None,
            },
        );
        let (lapsed, _) = b.tick(false).expect("tick");
        assert!(lapsed);
        apply(&b, Op::Reconcile);
        assert_eq!(
            drain(&mut b_events),
            [r#"presence.chat.lobby {"join":{"sub":"bob"}}"#]
        );
        a.refresh_live().expect("live");
        assert_eq!(subs(&a, &lobby), ["bob"]);
    }

    #[test]
    fn keys_carry_any_channel_and_user() {
        let ch = Channel::parse("chat.room-1").expect("channel");
        let k = key(&ch, "user.with.dots");
        assert_eq!(k.matches('.').count(), 1, "one separator: {k}");
        let (c, s) = parse_key(&k).expect("parsed");
        assert_eq!((c.as_str(), s.as_str()), ("chat.room-1", "user.with.dots"));
        assert!(parse_key("zz.41").is_none());
    }
}
