//! Feeds arbitrary bytes to the decoder as a 3.1.1 stream and as a 5.0 stream. Every packet
//! that decodes must encode again and decode to the same value: decode accepts nothing that
//! encode cannot reproduce, and the two agree on every field.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tickwire_mqtt::{decode, encode, encoded_len, Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
            // CONNECT carries its own protocol level.
            let version = match &packet {
                Packet::Connect(connect) => connect.protocol,
                _ => version,
            };
            let mut wire = BytesMut::new();
            encode(&packet, version, &mut wire).expect("a decoded packet encodes");
            assert_eq!(wire.len(), encoded_len(&packet, version).expect("length"));
            let again = decode(&mut wire, version, usize::MAX).expect("re-decode");
            assert_eq!(again.as_ref(), Some(&packet));
            assert!(wire.is_empty());
        }
    }
});
