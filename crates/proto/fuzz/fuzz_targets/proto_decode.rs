#![no_main]
//! The decoders the gRPC edge and the binary WebSocket add. Any bytes as a protobuf message a
//! client sends (`ClientMessage`, `PublishRequest`, `SubscribeRequest`) or a server sends
//! (`ServerMessage`) decode to a message or an error, never a panic, and what decodes
//! re-encodes to bytes that decode to the same message. Any bytes as stored data read into a
//! typed payload of every kind (`payload_of`) or stay the same bytes; a typed payload written
//! back as JSON (`json_of`) reads back as the same typed message, so a typed view never changes
//! what was stored. A book channel value that parses (`L2Msg`) round-trips through its JSON.
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tickwire_feed::l2::L2Msg;
use tickwire_proto::{json_of, payload_of, v1, PayloadKind};

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = M::decode(data) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
        assert_eq!(again, m);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<v1::ClientMessage>(data);
    round_trip::<v1::ServerMessage>(data);
    round_trip::<v1::PublishRequest>(data);
    round_trip::<v1::SubscribeRequest>(data);

    let stored = Bytes::copy_from_slice(data);
    for kind in [
        PayloadKind::Quote,
        PayloadKind::Trade,
        PayloadKind::Book,
        PayloadKind::Depth,
        PayloadKind::Candle,
        PayloadKind::Json,
    ] {
        let p = payload_of(kind, &stored);
        match &p.kind {
            Some(v1::payload::Kind::Json(b)) => assert_eq!(b, &stored),
            Some(_) => {
                // What was read typed is data the namespace accepted: it writes back.
                let json = json_of(kind, "fuzz", Some(&p)).expect("a typed view writes back");
                assert_eq!(payload_of(kind, &json), p, "{kind:?}: {:?}", String::from_utf8_lossy(&json));
            }
            None => panic!("payload_of always gives a payload"),
        }
    }

    if let Ok(m) = L2Msg::parse(data) {
        assert_eq!(L2Msg::parse(m.to_json().as_bytes()).as_ref(), Ok(&m));
    }
});
