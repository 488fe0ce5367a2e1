//! Delivery: messages from the hub to the client, QoS 0 written at once, QoS 1/2 queued behind
//! the client's Receive Maximum and kept in flight until acknowledged, and each stream
//! channel's positions (handed out, acknowledged) that a stored session resumes from.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use tickwire_model::{Channel, Class, Offset};

use super::publish::{packet_len, write_publish};
use super::subscriptions::granted_for;
use super::{BrokerSession, Outgoing};
use crate::QoS;

/// Delivery bookkeeping of one stream channel.
pub(super) struct ChanPos {
    /// One past the newest acknowledged (or QoS 0 sent) offset.
    next: Offset,
    /// Handed out, not acknowledged yet.
    outstanding: BTreeSet<Offset>,
    /// Acknowledged while an older offset is still outstanding (at or above `resume()`): a
    /// stored session must not send these again after a restart, where only `resume()`
    /// would otherwise survive.
    pub(super) acked_ahead: BTreeSet<Offset>,
    /// Subscribed in the hub only to resume it at its own position on behalf of a pattern
    /// subscription (see `restore`); dropped with that pattern.
    pub(super) for_pattern: bool,
    /// The QoS its messages go out with: the highest granted by a matching subscription, set
    /// by `regrant` whenever the subscriptions change rather than looked up per message.
    pub(super) granted: Option<QoS>,
}

impl ChanPos {
    pub(super) fn new(next: Offset) -> ChanPos {
        ChanPos {
            next,
            outstanding: BTreeSet::new(),
            acked_ahead: BTreeSet::new(),
            for_pattern: false,
            granted: None,
        }
    }

    pub(super) fn resume(&self) -> Offset {
        self.outstanding.first().copied().unwrap_or(self.next)
    }
}

impl BrokerSession {
    /// The namespaces with a pattern mark, in order: the driver samples each one's next offset
    /// before draining the hub and hands the samples to [`BrokerSession::advance_marks`].
    pub fn marked_namespaces(&self) -> Vec<String> {
        self.flows.marks.keys().cloned().collect()
    }

    /// After a drain: every message below each sampled offset has been offered to this
    /// session, so a pattern-matched channel that delivered nothing has nothing below its
    /// mark to miss.
    pub fn advance_marks(&mut self, sampled: &[Option<Offset>]) {
        for (m, o) in self.flows.marks.values_mut().zip(sampled) {
            if let Some(o) = o {
                *m = (*m).max(*o);
            }
        }
    }

    /// One message from the hub.
    pub fn deliver(&mut self, msg: Outgoing) {
        // State channels are the hot path (every tick to every subscriber): QoS 0 whatever
        // was granted, so no filter scan and no channel clone per message.
        if msg.class != Class::Stream {
            self.write_qos0(&msg.body, msg.snapshot);
            return;
        }
        let ch = &msg.channel;
        let offset = msg.offset;
        if !self.flows.chans.contains_key(ch) {
            // A channel a pattern matched for the first time.
            let mut cp = ChanPos::new(offset);
            cp.granted = granted_for(&self.flows.subs, ch);
            if cp.granted.is_none() {
                return;
            }
            self.flows.chans.insert(ch.clone(), cp);
        }
        let Some(cp) = self.flows.chans.get(ch) else {
            return;
        };
        let Some(granted) = cp.granted else {
            return;
        };
        if (offset < cp.next && !cp.outstanding.contains(&offset))
            || cp.acked_ahead.contains(&offset)
        {
            return; // already acknowledged (overlapping resume, or before a restart)
        }
        if !self.flows.resend.is_empty() {
            self.abandon_resends_before(ch, offset);
        }
        let Some(cp) = self.flows.chans.get_mut(ch) else {
            return;
        };
        if granted == QoS::AtMostOnce {
            cp.next = cp.next.max(offset + 1);
            self.dirty = true;
            self.write_qos0(&msg.body, false);
        } else {
            cp.outstanding.insert(offset);
            self.flows.queue.push_back((msg, granted));
        }
    }

    /// Restored QoS 2 messages of `ch` older than `offset` never came back from the stream
    /// (retention removed them): the stream replays a channel in order, so they never will.
    /// Their packet ids are freed and their positions move on.
    fn abandon_resends_before(&mut self, ch: &Channel, offset: Offset) {
        let Some(waiting) = self.flows.resend.get_mut(ch) else {
            return;
        };
        let kept = waiting.split_off(&offset);
        let gone = std::mem::replace(waiting, kept);
        if waiting.is_empty() {
            self.flows.resend.remove(ch);
        }
        for (o, pid) in gone {
            self.proto.abandon_outgoing(pid);
            tracing::warn!(client = %self.client_id, channel = %ch, offset = o, "a QoS 2 message in flight before the restart is gone from the stream; not resent");
            self.acked(ch, o);
        }
    }

    /// Sends queued QoS 1/2 messages while the client's Receive Maximum allows. Messages in
    /// flight before a restart go first, with DUP and their original packet ids (their flows
    /// hold Receive Maximum slots already, so they never wait for one).
    pub fn pump(&mut self) {
        if !self.flows.resend.is_empty() {
            self.pump_resends();
        }
        while self.proto.can_send() {
            let Some((msg, qos)) = self.flows.queue.pop_front() else {
                break;
            };
            if !self.fits(&msg.body, qos) {
                // [MQTT-3.1.2-25]: too big for the client is discarded as if delivered.
                self.acked(&msg.channel, msg.offset);
                continue;
            }
            match self.proto.send_publish(qos) {
                Ok(pid) => {
                    write_publish(
                        &mut self.out,
                        &msg.body,
                        self.version,
                        (qos, pid),
                        false,
                        false,
                    );
                    if qos == QoS::ExactlyOnce {
                        // Exactly once across a restart: the id must be on disk before the
                        // client sees it, so a resend after a crash reuses it.
                        self.persist_before_send = true;
                        self.dirty = true;
                    }
                    self.flows.inflight.insert(pid, (msg.channel, msg.offset));
                }
                Err(_) => {
                    self.flows.queue.push_front((msg, qos));
                    break;
                }
            }
        }
    }

    /// The queued messages restored from before a restart, sent now with their own ids.
    fn pump_resends(&mut self) {
        let mut rest = VecDeque::with_capacity(self.flows.queue.len());
        while let Some((msg, qos)) = self.flows.queue.pop_front() {
            let pid = self
                .flows
                .resend
                .get_mut(&msg.channel)
                .and_then(|w| w.remove(&msg.offset));
            match pid {
                Some(pid) => {
                    write_publish(
                        &mut self.out,
                        &msg.body,
                        self.version,
                        (QoS::ExactlyOnce, pid),
                        false,
                        true,
                    );
                    self.flows
                        .inflight
                        .insert(pid, (msg.channel.clone(), msg.offset));
                    if self
                        .flows
                        .resend
                        .get(&msg.channel)
                        .is_some_and(BTreeMap::is_empty)
                    {
                        self.flows.resend.remove(&msg.channel);
                    }
                }
                None => rest.push_back((msg, qos)),
            }
        }
        self.flows.queue = rest;
    }

    pub(super) fn acked(&mut self, ch: &Channel, offset: Offset) {
        if let Some(cp) = self.flows.chans.get_mut(ch) {
            cp.outstanding.remove(&offset);
            cp.next = cp.next.max(offset + 1);
            // At or above the resume point only while an older offset is still outstanding.
            let resume = cp.resume();
            if offset >= resume {
                cp.acked_ahead.insert(offset);
            }
            while cp.acked_ahead.first().is_some_and(|&o| o < resume) {
                cp.acked_ahead.pop_first();
            }
            self.dirty = true;
        }
    }

    /// Whether a PUBLISH of `body` stays within the client's Maximum Packet Size.
    fn fits(&self, body: &Bytes, qos: QoS) -> bool {
        self.max_out == usize::MAX || packet_len(body.len(), self.version, qos) <= self.max_out
    }

    /// A QoS 0 PUBLISH, dropped when too big for the client [MQTT-3.1.2-25].
    fn write_qos0(&mut self, body: &Bytes, retain: bool) {
        if self.fits(body, QoS::AtMostOnce) {
            write_publish(
                &mut self.out,
                body,
                self.version,
                (QoS::AtMostOnce, 0),
                retain,
                false,
            );
        }
    }
}
