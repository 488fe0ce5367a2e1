#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every spec rule the decoder enforces, with the MQTT 5 reason code the broker must send.

use bytes::BytesMut;
use tickwire_mqtt::{decode, peek_connect_version, Error, ProtocolVersion, ReasonCode};

use ProtocolVersion::{V4, V5};
use ReasonCode::*;

fn fails(version: ProtocolVersion, wire: &[u8], code: ReasonCode) -> Error {
    let mut buf = BytesMut::from(wire);
    let err = decode(&mut buf, version, 1 << 16).expect_err(&format!("{wire:02x?} must fail"));
    assert_eq!(err.reason_code(), code, "{wire:02x?}: {err}");
    err
}

#[test]
fn remaining_length_is_at_most_four_bytes_and_minimal() {
    fails(V4, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], MalformedPacket);
    // The error fires before the 5th byte arrives: no waiting on an endless length.
    fails(V4, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF], MalformedPacket);
    fails(V5, &[0xC0, 0x80, 0x00], MalformedPacket);
    let mut partial = BytesMut::from(&[0x30, 0xFF, 0xFF][..]);
    assert_eq!(decode(&mut partial, V4, usize::MAX).unwrap(), None);
}

#[test]
fn oversize_packet_is_refused_from_the_fixed_header_alone() {
    // Announces 1 MB but only the header is here: refused without buffering the body.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x40][..]);
    let err = decode(&mut buf, V5, 1024).unwrap_err();
    assert_eq!(
        err,
        Error::PacketTooLarge {
            size: 1_048_580,
            max: 1024
        }
    );
    assert_eq!(err.reason_code(), PacketTooLarge);
    assert!(
        buf.capacity() < 1024,
        "no allocation for the announced size"
    );
    // Within the limit, a bare header still allocates nothing: growth follows received bytes.
    let mut header_only = BytesMut::from(&[0x30, 0x80, 0x80, 0x40][..]);
    assert_eq!(decode(&mut header_only, V5, 16 << 20).unwrap(), None);
    assert!(header_only.capacity() < 1024);
    // The limit counts the fixed header: a 4-byte PUBACK passes at 4 and fails at 3.
    let mut exact = BytesMut::from(&[0x40, 0x02, 0x00, 0x01][..]);
    assert!(decode(&mut exact, V4, 4).unwrap().is_some());
    let mut over = BytesMut::from(&[0x40, 0x02, 0x00, 0x01][..]);
    assert!(matches!(
        decode(&mut over, V4, 3),
        Err(Error::PacketTooLarge { .. })
    ));
}

#[test]
fn reserved_packet_types_and_header_flags() {
    fails(V4, &[0x00, 0x00], MalformedPacket);
    fails(V4, &[0xF0, 0x00], MalformedPacket); // AUTH does not exist in 3.1.1
    fails(V4, &[0xC1, 0x00], MalformedPacket);
    fails(V5, &[0x60, 0x02, 0x00, 0x01], MalformedPacket); // PUBREL needs 0b0010
    fails(
        V5,
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        MalformedPacket,
    );
    fails(
        V4,
        &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        MalformedPacket,
    );
    fails(V4, &[0x22, 0x02, 0x00, 0x00], MalformedPacket);
}

#[test]
fn qos_3_is_invalid() {
    fails(
        V4,
        &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
        MalformedPacket,
    );
    fails(
        V4,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
        MalformedPacket,
    );
    // will QoS 3
    fails(
        V4,
        &[
            0x10, 0x0F, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x1E, 0, 0, 0, 1, b'c', 0, 0,
        ],
        MalformedPacket,
    );
}

#[test]
fn strings_are_utf8_without_nul() {
    fails(V4, &[0x30, 0x03, 0x00, 0x01, 0xFF], MalformedPacket);
    fails(V4, &[0x30, 0x04, 0x00, 0x02, 0xED, 0xA0], MalformedPacket); // truncated sequence
    fails(V4, &[0x30, 0x03, 0x00, 0x01, 0x00], MalformedPacket); // U+0000
                                                                 // UTF-16 surrogate U+D800 encoded in UTF-8 is not well-formed [MQTT-1.5.4-1].
    fails(
        V4,
        &[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80],
        MalformedPacket,
    );
}

#[test]
fn topic_names_have_no_wildcards_and_are_not_empty() {
    fails(
        V4,
        &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
        TopicNameInvalid,
    );
    fails(V5, &[0x30, 0x04, 0x00, 0x01, b'#', 0x00], TopicNameInvalid);
    fails(V4, &[0x30, 0x02, 0x00, 0x00], TopicNameInvalid);
    fails(V5, &[0x30, 0x03, 0x00, 0x00, 0x00], TopicNameInvalid); // empty and no alias
}

#[test]
fn packet_ids_are_non_zero() {
    fails(
        V4,
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        ProtocolError,
    );
    fails(
        V4,
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        ProtocolError,
    );
    fails(
        V4,
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
        ProtocolError,
    );
    fails(V4, &[0x40, 0x02, 0x00, 0x00], ProtocolError);
}

#[test]
fn dup_on_qos0_is_malformed() {
    fails(V4, &[0x38, 0x03, 0x00, 0x01, b't'], MalformedPacket);
}

#[test]
fn subscribe_and_unsubscribe_need_a_filter() {
    fails(V4, &[0x82, 0x02, 0x00, 0x01], ProtocolError);
    fails(V5, &[0x82, 0x03, 0x00, 0x01, 0x00], ProtocolError);
    fails(V4, &[0xA2, 0x02, 0x00, 0x01], ProtocolError);
}

#[test]
fn subscribe_options_and_filters_are_checked() {
    // reserved option bits (v4 allows only QoS, v5 reserves bits 6-7)
    fails(
        V4,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
        MalformedPacket,
    );
    fails(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40],
        MalformedPacket,
    );
    // retain handling 3
    fails(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30],
        ProtocolError,
    );
    // invalid filter "a#"
    fails(
        V4,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x00],
        TopicFilterInvalid,
    );
    // no local on a shared subscription
    let mut shared = vec![0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A];
    shared.extend_from_slice(b"$share/g/a");
    shared.push(0x04);
    fails(V5, &shared, ProtocolError);
}

#[test]
fn connect_flags_are_consistent() {
    let connect = |flags: u8| {
        vec![
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 0, 0, 1, b'c',
        ]
    };
    fails(V4, &connect(0x03), MalformedPacket); // reserved bit
    fails(V4, &connect(0x0A), MalformedPacket); // will QoS without will flag
    fails(V4, &connect(0x22), MalformedPacket); // will retain without will flag
    fails(V4, &connect(0x42), MalformedPacket); // password without user name (3.1.1)
    fails(V4, &connect(0x82), MalformedPacket); // user name flag, field missing
}

#[test]
fn unsupported_protocol_levels_and_names() {
    let mqtt31 = [
        0x10, 0x11, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 3, b'a', b'b',
        b'c',
    ];
    assert_eq!(
        fails(V4, &mqtt31, UnsupportedProtocolVersion),
        Error::UnsupportedProtocolVersion { level: 3 }
    );
    fails(
        V5,
        &[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 0, 0, 1, b'c',
        ],
        UnsupportedProtocolVersion,
    );
    fails(
        V5,
        &[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 0, 0, 1, b'c',
        ],
        UnsupportedProtocolVersion,
    );
    assert!(matches!(
        peek_connect_version(&mqtt31),
        Err(Error::UnsupportedProtocolVersion { level: 3 })
    ));
}

#[test]
fn peek_learns_the_version_from_a_partial_connect() {
    let v5 = [0x10, 0x15, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02];
    for cut in 0..9 {
        assert_eq!(peek_connect_version(&v5[..cut]).unwrap(), None, "cut {cut}");
    }
    assert_eq!(peek_connect_version(&v5[..9]).unwrap(), Some(V5));
    assert_eq!(
        peek_connect_version(&[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4]).unwrap(),
        Some(V4)
    );
    let err = peek_connect_version(&[0x30, 0x00]).unwrap_err();
    assert_eq!(err.reason_code(), ProtocolError);
}

#[test]
fn connect_decodes_with_its_own_level() {
    let v5 = [
        0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0, 1, b'c',
    ];
    let mut buf = BytesMut::from(&v5[..]);
    let Some(tickwire_mqtt::Packet::Connect(c)) = decode(&mut buf, V4, 1024).unwrap() else {
        panic!("connect expected")
    };
    assert_eq!(c.protocol, V5);
}

#[test]
fn properties_are_checked() {
    // PUBLISH v5, topic "t", then a property block.
    let publish = |props: &[u8]| {
        let mut wire = vec![
            0x30,
            (4 + props.len()) as u8,
            0x00,
            0x01,
            b't',
            props.len() as u8,
        ];
        wire.extend_from_slice(props);
        wire
    };
    // duplicated Content Type
    fails(
        V5,
        &publish(&[0x03, 0, 1, b'a', 0x03, 0, 1, b'b']),
        ProtocolError,
    );
    // repeated User Property and Subscription Identifier are fine in PUBLISH
    let mut ok = BytesMut::from(
        &publish(&[
            0x26, 0, 1, b'a', 0, 0, 0x26, 0, 1, b'a', 0, 0, 0x0B, 1, 0x0B, 2,
        ])[..],
    );
    let Some(tickwire_mqtt::Packet::Publish(p)) = decode(&mut ok, V5, 1024).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.properties.subscription_identifiers().collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(p.properties.user_properties().count(), 2);
    // Session Expiry Interval is not a PUBLISH property
    fails(V5, &publish(&[0x11, 0, 0, 0, 1]), MalformedPacket);
    // unknown identifier
    fails(V5, &publish(&[0x7F, 0]), MalformedPacket);
    // payload format indicator 2, topic alias 0, subscription identifier 0
    fails(V5, &publish(&[0x01, 2]), ProtocolError);
    fails(V5, &publish(&[0x23, 0, 0]), TopicAliasInvalid);
    fails(V5, &publish(&[0x0B, 0]), ProtocolError);
    // property block longer than the packet
    fails(V5, &[0x30, 0x04, 0x00, 0x01, b't', 0x05], MalformedPacket);
    // value cut short inside the block
    fails(V5, &publish(&[0x02, 0, 0]), MalformedPacket);
    // two Subscription Identifiers in SUBSCRIBE
    fails(
        V5,
        &[0x82, 0x0B, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0],
        ProtocolError,
    );
    // Receive Maximum 0 and Maximum Packet Size 0 in CONNECT
    let connect = |props: &[u8]| {
        let mut wire = vec![
            0x10,
            (13 + props.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            2,
            0,
            0,
        ];
        wire.push(props.len() as u8);
        wire.extend_from_slice(props);
        wire.extend_from_slice(&[0, 0]);
        wire
    };
    fails(V5, &connect(&[0x21, 0, 0]), ProtocolError);
    fails(V5, &connect(&[0x27, 0, 0, 0, 0]), ProtocolError);
    fails(V5, &connect(&[0x21, 0, 1, 0x21, 0, 2]), ProtocolError);
    fails(V5, &connect(&[0x17, 2]), ProtocolError);
}

#[test]
fn reason_codes_must_belong_to_the_packet() {
    fails(V5, &[0x40, 0x03, 0x00, 0x01, 0x92], MalformedPacket); // 0x92 is for PUBREL/PUBCOMP
    fails(V5, &[0x20, 0x03, 0x00, 0x04, 0x00], MalformedPacket);
    fails(V4, &[0x20, 0x02, 0x00, 0x06], MalformedPacket);
    fails(V4, &[0x90, 0x03, 0x00, 0x01, 0x03], MalformedPacket);
    fails(V5, &[0xE0, 0x01, 0x18], MalformedPacket);
    fails(V5, &[0xF0, 0x01, 0x04], MalformedPacket);
    // session present with a refusal
    fails(V4, &[0x20, 0x02, 0x01, 0x05], ProtocolError);
}

#[test]
fn trailing_and_missing_bytes_are_malformed() {
    fails(V4, &[0xC0, 0x01, 0x00], MalformedPacket);
    fails(V4, &[0xE0, 0x01, 0x00], MalformedPacket);
    fails(V4, &[0x40, 0x03, 0x00, 0x01, 0x00], MalformedPacket);
    fails(V4, &[0x40, 0x01, 0x00], MalformedPacket);
    fails(V4, &[0xB0, 0x03, 0x00, 0x01, 0x00], MalformedPacket);
    fails(V5, &[0x90, 0x03, 0x00, 0x01, 0x00], MalformedPacket); // SUBACK with no code
}
