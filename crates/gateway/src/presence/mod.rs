//! Presence: who is subscribed to a channel, by user (a token's `sub` and `info`), not by
//! connection. A user joins a channel with their first subscription to it (any edge, any
//! connection) and leaves with their last; each join and leave is published on
//! `presence.<channel>` for subscribers that asked for it (`"presence": true`), and the
//! members are answered from memory (`GET /v1/presence/{channel}`, the `presence` op).
//!
//! The tracker counts the subscriptions of this server's connections. On a single server its
//! events go out through the hub in the order the tracker changed (one publisher task), so a
//! subscriber that applies them to the member list it got with its subscribe reply stays
//! right: a join of someone listed, or a leave of someone not, changes nothing. In cluster mode
//! ([`cluster`]) the nodes share who is where through KV buckets, and a join or leave is
//! published once for the cluster.

mod cluster;

use std::{sync::OnceLock, time::Duration};

use bytes::Bytes;
use serde_json::value::RawValue;
use tickwire_hub::{Channel, Hub, PublishRequest};
use tickwire_model::PRESENCE;
use tickwire_stream::kv::KvProvider;
use tokio::sync::mpsc;

use crate::User;
use cluster::{ClusterPresence, Local, Op};

/// One user in one channel.
#[derive(Debug)]
pub(crate) struct Member {
    /// Subscriptions of this user to this channel on this node.
    count: usize,
    info: Option<Box<RawValue>>,
}

/// The presence of every channel on this node.
pub(crate) struct Tracker {
    channels: Local,
    events: Option<mpsc::UnboundedSender<PublishRequest>>,
    /// Cluster mode: where joins and leaves go instead of straight out.
    cluster: OnceLock<ClusterPresence>,
}

/// A member as the protocol shows it: `{"sub":..,"info":..}`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PresenceMember {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

fn join_event(sub: &str, info: &Option<Box<RawValue>>) -> String {
    let member = PresenceMember {
        sub: sub.to_string(),
        info: info.clone(),
    };
    serde_json::json!({ "join": member }).to_string()
}

fn leave_event(sub: &str) -> String {
    serde_json::json!({ "leave": {"sub": sub} }).to_string()
}

/// The channel that carries `channel`'s joins and leaves.
pub fn presence_channel(channel: &Channel) -> Option<Channel> {
    Channel::parse(&format!("{PRESENCE}.{channel}")).ok()
}

impl Tracker {
    /// A tracker whose events are published through `hub` by a task on the current runtime
    /// (none outside one: unit tests then track without publishing).
    pub(crate) fn new(hub: &std::sync::Arc<Hub>) -> Tracker {
        let events = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (tx, rx) = mpsc::unbounded_channel();
            rt.spawn(publish(hub.clone(), rx));
            tx
        });
        Tracker {
            channels: Local::default(),
            events,
            cluster: OnceLock::new(),
        }
    }

    /// Cluster mode: shares this node's members with the others through `kv`'s buckets (a node
    /// that stops renewing for `ttl` is taken for dead and its users leave). Opens the buckets
    /// (blocking), then runs on the current runtime. Once, before connections come in.
    pub(crate) async fn share(
        &self,
        kv: std::sync::Arc<dyn KvProvider>,
        ttl: Duration,
    ) -> Result<(), String> {
        let (local, events) = (self.channels.clone(), self.events.clone());
        let (cp, rx) = tokio::task::spawn_blocking(move || {
            ClusterPresence::open(kv.as_ref(), ttl, local, events)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("presence: opening its KV buckets in the cluster: {e}"))?;
        cp.run(rx);
        self.cluster
            .set(cp)
            .map_err(|_| "presence is shared with the cluster already".to_string())
    }

    /// Cluster mode: the holders alive now (see [`ClusterPresence::live_holders`]); `None` on
    /// a single server. Blocking.
    pub(crate) fn live_holders(
        &self,
    ) -> Option<Result<std::collections::BTreeSet<String>, String>> {
        let c = self.cluster.get()?;
        Some(c.live_holders().map_err(|e| e.to_string()))
    }

    fn event(&self, channel: &Channel, data: String) {
        let (Some(tx), Some(ch)) = (&self.events, presence_channel(channel)) else {
            return;
        };
        let _ = tx.send(PublishRequest {
            channel: ch,
            msg_id: None,
            data: Bytes::from(data),
        });
    }

    /// One more subscription of `user` to `channel`; a join when it is the first.
    pub(crate) fn join(&self, channel: &Channel, user: &User) {
        let mut channels = self.channels.lock();
        let members = channels.entry(channel.clone()).or_default();
        let m = members.entry(user.sub.clone()).or_insert_with(|| Member {
            count: 0,
            info: user.info.clone(),
        });
        m.count += 1;
        if m.count == 1 {
            // Under the lock: events (or the cluster's changes) leave in the order the members
            // changed.
            match self.cluster.get() {
                Some(c) => c.send(Op::Join {
                    channel: channel.clone(),
                    sub: user.sub.clone(),
                    info: user.info.clone(),
                }),
                None => self.event(channel, join_event(&user.sub, &user.info)),
            }
        }
    }

    /// One subscription of `sub` to `channel` fewer; a leave when it was the last.
    pub(crate) fn leave(&self, channel: &Channel, sub: &str) {
        let mut channels = self.channels.lock();
        let Some(members) = channels.get_mut(channel) else {
            return;
        };
        let Some(m) = members.get_mut(sub) else {
            return;
        };
        m.count = m.count.saturating_sub(1);
        if m.count == 0 {
            members.remove(sub);
            if members.is_empty() {
                channels.remove(channel);
            }
            match self.cluster.get() {
                Some(c) => c.send(Op::Leave {
                    channel: channel.clone(),
                    sub: sub.to_string(),
                }),
                None => self.event(channel, leave_event(sub)),
            }
        }
    }

    /// Who is in `channel` now, by user id: on this node, and in cluster mode on any live
    /// node.
    pub(crate) async fn members(&self, channel: &Channel) -> Result<Vec<PresenceMember>, String> {
        let local = self.local_members(channel);
        let Some(c) = self.cluster.get() else {
            return Ok(local);
        };
        let mut all = c
            .members(channel)
            .await
            .map_err(|e| format!("presence: the cluster's members cannot be read: {e}"))?;
        // This node's newest changes may still be on their way to the cluster.
        for m in local {
            if !all.iter().any(|a| a.sub == m.sub) {
                all.push(m);
            }
        }
        all.sort_by(|a, b| a.sub.cmp(&b.sub));
        Ok(all)
    }

    fn local_members(&self, channel: &Channel) -> Vec<PresenceMember> {
        self.channels
            .lock()
            .get(channel)
            .map(|ms| {
                ms.iter()
                    .map(|(sub, m)| PresenceMember {
                        sub: sub.clone(),
                        info: m.info.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Publishes presence events in the order they were made, several at a time.
async fn publish(hub: std::sync::Arc<Hub>, mut rx: mpsc::UnboundedReceiver<PublishRequest>) {
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, 1024).await > 0 {
        let batch = std::mem::take(&mut buf);
        for r in hub.publish(batch).await {
            if let Err(e) = r {
                tracing::debug!("presence event not stored: {e}");
            }
        }
    }
}
