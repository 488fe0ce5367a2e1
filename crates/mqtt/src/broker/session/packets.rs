//! Packets from the client: PUBLISH with its topic alias and QoS handshake (then stored or
//! refused by the driver), acknowledgements of what we sent, PINGREQ, DISCONNECT, and the
//! protocol errors that end the connection.

use super::{BrokerSession, End, Refused, Router};
use crate::{state::IncomingAction, Packet, Property, ProtocolVersion, Publish, QoS, ReasonCode};

impl BrokerSession {
    /// A PUBLISH from the client, before it is stored: topic alias and QoS handshake rules.
    /// `Ok(true)`: store it, then call [`BrokerSession::stored`] or
    /// [`BrokerSession::refused`]; `Ok(false)`: a re-sent message already handled (any reply
    /// is in the output); `Err`: a protocol error, the connection ends (DISCONNECT is in the
    /// output).
    pub fn incoming_publish(&mut self, p: &mut Publish) -> Result<bool, End> {
        if let Err(e) = self.proto.resolve_topic_alias(p) {
            self.disconnect(e.reason_code(), &e.to_string());
            return Err(End::Abrupt);
        }
        match self.proto.receive_publish(p) {
            Ok(IncomingAction::Deliver) => Ok(true),
            Ok(IncomingAction::Duplicate(reply)) => {
                if let Some(r) = reply {
                    self.send(r);
                }
                Ok(false)
            }
            Err(e) => {
                self.disconnect(e.reason_code(), &e.to_string());
                Err(End::Abrupt)
            }
        }
    }

    /// The hub stored `p` (durably under the fsync policy): acknowledge it. A QoS 2 id is
    /// saved with the session before its PUBREC is sent.
    pub fn stored(&mut self, p: &Publish) {
        if p.qos == QoS::ExactlyOnce {
            self.flows.qos2_in.insert(p.packet_id);
            self.dirty = true;
            self.persist_before_send = true;
        }
        if let Some(ack) = self.proto.ack_incoming(p.packet_id) {
            self.send(ack);
        }
    }

    /// `p` was refused. MQTT 5 tells a QoS 1/2 publisher why in its PUBACK/PUBREC; QoS 0 has
    /// no ack, so the connection ends with the reason. 3.1.1 has no negative ack: closing is
    /// the only signal it allows [MQTT-3.3.5-2].
    pub fn refused(&mut self, p: &Publish, r: Refused) -> Option<End> {
        tracing::debug!(client = %self.client_id, topic = %p.topic, reason = %r.reason, "MQTT publish refused");
        if self.version == ProtocolVersion::V5 && p.qos != QoS::AtMostOnce {
            if let Some(mut ack) = self.proto.reject_incoming(p.packet_id, r.code) {
                if self.problem_info {
                    match &mut ack {
                        Packet::PubAck(a) => a.properties.push(Property::ReasonString(r.reason)),
                        Packet::PubRec(a) => a.properties.push(Property::ReasonString(r.reason)),
                        _ => {}
                    }
                }
                self.send(ack);
            }
            return None;
        }
        self.disconnect(r.code, &r.reason);
        Some(End::Abrupt)
    }

    /// Any packet but PUBLISH; `Some` when the connection ends.
    pub fn on_packet(&mut self, packet: Packet, router: &mut dyn Router) -> Option<End> {
        match packet {
            Packet::Publish(_) => {
                self.disconnect(
                    ReasonCode::ImplementationSpecificError,
                    "PUBLISH goes through incoming_publish",
                );
                return Some(End::Abrupt);
            }
            Packet::PubAck(a) => {
                if self.proto.receive_puback(&a).is_ok() {
                    if let Some((ch, off)) = self.flows.inflight.remove(&a.packet_id) {
                        self.acked(&ch, off);
                    }
                }
                self.pump();
            }
            Packet::PubRec(r) => {
                // The client has the message: its position moves on now, only PUBREL remains.
                if let Some((ch, off)) = self.flows.inflight.remove(&r.packet_id) {
                    self.acked(&ch, off);
                }
                if let Some(rel) = self.proto.receive_pubrec(&r) {
                    // Released: the PUBREL stage is on disk before the client sees PUBREL, so
                    // a restart resends PUBREL, never the message.
                    self.dirty = true;
                    self.persist_before_send = true;
                    self.send(rel);
                }
                self.pump();
            }
            Packet::PubComp(c) => {
                if self.proto.receive_pubcomp(&c).is_ok() {
                    self.dirty = true;
                }
                self.pump();
            }
            Packet::PubRel(r) => {
                let comp = self.proto.receive_pubrel(&r);
                if self.flows.qos2_in.remove(&r.packet_id) {
                    self.dirty = true;
                }
                self.send(comp);
            }
            Packet::Subscribe(s) => self.on_subscribe(s, router),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u, router),
            Packet::PingReq => self.send(Packet::PingResp),
            Packet::Disconnect(d) => {
                if self.version == ProtocolVersion::V5 {
                    if let Some(e) = d.properties.session_expiry_interval() {
                        if self.connect_expiry == 0 && e > 0 {
                            self.disconnect(
                                ReasonCode::ProtocolError,
                                "session expiry cannot be set on DISCONNECT when CONNECT had 0",
                            );
                            return Some(End::Abrupt);
                        }
                        self.expiry_secs = self.cfg.cap_session_expiry(e);
                    }
                }
                return Some(if d.reason_code == ReasonCode::DisconnectWithWill {
                    End::Abrupt
                } else {
                    End::Clean
                });
            }
            Packet::Connect(_) => {
                self.disconnect(ReasonCode::ProtocolError, "second CONNECT on a connection");
                return Some(End::Abrupt);
            }
            Packet::Auth(_) => {
                self.disconnect(
                    ReasonCode::ProtocolError,
                    "AUTH without an authentication method",
                );
                return Some(End::Abrupt);
            }
            other => {
                let why = format!("a client does not send {}", other.packet_type());
                self.disconnect(ReasonCode::ProtocolError, &why);
                return Some(End::Abrupt);
            }
        }
        None
    }
}
