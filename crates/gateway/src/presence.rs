//! Presence: who is subscribed to a channel, by user (a token's `sub` and `info`), not by
//! connection. A user joins a channel with their first subscription to it (any edge, any
//! connection) and leaves with their last; each join and leave is published on
//! `presence.<channel>` for subscribers that asked for it (`"presence": true`), and the
//! members are answered from memory (`GET /v1/presence/{channel}`, the `presence` op).
//!
//! This tracker is per node: it counts the subscriptions of this server's connections. Events
//! go out through the hub in the order the tracker changed (one publisher task), so a
//! subscriber that applies them to the member list it got with its subscribe reply stays
//! right: a join of someone listed, or a leave of someone not, changes nothing.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tickwire_hub::{Channel, Hub, PublishRequest};
use tickwire_model::PRESENCE;
use tokio::sync::mpsc;

use crate::User;

/// One user in one channel.
#[derive(Debug)]
struct Member {
    /// Subscriptions of this user to this channel on this node.
    count: usize,
    info: Option<Box<RawValue>>,
}

/// The presence of every channel on this node.
pub(crate) struct Tracker {
    channels: Mutex<HashMap<Channel, BTreeMap<String, Member>>>,
    events: Option<mpsc::UnboundedSender<PublishRequest>>,
}

/// A member as the protocol shows it: `{"sub":..,"info":..}`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PresenceMember {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
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
            channels: Mutex::new(HashMap::new()),
            events,
        }
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
            let member = PresenceMember {
                sub: user.sub.clone(),
                info: user.info.clone(),
            };
            if let Ok(json) = serde_json::to_string(&serde_json::json!({ "join": member })) {
                // Under the lock: events leave in the order the members changed.
                self.event(channel, json);
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
            if let Ok(json) = serde_json::to_string(&serde_json::json!({ "leave": {"sub": sub} })) {
                self.event(channel, json);
            }
        }
    }

    /// Who is in `channel` now, by user id.
    pub(crate) fn members(&self, channel: &Channel) -> Vec<PresenceMember> {
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
