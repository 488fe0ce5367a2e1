#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hand-written wire images (from the spec's layouts and what mosquitto clients send) decoded
//! to the expected packet, and that packet encoded back to the same bytes.

use bytes::{Bytes, BytesMut};
use tickwire_mqtt::{
    decode, encode, encoded_len, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties,
    Property, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};

use ProtocolVersion::{V4, V5};

const MAX: usize = 1 << 20;

fn golden(version: ProtocolVersion, wire: &[u8], packet: Packet) {
    let mut buf = BytesMut::from(wire);
    let decoded = decode(&mut buf, version, MAX)
        .unwrap()
        .expect("complete packet");
    assert_eq!(decoded, packet, "decode {wire:02x?}");
    assert!(buf.is_empty(), "decode consumed exactly one packet");
    let mut out = BytesMut::new();
    encode(&packet, version, &mut out).unwrap();
    assert_eq!(&out[..], wire, "encode {packet:?}");
    assert_eq!(encoded_len(&packet, version).unwrap(), wire.len());
}

#[test]
fn connect_v4_as_mosquitto_pub_sends_it() {
    // mosquitto_pub -i mosq-pub -t test -m hello: clean session, keep alive 60.
    let wire = [
        0x10, 0x14, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x08, b'm',
        b'o', b's', b'q', b'-', b'p', b'u', b'b',
    ];
    golden(V4, &wire, Packet::Connect(Connect::new(V4, "mosq-pub")));
}

#[test]
fn connect_v5_minimal() {
    let wire = [
        0x10, 0x15, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x08,
        b'm', b'o', b's', b'q', b'-', b'p', b'u', b'b',
    ];
    golden(V5, &wire, Packet::Connect(Connect::new(V5, "mosq-pub")));
}

#[test]
fn connect_v4_with_will_user_and_password() {
    let wire = [
        0x10, 0x23, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xEE, 0x00, 0x0A, // header
        0x00, 0x03, b'c', b'i', b'd', // client id
        0x00, 0x03, b'w', b'/', b't', // will topic
        0x00, 0x03, b'b', b'y', b'e', // will payload
        0x00, 0x04, b'u', b's', b'e', b'r', // user name
        0x00, 0x02, b'p', b'w', // password
    ];
    let connect = Connect {
        keep_alive: 10,
        will: Some(LastWill {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::new(),
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pw")),
        ..Connect::new(V4, "cid")
    };
    golden(V4, &wire, Packet::Connect(connect));
}

#[test]
fn connect_v5_with_properties_and_will_properties() {
    let wire = [
        0x10, 0x29, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x3C, // header
        0x0F, 0x11, 0x00, 0x00, 0x0E, 0x10, 0x21, 0x00, 0x14, 0x26, 0x00, 0x01, b'a', 0x00, 0x01,
        b'b', // properties
        0x00, 0x01, b'c', // client id
        0x05, 0x18, 0x00, 0x00, 0x00, 0x05, // will properties
        0x00, 0x01, b't', 0x00, 0x01, b'x', // will topic, payload
    ];
    let connect = Connect {
        will: Some(LastWill {
            topic: "t".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::new().with(Property::WillDelayInterval(5)),
        }),
        properties: Properties::new()
            .with(Property::SessionExpiryInterval(3600))
            .with(Property::ReceiveMaximum(20))
            .with(Property::UserProperty("a".into(), "b".into())),
        ..Connect::new(V5, "c")
    };
    let props = &connect.properties;
    assert_eq!(props.session_expiry_interval(), Some(3600));
    assert_eq!(props.receive_maximum(), Some(20));
    assert_eq!(props.user_properties().collect::<Vec<_>>(), [("a", "b")]);
    golden(V5, &wire, Packet::Connect(connect));
}

#[test]
fn connack_both_versions() {
    golden(
        V4,
        &[0x20, 0x02, 0x00, 0x00],
        Packet::ConnAck(ConnAck::new(ReasonCode::Success, false)),
    );
    golden(
        V4,
        &[0x20, 0x02, 0x01, 0x00],
        Packet::ConnAck(ConnAck::new(ReasonCode::Success, true)),
    );
    golden(
        V4,
        &[0x20, 0x02, 0x00, 0x05],
        Packet::ConnAck(ConnAck::new(ReasonCode::NotAuthorized, false)),
    );
    golden(
        V5,
        &[0x20, 0x03, 0x00, 0x00, 0x00],
        Packet::ConnAck(ConnAck::new(ReasonCode::Success, false)),
    );
    golden(
        V5,
        &[0x20, 0x03, 0x00, 0x86, 0x00],
        Packet::ConnAck(ConnAck::new(ReasonCode::BadUserNameOrPassword, false)),
    );
    let mut ack = ConnAck::new(ReasonCode::Success, false);
    ack.properties = Properties::new()
        .with(Property::AssignedClientIdentifier("x".into()))
        .with(Property::TopicAliasMaximum(10));
    golden(
        V5,
        &[
            0x20, 0x0A, 0x00, 0x00, 0x07, 0x12, 0x00, 0x01, b'x', 0x22, 0x00, 0x0A,
        ],
        Packet::ConnAck(ack),
    );
}

#[test]
fn connack_v4_maps_v5_reason_codes_to_return_codes() {
    let mut out = BytesMut::new();
    let refusal = ConnAck::new(ReasonCode::UnsupportedProtocolVersion, false);
    encode(&Packet::ConnAck(refusal), V4, &mut out).unwrap();
    assert_eq!(&out[..], [0x20, 0x02, 0x00, 0x01]);
}

#[test]
fn publish_v4() {
    golden(
        V4,
        &[
            0x30, 0x0A, 0x00, 0x03, b'a', b'/', b'b', b'h', b'e', b'l', b'l', b'o',
        ],
        Packet::Publish(Publish::new("a/b", QoS::AtMostOnce, 0, "hello")),
    );
    let mut p = Publish::new("a/b", QoS::AtLeastOnce, 7, "hello");
    p.dup = true;
    p.retain = true;
    golden(
        V4,
        &[
            0x3B, 0x0C, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'e', b'l', b'l', b'o',
        ],
        Packet::Publish(p),
    );
}

#[test]
fn publish_v5_with_properties_and_alias_only() {
    let mut p = Publish::new("a/b", QoS::ExactlyOnce, 42, "hi");
    p.properties = Properties::new()
        .with(Property::PayloadFormatIndicator(true))
        .with(Property::TopicAlias(5))
        .with(Property::SubscriptionIdentifier(128));
    golden(
        V5,
        &[
            0x34, 0x12, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x2A, 0x08, 0x01, 0x01, 0x23, 0x00,
            0x05, 0x0B, 0x80, 0x01, b'h', b'i',
        ],
        Packet::Publish(p),
    );
    let mut alias_only = Publish::new("", QoS::AtMostOnce, 0, "x");
    alias_only.properties = Properties::new().with(Property::TopicAlias(5));
    golden(
        V5,
        &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, b'x'],
        Packet::Publish(alias_only),
    );
}

#[test]
fn publish_payload_is_zero_copy() {
    let mut buf = BytesMut::from(&[0x30, 0x06, 0x00, 0x01, b't', b'a', b'b', b'c', 0xC0][..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, V4, MAX).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.payload.as_ptr() as usize,
        base + 5,
        "payload points into the read buffer"
    );
    assert_eq!(&buf[..], [0xC0], "next packet left in place");
}

#[test]
fn pub_acks_both_versions() {
    for v in [V4, V5] {
        golden(v, &[0x40, 0x02, 0x00, 0x01], Packet::PubAck(PubAck::new(1)));
        golden(v, &[0x50, 0x02, 0x00, 0x02], Packet::PubRec(PubRec::new(2)));
        golden(v, &[0x62, 0x02, 0x00, 0x03], Packet::PubRel(PubRel::new(3)));
        golden(
            v,
            &[0x70, 0x02, 0x00, 0x04],
            Packet::PubComp(PubComp::new(4)),
        );
    }
    let mut ack = PubAck::new(1);
    ack.reason_code = ReasonCode::NoMatchingSubscribers;
    golden(V5, &[0x40, 0x03, 0x00, 0x01, 0x10], Packet::PubAck(ack));
    let mut rec = PubRec::new(1);
    rec.reason_code = ReasonCode::UnspecifiedError;
    rec.properties = Properties::new().with(Property::ReasonString("e".into()));
    golden(
        V5,
        &[0x50, 0x08, 0x00, 0x01, 0x80, 0x04, 0x1F, 0x00, 0x01, b'e'],
        Packet::PubRec(rec),
    );
    let mut rel = PubRel::new(3);
    rel.reason_code = ReasonCode::PacketIdentifierNotFound;
    golden(
        V5,
        &[0x62, 0x03, 0x00, 0x03, 0x92],
        Packet::PubRel(rel.clone()),
    );
    let mut comp = PubComp::new(4);
    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
    golden(V5, &[0x70, 0x03, 0x00, 0x04, 0x92], Packet::PubComp(comp));
    // A v5 reason code has no place in 3.1.1 and is dropped.
    let mut out = BytesMut::new();
    encode(&Packet::PubRel(rel), V4, &mut out).unwrap();
    assert_eq!(&out[..], [0x62, 0x02, 0x00, 0x03]);
    // The v5 short form with reason code and an empty property block also decodes.
    let mut buf = BytesMut::from(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00][..]);
    assert_eq!(
        decode(&mut buf, V5, MAX).unwrap(),
        Some(Packet::PubAck(PubAck::new(1)))
    );
}

#[test]
fn subscribe_both_versions() {
    // mosquitto_sub -t 'a/+' -q 1
    golden(
        V4,
        &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'+', 0x01],
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter::new("a/+", QoS::AtLeastOnce)],
            properties: Properties::new(),
        }),
    );
    golden(
        V5,
        &[
            0x82, 0x0B, 0x00, 0x01, 0x02, 0x0B, 0x07, 0x00, 0x03, b'a', b'/', b'#', 0x1E,
        ],
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: "a/#".into(),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::SendIfNew,
                },
            }],
            properties: Properties::new().with(Property::SubscriptionIdentifier(7)),
        }),
    );
}

#[test]
fn suback_both_versions() {
    golden(
        V4,
        &[0x90, 0x04, 0x00, 0x01, 0x01, 0x80],
        Packet::SubAck(SubAck {
            packet_id: 1,
            reason_codes: vec![ReasonCode::GrantedQos1, ReasonCode::UnspecifiedError],
            properties: Properties::new(),
        }),
    );
    golden(
        V5,
        &[0x90, 0x05, 0x00, 0x01, 0x00, 0x01, 0xA2],
        Packet::SubAck(SubAck {
            packet_id: 1,
            reason_codes: vec![
                ReasonCode::GrantedQos1,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
            properties: Properties::new(),
        }),
    );
}

#[test]
fn unsubscribe_and_unsuback_both_versions() {
    let unsub = Unsubscribe {
        packet_id: 2,
        filters: vec!["a/b".into()],
        properties: Properties::new(),
    };
    golden(
        V4,
        &[0xA2, 0x07, 0x00, 0x02, 0x00, 0x03, b'a', b'/', b'b'],
        Packet::Unsubscribe(unsub.clone()),
    );
    golden(
        V5,
        &[0xA2, 0x08, 0x00, 0x02, 0x00, 0x00, 0x03, b'a', b'/', b'b'],
        Packet::Unsubscribe(unsub),
    );
    golden(
        V4,
        &[0xB0, 0x02, 0x00, 0x02],
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            reason_codes: vec![],
            properties: Properties::new(),
        }),
    );
    golden(
        V5,
        &[0xB0, 0x04, 0x00, 0x02, 0x00, 0x11],
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            reason_codes: vec![ReasonCode::NoSubscriptionExisted],
            properties: Properties::new(),
        }),
    );
}

#[test]
fn ping_both_versions() {
    for v in [V4, V5] {
        golden(v, &[0xC0, 0x00], Packet::PingReq);
        golden(v, &[0xD0, 0x00], Packet::PingResp);
    }
}

#[test]
fn disconnect_both_versions() {
    golden(V4, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    golden(V5, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    golden(
        V5,
        &[0xE0, 0x01, 0x04],
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
    );
    let mut d = Disconnect::new(ReasonCode::SessionTakenOver);
    d.properties = Properties::new().with(Property::SessionExpiryInterval(0));
    golden(
        V5,
        &[0xE0, 0x07, 0x8E, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        Packet::Disconnect(d),
    );
}

#[test]
fn auth_v5() {
    golden(V5, &[0xF0, 0x00], Packet::Auth(Auth::default()));
    let auth = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: Properties::new().with(Property::AuthenticationMethod("SCR".into())),
    };
    golden(
        V5,
        &[0xF0, 0x08, 0x18, 0x06, 0x15, 0x00, 0x03, b'S', b'C', b'R'],
        Packet::Auth(auth.clone()),
    );
    let mut out = BytesMut::new();
    assert!(encode(&Packet::Auth(auth), V4, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn several_packets_in_one_buffer_decode_one_at_a_time() {
    let mut buf = BytesMut::from(&[0xC0, 0x00, 0x40, 0x02, 0x00, 0x09, 0xD0][..]);
    assert_eq!(decode(&mut buf, V4, MAX).unwrap(), Some(Packet::PingReq));
    assert_eq!(
        decode(&mut buf, V4, MAX).unwrap(),
        Some(Packet::PubAck(PubAck::new(9)))
    );
    assert_eq!(decode(&mut buf, V4, MAX).unwrap(), None);
    assert_eq!(&buf[..], [0xD0]);
}
