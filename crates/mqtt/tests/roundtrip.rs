#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: encode/decode round trips for arbitrary packets in both versions, decoding
//! arbitrary or corrupted bytes never panics, and a packet split anywhere waits for the rest.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::select;
use tickwire_mqtt::{
    decode, encode, encoded_len, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketType,
    Properties, Property, PropertyId, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish,
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

use ProtocolVersion::{V4, V5};

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é€/_-]{0,10}"
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9$]{1,6}(/[a-zA-Z0-9]{0,6}){0,3}"
}

fn filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![3 => "[a-z$]{1,4}", 1 => Just("+".to_string())];
    (
        prop::collection::vec(level, 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(levels, hash, all)| match (all, hash) {
            (true, _) => "#".to_string(),
            (false, true) => format!("{}/#", levels.join("/")),
            (false, false) => levels.join("/"),
        })
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn codes(packet: PacketType) -> Vec<ReasonCode> {
    (0..=255u8)
        .filter_map(ReasonCode::from_u8)
        .filter(|c| c.is_valid_for(packet))
        .collect()
}

fn property(id: PropertyId) -> BoxedStrategy<Property> {
    use Property as P;
    use PropertyId as I;
    match id {
        I::PayloadFormatIndicator => any::<bool>().prop_map(P::PayloadFormatIndicator).boxed(),
        I::MessageExpiryInterval => any::<u32>().prop_map(P::MessageExpiryInterval).boxed(),
        I::ContentType => text().prop_map(P::ContentType).boxed(),
        I::ResponseTopic => topic().prop_map(P::ResponseTopic).boxed(),
        I::CorrelationData => binary().prop_map(P::CorrelationData).boxed(),
        I::SubscriptionIdentifier => (1u32..=268_435_455)
            .prop_map(P::SubscriptionIdentifier)
            .boxed(),
        I::SessionExpiryInterval => any::<u32>().prop_map(P::SessionExpiryInterval).boxed(),
        I::AssignedClientIdentifier => text().prop_map(P::AssignedClientIdentifier).boxed(),
        I::ServerKeepAlive => any::<u16>().prop_map(P::ServerKeepAlive).boxed(),
        I::AuthenticationMethod => text().prop_map(P::AuthenticationMethod).boxed(),
        I::AuthenticationData => binary().prop_map(P::AuthenticationData).boxed(),
        I::RequestProblemInformation => {
            any::<bool>().prop_map(P::RequestProblemInformation).boxed()
        }
        I::WillDelayInterval => any::<u32>().prop_map(P::WillDelayInterval).boxed(),
        I::RequestResponseInformation => any::<bool>()
            .prop_map(P::RequestResponseInformation)
            .boxed(),
        I::ResponseInformation => text().prop_map(P::ResponseInformation).boxed(),
        I::ServerReference => text().prop_map(P::ServerReference).boxed(),
        I::ReasonString => text().prop_map(P::ReasonString).boxed(),
        I::ReceiveMaximum => (1u16..).prop_map(P::ReceiveMaximum).boxed(),
        I::TopicAliasMaximum => any::<u16>().prop_map(P::TopicAliasMaximum).boxed(),
        I::TopicAlias => (1u16..).prop_map(P::TopicAlias).boxed(),
        I::MaximumQos => select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])
            .prop_map(P::MaximumQos)
            .boxed(),
        I::RetainAvailable => any::<bool>().prop_map(P::RetainAvailable).boxed(),
        I::UserProperty => (text(), text())
            .prop_map(|(k, v)| P::UserProperty(k, v))
            .boxed(),
        I::MaximumPacketSize => (1u32..).prop_map(P::MaximumPacketSize).boxed(),
        I::WildcardSubscriptionAvailable => any::<bool>()
            .prop_map(P::WildcardSubscriptionAvailable)
            .boxed(),
        I::SubscriptionIdentifierAvailable => any::<bool>()
            .prop_map(P::SubscriptionIdentifierAvailable)
            .boxed(),
        I::SharedSubscriptionAvailable => any::<bool>()
            .prop_map(P::SharedSubscriptionAvailable)
            .boxed(),
    }
}

/// Each allowed single-use property at most once, plus 0..3 user properties, shuffled.
fn properties(version: ProtocolVersion, ids: &[PropertyId]) -> BoxedStrategy<Properties> {
    if version == V4 {
        return Just(Properties::new()).boxed();
    }
    let singles: Vec<_> = ids
        .iter()
        .map(|id| prop::option::of(property(*id)))
        .collect();
    let users = prop::collection::vec(property(PropertyId::UserProperty), 0..3);
    (singles, users)
        .prop_map(|(singles, users)| {
            singles
                .into_iter()
                .flatten()
                .chain(users)
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
        .prop_map(Properties::from)
        .boxed()
}

use PropertyId as I;
const CONNECT_PROPS: &[PropertyId] = &[
    I::SessionExpiryInterval,
    I::AuthenticationMethod,
    I::AuthenticationData,
    I::RequestProblemInformation,
    I::RequestResponseInformation,
    I::ReceiveMaximum,
    I::TopicAliasMaximum,
    I::MaximumPacketSize,
];
const WILL_PROPS: &[PropertyId] = &[
    I::PayloadFormatIndicator,
    I::MessageExpiryInterval,
    I::ContentType,
    I::ResponseTopic,
    I::CorrelationData,
    I::WillDelayInterval,
];
const CONNACK_PROPS: &[PropertyId] = &[
    I::SessionExpiryInterval,
    I::AssignedClientIdentifier,
    I::ServerKeepAlive,
    I::AuthenticationMethod,
    I::AuthenticationData,
    I::ResponseInformation,
    I::ServerReference,
    I::ReasonString,
    I::ReceiveMaximum,
    I::TopicAliasMaximum,
    I::MaximumQos,
    I::RetainAvailable,
    I::MaximumPacketSize,
    I::WildcardSubscriptionAvailable,
    I::SubscriptionIdentifierAvailable,
    I::SharedSubscriptionAvailable,
];
const PUBLISH_PROPS: &[PropertyId] = &[
    I::PayloadFormatIndicator,
    I::MessageExpiryInterval,
    I::ContentType,
    I::ResponseTopic,
    I::CorrelationData,
    I::SubscriptionIdentifier,
    I::SubscriptionIdentifier,
    I::TopicAlias,
];
const ACK_PROPS: &[PropertyId] = &[I::ReasonString];
const DISCONNECT_PROPS: &[PropertyId] = &[
    I::SessionExpiryInterval,
    I::ServerReference,
    I::ReasonString,
];
const AUTH_PROPS: &[PropertyId] = &[
    I::AuthenticationMethod,
    I::AuthenticationData,
    I::ReasonString,
];

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic(),
        binary(),
        qos(),
        any::<bool>(),
        properties(v, WILL_PROPS),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        prop::option::of(will),
        prop::option::of(text()),
        prop::option::of(binary()),
        properties(v, CONNECT_PROPS),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 cannot carry a password without a user name.
                let password = if v == V4 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                })
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let list = match v {
        V4 => vec![
            ReasonCode::Success,
            ReasonCode::UnsupportedProtocolVersion,
            ReasonCode::ClientIdentifierNotValid,
            ReasonCode::ServerUnavailable,
            ReasonCode::BadUserNameOrPassword,
            ReasonCode::NotAuthorized,
        ],
        V5 => codes(PacketType::ConnAck),
    };
    (any::<bool>(), select(list), properties(v, CONNACK_PROPS)).prop_map(
        |(sp, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && !reason_code.is_error(),
                reason_code,
                properties,
            })
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        1u16..,
        binary(),
        properties(v, PUBLISH_PROPS),
        any::<bool>(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, id, payload, mut properties, alias_only)| {
                let mut topic = topic;
                if v == V5 && alias_only {
                    topic.clear();
                    if properties.topic_alias().is_none() {
                        properties.push(Property::TopicAlias(1));
                    }
                }
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { 0 } else { id },
                    payload,
                    properties,
                })
            },
        )
}

fn ack_parts(
    v: ProtocolVersion,
    packet: PacketType,
) -> impl Strategy<Value = (u16, ReasonCode, Properties)> {
    let list = match v {
        V4 => vec![ReasonCode::Success],
        V5 => codes(packet),
    };
    (1u16.., select(list), properties(v, ACK_PROPS))
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNew,
        RetainHandling::DoNotSend,
    ]);
    let options = (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, nl, rap, rh)| match v {
            V4 => SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
            V5 => SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            },
        },
    );
    let filters = prop::collection::vec(
        (filter(), options).prop_map(|(filter, options)| SubscribeFilter { filter, options }),
        1..4,
    );
    (1u16.., filters, properties(v, &[I::SubscriptionIdentifier])).prop_map(
        |(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        },
    )
}

fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let suback_codes = match v {
        V4 => vec![
            ReasonCode::Success,
            ReasonCode::GrantedQos1,
            ReasonCode::GrantedQos2,
            ReasonCode::UnspecifiedError,
        ],
        V5 => codes(PacketType::SubAck),
    };
    let unsuback_codes = match v {
        V4 => Just(Vec::new()).boxed(),
        V5 => prop::collection::vec(select(codes(PacketType::UnsubAck)), 1..4).boxed(),
    };
    let disconnect_codes = match v {
        V4 => vec![ReasonCode::Success],
        V5 => codes(PacketType::Disconnect),
    };
    let mut options = vec![
        connect(v).boxed(),
        connack(v).boxed(),
        publish(v).boxed(),
        ack_parts(v, PacketType::PubAck)
            .prop_map(|(packet_id, reason_code, properties)| {
                Packet::PubAck(PubAck {
                    packet_id,
                    reason_code,
                    properties,
                })
            })
            .boxed(),
        ack_parts(v, PacketType::PubRec)
            .prop_map(|(packet_id, reason_code, properties)| {
                Packet::PubRec(PubRec {
                    packet_id,
                    reason_code,
                    properties,
                })
            })
            .boxed(),
        ack_parts(v, PacketType::PubRel)
            .prop_map(|(packet_id, reason_code, properties)| {
                Packet::PubRel(PubRel {
                    packet_id,
                    reason_code,
                    properties,
                })
            })
            .boxed(),
        ack_parts(v, PacketType::PubComp)
            .prop_map(|(packet_id, reason_code, properties)| {
                Packet::PubComp(PubComp {
                    packet_id,
                    reason_code,
                    properties,
                })
            })
            .boxed(),
        subscribe(v).boxed(),
        (
            1u16..,
            prop::collection::vec(select(suback_codes), 1..4),
            properties(v, ACK_PROPS),
        )
            .prop_map(|(packet_id, reason_codes, properties)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    reason_codes,
                    properties,
                })
            })
            .boxed(),
        (
            1u16..,
            prop::collection::vec(filter(), 1..4),
            properties(v, &[]),
        )
            .prop_map(|(packet_id, filters, properties)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters,
                    properties,
                })
            })
            .boxed(),
        (1u16.., unsuback_codes, properties(v, ACK_PROPS))
            .prop_map(|(packet_id, reason_codes, properties)| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reason_codes,
                    properties,
                })
            })
            .boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        (select(disconnect_codes), properties(v, DISCONNECT_PROPS))
            .prop_map(|(reason_code, properties)| {
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties,
                })
            })
            .boxed(),
    ];
    if v == V5 {
        options.push(
            (select(codes(PacketType::Auth)), properties(v, AUTH_PROPS))
                .prop_map(|(reason_code, properties)| {
                    Packet::Auth(Auth {
                        reason_code,
                        properties,
                    })
                })
                .boxed(),
        );
    }
    proptest::strategy::Union::new(options).boxed()
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop_oneof![
        packet(V4).prop_map(|p| (V4, p)),
        packet(V5).prop_map(|p| (V5, p))
    ]
}

fn wire(v: ProtocolVersion, p: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_inverts_encode((v, p) in versioned_packet()) {
        let mut buf = wire(v, &p);
        prop_assert_eq!(buf.len(), encoded_len(&p, v).unwrap());
        let decoded = decode(&mut buf, v, usize::MAX).unwrap();
        prop_assert_eq!(decoded, Some(p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_packet_waits_for_the_rest((v, p) in versioned_packet(), next in prop::option::of(packet(V5))) {
        let whole = wire(v, &p);
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            prop_assert_eq!(decode(&mut buf, v, usize::MAX).unwrap(), None, "cut at {}", cut);
            prop_assert_eq!(buf.len(), cut, "nothing consumed while incomplete");
            buf.extend_from_slice(&whole[cut..]);
            prop_assert_eq!(decode(&mut buf, v, usize::MAX).unwrap(), Some(p.clone()));
        }
        // Back-to-back packets come out one by one.
        if let (V5, Some(next)) = (v, next) {
            let mut buf = whole.clone();
            buf.extend_from_slice(&wire(V5, &next));
            prop_assert_eq!(decode(&mut buf, V5, usize::MAX).unwrap(), Some(p));
            prop_assert_eq!(decode(&mut buf, V5, usize::MAX).unwrap(), Some(next));
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), max in 2usize..512) {
        for v in [V4, V5] {
            decode_all(&bytes, v, max);
        }
    }

    #[test]
    fn corrupted_packets_never_panic((v, p) in versioned_packet(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = wire(v, &p).to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        decode_all(&bytes, v, usize::MAX);
    }
}

/// Decodes a stream until it stalls or fails; whatever decodes must survive a round trip.
fn decode_all(bytes: &[u8], v: ProtocolVersion, max: usize) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(p)) = decode(&mut buf, v, max) {
        let version = match &p {
            Packet::Connect(c) => c.protocol,
            _ => v,
        };
        let mut again = wire(version, &p);
        assert_eq!(decode(&mut again, version, usize::MAX).unwrap(), Some(p));
    }
}
