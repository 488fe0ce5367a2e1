//! Arbitrary bytes through the streaming framer and every typed decoder; whatever decodes must
//! re-encode to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_fix::md::{
    MarketDataIncrementalRefresh, MarketDataRequest, MarketDataRequestReject, MarketDataSnapshotFullRefresh,
};
use tickwire_fix::{encode, find_message_start, frame, Error, Header, RawBody, RawMessage, Timestamp};

fn header() -> Header<'static> {
    Header {
        begin_string: "FIX.4.4",
        sender_comp_id: "S",
        target_comp_id: "T",
        seq_num: 1,
        sending_time: Timestamp(0),
        orig_sending_time: None,
    }
}

fuzz_target!(|data: &[u8]| {
    // Random bytes rarely carry a valid CheckSum, so also frame them as the body of a V/W/X/Y:
    // that sends the fuzzer straight into the group and field decoders.
    if let Some((sel, body)) = data.split_first() {
        let msg_type = ["V", "W", "X", "Y"][usize::from(*sel % 4)];
        let mut body = body.to_vec();
        if body.last() != Some(&0x01) {
            body.push(0x01);
        }
        // The body ends with SOH, so it always encodes: a failure here would silently leave the
        // typed decoders unfuzzed, so it is a finding, not a skip.
        let bytes = encode(&header(), &RawBody { msg_type: msg_type.into(), body })
            .expect("a raw body ending in SOH encodes");
        stream(&bytes);
    }
    stream(data);
});

fn stream(data: &[u8]) {
    let mut buf = data;
    // Walk the input as a stream: frame, decode, skip garbage, like the session does.
    while !buf.is_empty() {
        match frame(buf, 1 << 16) {
            Ok(f) => {
                if let Ok(raw) = RawMessage::parse(&buf[..f.len]) {
                    if let Ok(m) = MarketDataIncrementalRefresh::decode(&raw) {
                        let owned: Vec<u8> = encode(&header(), &m).expect("re-encodes").to_vec();
                        let r2 = RawMessage::parse(&owned).expect("parses");
                        assert_eq!(MarketDataIncrementalRefresh::decode(&r2).expect("decodes"), m);
                    }
                    if let Ok(m) = MarketDataSnapshotFullRefresh::decode(&raw) {
                        let owned = encode(&header(), &m).expect("re-encodes").to_vec();
                        let r2 = RawMessage::parse(&owned).expect("parses");
                        assert_eq!(MarketDataSnapshotFullRefresh::decode(&r2).expect("decodes"), m);
                    }
                    if let Ok(m) = MarketDataRequest::decode(&raw) {
                        let owned = encode(&header(), &m).expect("re-encodes").to_vec();
                        let r2 = RawMessage::parse(&owned).expect("parses");
                        assert_eq!(MarketDataRequest::decode(&r2).expect("decodes"), m);
                    }
                    if let Ok(m) = MarketDataRequestReject::decode(&raw) {
                        let owned = encode(&header(), &m).expect("re-encodes").to_vec();
                        let r2 = RawMessage::parse(&owned).expect("parses");
                        assert_eq!(MarketDataRequestReject::decode(&r2).expect("decodes"), m);
                    }
                }
                buf = &buf[f.len..];
            }
            Err(Error::Incomplete) => break,
            Err(_) => buf = &buf[find_message_start(buf)..],
        }
    }
}
