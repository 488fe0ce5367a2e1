//! Pure per-connection protocol state: packet identifiers, QoS 1/2 handshakes in both
//! directions, Receive Maximum flow control and inbound topic aliases (spec 4.3, 4.4, 4.9).
//!
//! Nothing here stores messages: the broker keeps payloads (for re-sending on session resume)
//! and calls these methods as packets come and go; each method returns the packet to send.

use std::collections::VecDeque;

use crate::error::Error;
use crate::packet::Packet;
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion, QoS};
use crate::{PubAck, PubComp, PubRec, PubRel, Publish};

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingStage {
    /// QoS 1 sent, waiting for PUBACK; resend the PUBLISH (DUP) on session resume.
    AwaitingPubAck,
    /// QoS 2 sent, waiting for PUBREC; resend the PUBLISH (DUP) on session resume.
    AwaitingPubRec,
    /// PUBREL sent, waiting for PUBCOMP; resend the PUBREL on session resume.
    AwaitingPubComp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IncomingStage {
    /// Delivered to the application, acknowledgment not sent yet.
    Unacked(QoS),
    /// PUBREC sent, waiting for PUBREL.
    AwaitingPubRel,
}

/// What to do with a PUBLISH received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingAction {
    /// New message: deliver it. For QoS 1/2 call [`ConnectionState::ack_incoming`] once it is
    /// safely handled (e.g. durably appended) to get the PUBACK / PUBREC to send.
    Deliver,
    /// Re-sent message already delivered: do not deliver again; send this packet if any
    /// (PUBREC again for QoS 2 [MQTT-4.3.3-10]; `None` while our ack is still pending).
    Duplicate(Option<Packet>),
}

/// Protocol state of one connection (or one persistent session across connections).
///
/// In-flight lists are short (bounded by Receive Maximum) and acks usually arrive in order,
/// so ordered `VecDeque`s searched from the front beat hash maps here and keep resend order.
#[derive(Debug, Clone)]
pub struct ConnectionState {
    version: ProtocolVersion,
    next_packet_id: u16,
    outgoing: VecDeque<(u16, OutgoingStage)>,
    incoming: VecDeque<(u16, IncomingStage)>,
    receive_maximum: u16,
    peer_receive_maximum: u16,
    topic_alias_maximum: u16,
    topic_aliases: Vec<Option<String>>,
}

impl ConnectionState {
    /// Fresh state with the protocol defaults: Receive Maximum 65535 both ways, no topic aliases.
    pub fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            next_packet_id: 1,
            outgoing: VecDeque::new(),
            incoming: VecDeque::new(),
            receive_maximum: u16::MAX,
            peer_receive_maximum: u16::MAX,
            topic_alias_maximum: 0,
            topic_aliases: Vec::new(),
        }
    }

    /// Our Receive Maximum (sent in CONNACK): unacknowledged QoS 1/2 messages we accept.
    /// 0 is invalid on the wire and treated as 1.
    pub fn with_receive_maximum(mut self, max: u16) -> Self {
        self.receive_maximum = max.max(1);
        self
    }

    /// The peer's Receive Maximum (from CONNECT): how many QoS 1/2 messages we may have in flight.
    pub fn with_peer_receive_maximum(mut self, max: u16) -> Self {
        self.peer_receive_maximum = max.max(1);
        self
    }

    /// Our Topic Alias Maximum (sent in CONNACK): highest alias the peer may use.
    pub fn with_topic_alias_maximum(mut self, max: u16) -> Self {
        self.topic_alias_maximum = max;
        self
    }

    /// Protocol version of the connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    // ---- outgoing (we publish, the peer acknowledges) ----

    /// Number of our QoS 1/2 messages not yet completed.
    pub fn outgoing_in_flight(&self) -> usize {
        self.outgoing.len()
    }

    /// True if another QoS 1/2 PUBLISH may be sent now (Receive Maximum, spec 4.9).
    pub fn can_send(&self) -> bool {
        self.outgoing.len() < usize::from(self.peer_receive_maximum)
    }

    /// Reserves a packet identifier for a PUBLISH we are about to send and starts tracking it.
    ///
    /// QoS 0 needs none and returns `Ok(0)`. When the peer's Receive Maximum is reached this
    /// fails with [`Error::SendQuotaExhausted`]: queue the message and retry after an ack.
    pub fn send_publish(&mut self, qos: QoS) -> Result<u16, Error> {
        let stage = match qos {
            QoS::AtMostOnce => return Ok(0),
            QoS::AtLeastOnce => OutgoingStage::AwaitingPubAck,
            QoS::ExactlyOnce => OutgoingStage::AwaitingPubRec,
        };
        if !self.can_send() {
            return Err(Error::SendQuotaExhausted {
                max: self.peer_receive_maximum,
            });
        }
        // At most 65535 are in flight and 65535 ids exist, so a free one is always found.
        let mut id = self.next_packet_id;
        while self.outgoing.iter().any(|(used, _)| *used == id) {
            id = next_id(id);
        }
        self.next_packet_id = next_id(id);
        self.outgoing.push_back((id, stage));
        Ok(id)
    }

    fn outgoing_position(&self, packet_id: u16) -> Option<usize> {
        self.outgoing.iter().position(|(id, _)| *id == packet_id)
    }

    /// Ends the outgoing flow `packet_id` if it is at `stage`; `packet` is the ack that did.
    fn complete_outgoing(
        &mut self,
        packet_id: u16,
        stage: OutgoingStage,
        packet: PacketType,
    ) -> Result<(), Error> {
        match self.outgoing_position(packet_id) {
            Some(i) if self.outgoing[i].1 == stage => {
                self.outgoing.remove(i);
                Ok(())
            }
            _ => Err(Error::PacketIdNotFound { packet, packet_id }),
        }
    }

    /// Completes a QoS 1 flow.
    pub fn receive_puback(&mut self, ack: &PubAck) -> Result<(), Error> {
        self.complete_outgoing(
            ack.packet_id,
            OutgoingStage::AwaitingPubAck,
            PacketType::PubAck,
        )
    }

    /// Advances a QoS 2 flow; returns the PUBREL to send, or `None` when the PUBREC carried an
    /// error code, which ends the flow [MQTT-4.3.3-4 / 4.9].
    pub fn receive_pubrec(&mut self, rec: &PubRec) -> Option<Packet> {
        let mut release = PubRel::new(rec.packet_id);
        match self.outgoing_position(rec.packet_id) {
            Some(i) if self.outgoing[i].1 != OutgoingStage::AwaitingPubAck => {
                if rec.reason_code.is_error() {
                    self.outgoing.remove(i);
                    return None;
                }
                // A repeated PUBREC (stage already AwaitingPubComp) just gets PUBREL again.
                self.outgoing[i].1 = OutgoingStage::AwaitingPubComp;
            }
            _ => release.reason_code = ReasonCode::PacketIdentifierNotFound,
        }
        Some(Packet::PubRel(release))
    }

    /// Completes a QoS 2 flow.
    pub fn receive_pubcomp(&mut self, comp: &PubComp) -> Result<(), Error> {
        self.complete_outgoing(
            comp.packet_id,
            OutgoingStage::AwaitingPubComp,
            PacketType::PubComp,
        )
    }

    /// Re-creates an unfinished outgoing QoS 2 flow of a stored session at its stage: PUBLISH
    /// sent (`released` false: resend it with DUP and this id) or PUBREL sent (`released`
    /// true: resend the PUBREL). False when the id is 0 or already in use.
    pub fn restore_outgoing(&mut self, packet_id: u16, released: bool) -> bool {
        if packet_id == 0 || self.outgoing_position(packet_id).is_some() {
            return false;
        }
        let stage = if released {
            OutgoingStage::AwaitingPubComp
        } else {
            OutgoingStage::AwaitingPubRec
        };
        self.outgoing.push_back((packet_id, stage));
        true
    }

    /// Drops a restored outgoing flow whose message no longer exists (retention removed it, or
    /// its subscription is gone), so its id and its Receive Maximum slot are free again.
    pub fn abandon_outgoing(&mut self, packet_id: u16) -> bool {
        match self.outgoing_position(packet_id) {
            Some(i) => {
                self.outgoing.remove(i);
                true
            }
            None => false,
        }
    }

    /// Unfinished outgoing flows in the order they started, to resend on session resume
    /// [MQTT-4.4.0-1]: PUBLISH with DUP for the first two stages, PUBREL for the last.
    pub fn pending_outgoing(&self) -> impl Iterator<Item = (u16, OutgoingStage)> + '_ {
        self.outgoing.iter().copied()
    }

    // ---- incoming (the peer publishes, we acknowledge) ----

    /// Registers a PUBLISH from the peer (after [`ConnectionState::resolve_topic_alias`]).
    ///
    /// Fails with [`Error::ReceiveMaximumExceeded`] when the peer ignores our Receive Maximum;
    /// the broker then disconnects with that reason code (0x93).
    pub fn receive_publish(&mut self, publish: &Publish) -> Result<IncomingAction, Error> {
        if publish.qos == QoS::AtMostOnce {
            return Ok(IncomingAction::Deliver);
        }
        let id = publish.packet_id;
        if let Some((_, stage)) = self.incoming.iter().find(|(used, _)| *used == id) {
            return Ok(IncomingAction::Duplicate(match stage {
                IncomingStage::Unacked(_) => None,
                IncomingStage::AwaitingPubRel => Some(Packet::PubRec(PubRec::new(id))),
            }));
        }
        if self.incoming.len() >= usize::from(self.receive_maximum) {
            return Err(Error::ReceiveMaximumExceeded {
                max: self.receive_maximum,
            });
        }
        self.incoming
            .push_back((id, IncomingStage::Unacked(publish.qos)));
        Ok(IncomingAction::Deliver)
    }

    /// The application handled the incoming message `packet_id`: returns the PUBACK (QoS 1) or
    /// PUBREC (QoS 2) to send, or `None` if no unacknowledged message has that identifier.
    pub fn ack_incoming(&mut self, packet_id: u16) -> Option<Packet> {
        let i = self.incoming.iter().position(|(id, stage)| {
            *id == packet_id && matches!(stage, IncomingStage::Unacked(_))
        })?;
        match self.incoming[i].1 {
            IncomingStage::Unacked(QoS::ExactlyOnce) => {
                self.incoming[i].1 = IncomingStage::AwaitingPubRel;
                Some(Packet::PubRec(PubRec::new(packet_id)))
            }
            _ => {
                self.incoming.remove(i);
                Some(Packet::PubAck(PubAck::new(packet_id)))
            }
        }
    }

    /// Re-creates an incoming QoS 2 flow already answered with PUBREC, for a session resumed
    /// from storage: a re-sent PUBLISH with this id is then a duplicate and PUBREL completes
    /// it. `false` when Receive Maximum leaves no room.
    pub fn restore_awaiting_pubrel(&mut self, packet_id: u16) -> bool {
        if self.incoming.iter().any(|(id, _)| *id == packet_id) {
            return true;
        }
        if self.incoming.len() >= usize::from(self.receive_maximum) {
            return false;
        }
        self.incoming
            .push_back((packet_id, IncomingStage::AwaitingPubRel));
        true
    }

    /// Refuses the incoming message `packet_id` with an error reason code (v5), ending its flow.
    pub fn reject_incoming(&mut self, packet_id: u16, reason: ReasonCode) -> Option<Packet> {
        let i = self.incoming.iter().position(|(id, stage)| {
            *id == packet_id && matches!(stage, IncomingStage::Unacked(_))
        })?;
        let (_, stage) = self.incoming.remove(i)?;
        Some(match stage {
            IncomingStage::Unacked(QoS::ExactlyOnce) => {
                let mut rec = PubRec::new(packet_id);
                rec.reason_code = reason;
                Packet::PubRec(rec)
            }
            _ => {
                let mut ack = PubAck::new(packet_id);
                ack.reason_code = reason;
                Packet::PubAck(ack)
            }
        })
    }

    /// Ends an incoming QoS 2 flow; returns the PUBCOMP to send (with "Packet Identifier not
    /// found" if there was no such flow, as MQTT 5 asks).
    pub fn receive_pubrel(&mut self, rel: &PubRel) -> Packet {
        let mut comp = PubComp::new(rel.packet_id);
        match self
            .incoming
            .iter()
            .position(|(id, stage)| *id == rel.packet_id && *stage == IncomingStage::AwaitingPubRel)
        {
            Some(i) => {
                self.incoming.remove(i);
            }
            None => comp.reason_code = ReasonCode::PacketIdentifierNotFound,
        }
        Packet::PubComp(comp)
    }

    /// Number of peer messages not yet completed (counted against our Receive Maximum).
    pub fn incoming_in_flight(&self) -> usize {
        self.incoming.len()
    }

    /// Resolves and records an inbound Topic Alias (3.3.2.3.4), leaving `publish.topic` set.
    ///
    /// A topic with an alias (re)binds it; an empty topic uses the bound one. Alias 0, above our
    /// Topic Alias Maximum, or unbound fails with [`Error::InvalidTopicAlias`] (0x94).
    pub fn resolve_topic_alias(&mut self, publish: &mut Publish) -> Result<(), Error> {
        let Some(alias) = publish.properties.topic_alias() else {
            return Ok(());
        };
        if alias == 0 || alias > self.topic_alias_maximum {
            return Err(Error::InvalidTopicAlias {
                alias,
                reason: "outside 1..=Topic Alias Maximum",
            });
        }
        let slot = usize::from(alias - 1);
        if publish.topic.is_empty() {
            let topic = self
                .topic_aliases
                .get(slot)
                .and_then(Option::as_ref)
                .ok_or(Error::InvalidTopicAlias {
                    alias,
                    reason: "alias not bound to a topic",
                })?;
            publish.topic.clone_from(topic);
        } else {
            if self.topic_aliases.len() <= slot {
                self.topic_aliases.resize(slot + 1, None);
            }
            self.topic_aliases[slot] = Some(publish.topic.clone());
        }
        Ok(())
    }
}

fn next_id(id: u16) -> u16 {
    id.checked_add(1).unwrap_or(1)
}
