#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Per-connection QoS state: packet ids, in-flight limits, QoS 2 handshakes, topic aliases.

use tickwire_mqtt::state::{ConnectionState, IncomingAction, OutgoingStage};
use tickwire_mqtt::{
    Error, Packet, Properties, Property, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish,
    QoS, ReasonCode,
};

#[test]
fn packet_ids_are_non_zero_unique_and_wrap() {
    let mut s = ConnectionState::new(ProtocolVersion::V5);
    assert_eq!(s.send_publish(QoS::AtMostOnce).unwrap(), 0);
    let first = s.send_publish(QoS::AtLeastOnce).unwrap();
    assert_eq!(first, 1);
    // Walk ids up to the wrap while `first` stays in flight: it must be skipped, 0 never used.
    for _ in 0..65_533 {
        let id = s.send_publish(QoS::AtLeastOnce).unwrap();
        s.receive_puback(&PubAck::new(id)).unwrap();
    }
    let last = s.send_publish(QoS::AtLeastOnce).unwrap();
    assert_eq!(last, 65_535);
    s.receive_puback(&PubAck::new(last)).unwrap();
    assert_eq!(
        s.send_publish(QoS::AtLeastOnce).unwrap(),
        2,
        "1 is in use, 0 is never used"
    );
}

#[test]
fn send_quota_follows_peer_receive_maximum() {
    let mut s = ConnectionState::new(ProtocolVersion::V5).with_peer_receive_maximum(2);
    let a = s.send_publish(QoS::AtLeastOnce).unwrap();
    let b = s.send_publish(QoS::ExactlyOnce).unwrap();
    assert!(!s.can_send());
    assert_eq!(
        s.send_publish(QoS::AtLeastOnce),
        Err(Error::SendQuotaExhausted { max: 2 })
    );
    assert_eq!(
        s.send_publish(QoS::AtMostOnce),
        Ok(0),
        "QoS 0 is not flow controlled"
    );
    s.receive_puback(&PubAck::new(a)).unwrap();
    assert!(s.can_send());
    assert!(
        s.receive_puback(&PubAck::new(b)).is_err(),
        "b is QoS 2: PUBACK is wrong"
    );
}

#[test]
fn outgoing_qos2_flow() {
    let mut s = ConnectionState::new(ProtocolVersion::V5);
    let id = s.send_publish(QoS::ExactlyOnce).unwrap();
    assert_eq!(
        s.pending_outgoing().collect::<Vec<_>>(),
        [(id, OutgoingStage::AwaitingPubRec)]
    );
    assert_eq!(
        s.receive_pubrec(&PubRec::new(id)),
        Some(Packet::PubRel(PubRel::new(id)))
    );
    assert_eq!(
        s.pending_outgoing().collect::<Vec<_>>(),
        [(id, OutgoingStage::AwaitingPubComp)]
    );
    // a repeated PUBREC gets the PUBREL again
    assert_eq!(
        s.receive_pubrec(&PubRec::new(id)),
        Some(Packet::PubRel(PubRel::new(id)))
    );
    s.receive_pubcomp(&PubComp::new(id)).unwrap();
    assert_eq!(s.outgoing_in_flight(), 0);
    assert!(s.receive_pubcomp(&PubComp::new(id)).is_err());
    // unknown id: PUBREL with "Packet Identifier not found"
    let Some(Packet::PubRel(rel)) = s.receive_pubrec(&PubRec::new(99)) else {
        panic!()
    };
    assert_eq!(rel.reason_code, ReasonCode::PacketIdentifierNotFound);
    // an error PUBREC ends the flow without PUBREL
    let id = s.send_publish(QoS::ExactlyOnce).unwrap();
    let mut rec = PubRec::new(id);
    rec.reason_code = ReasonCode::QuotaExceeded;
    assert_eq!(s.receive_pubrec(&rec), None);
    assert_eq!(s.outgoing_in_flight(), 0);
}

#[test]
fn incoming_qos2_flow_delivers_once() {
    let mut s = ConnectionState::new(ProtocolVersion::V5);
    let p = Publish::new("t", QoS::ExactlyOnce, 10, "x");
    assert_eq!(s.receive_publish(&p).unwrap(), IncomingAction::Deliver);
    assert_eq!(
        s.receive_publish(&p).unwrap(),
        IncomingAction::Duplicate(None)
    );
    assert_eq!(s.ack_incoming(10), Some(Packet::PubRec(PubRec::new(10))));
    let mut dup = p.clone();
    dup.dup = true;
    assert_eq!(
        s.receive_publish(&dup).unwrap(),
        IncomingAction::Duplicate(Some(Packet::PubRec(PubRec::new(10))))
    );
    assert_eq!(
        s.receive_pubrel(&PubRel::new(10)),
        Packet::PubComp(PubComp::new(10))
    );
    assert_eq!(s.incoming_in_flight(), 0);
    // after PUBCOMP the same id is a new message
    assert_eq!(s.receive_publish(&p).unwrap(), IncomingAction::Deliver);
    let Packet::PubComp(comp) = s.receive_pubrel(&PubRel::new(77)) else {
        panic!()
    };
    assert_eq!(comp.reason_code, ReasonCode::PacketIdentifierNotFound);
}

#[test]
fn restored_qos2_flow_awaits_pubrel() {
    let mut s = ConnectionState::new(ProtocolVersion::V5).with_receive_maximum(1);
    assert!(s.restore_awaiting_pubrel(10));
    assert!(
        s.restore_awaiting_pubrel(10),
        "a repeated id is already there"
    );
    assert!(!s.restore_awaiting_pubrel(11), "Receive Maximum is full");
    let p = Publish::new("t", QoS::ExactlyOnce, 10, "x");
    assert_eq!(
        s.receive_publish(&p).unwrap(),
        IncomingAction::Duplicate(Some(Packet::PubRec(PubRec::new(10))))
    );
    assert_eq!(
        s.receive_pubrel(&PubRel::new(10)),
        Packet::PubComp(PubComp::new(10))
    );
    assert_eq!(s.incoming_in_flight(), 0);
}

#[test]
fn incoming_qos1_and_receive_maximum() {
    let mut s = ConnectionState::new(ProtocolVersion::V4).with_receive_maximum(1);
    let a = Publish::new("t", QoS::AtLeastOnce, 1, "x");
    let b = Publish::new("t", QoS::AtLeastOnce, 2, "x");
    assert_eq!(s.receive_publish(&a).unwrap(), IncomingAction::Deliver);
    let err = s.receive_publish(&b).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ReceiveMaximumExceeded);
    assert_eq!(s.ack_incoming(1), Some(Packet::PubAck(PubAck::new(1))));
    assert_eq!(s.ack_incoming(1), None);
    assert_eq!(s.receive_publish(&b).unwrap(), IncomingAction::Deliver);
    let Some(Packet::PubAck(nack)) = s.reject_incoming(2, ReasonCode::NotAuthorized) else {
        panic!()
    };
    assert_eq!(nack.reason_code, ReasonCode::NotAuthorized);
    assert_eq!(
        s.receive_publish(&Publish::new("t", QoS::AtMostOnce, 0, ""))
            .unwrap(),
        IncomingAction::Deliver
    );
}

#[test]
fn topic_aliases_bind_and_resolve() {
    let mut s = ConnectionState::new(ProtocolVersion::V5).with_topic_alias_maximum(4);
    let aliased = |topic: &str, alias: u16| {
        let mut p = Publish::new(topic, QoS::AtMostOnce, 0, "x");
        p.properties = Properties::new().with(Property::TopicAlias(alias));
        p
    };
    let mut unbound = aliased("", 2);
    assert_eq!(
        s.resolve_topic_alias(&mut unbound)
            .unwrap_err()
            .reason_code(),
        ReasonCode::TopicAliasInvalid
    );
    s.resolve_topic_alias(&mut aliased("quotes/EURUSD", 2))
        .unwrap();
    let mut next = aliased("", 2);
    s.resolve_topic_alias(&mut next).unwrap();
    assert_eq!(next.topic, "quotes/EURUSD");
    assert!(
        s.resolve_topic_alias(&mut aliased("a", 5)).is_err(),
        "above maximum"
    );
    let mut plain = Publish::new("a", QoS::AtMostOnce, 0, "x");
    s.resolve_topic_alias(&mut plain).unwrap();
}
