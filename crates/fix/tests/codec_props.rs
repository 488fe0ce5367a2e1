//! Property tests: round trips of V/W/X/Y, no panics on arbitrary input, truncation gives
//! Incomplete, corruption gives a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tickwire_fix::md::{
    IncrementalEntry, MarketDataIncrementalRefresh, MarketDataRequest, MarketDataRequestReject,
    MarketDataSnapshotFullRefresh, MdEntryType, MdReqRejReason, MdUpdateAction, MdUpdateType,
    SnapshotEntry, SubscriptionRequestType,
};
use tickwire_fix::{encode, frame, AppMessage, Decimal, Error, Header, RawMessage, Timestamp};

fn header(seq: u64) -> Header<'static> {
    Header {
        begin_string: "FIX.4.4",
        sender_comp_id: "TICKWIRE",
        target_comp_id: "CLIENT",
        seq_num: seq,
        sending_time: Timestamp(1_709_214_307_089),
        orig_sending_time: None,
    }
}

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_./:-]{1,12}"
}
fn text() -> impl Strategy<Value = String> {
    "[ -~]{1,40}" // printable ASCII, spaces included
}
fn decimal() -> impl Strategy<Value = String> {
    "-?[0-9]{1,9}(\\.[0-9]{1,8})?"
}
fn date() -> impl Strategy<Value = String> {
    "20[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9])"
}
fn time() -> impl Strategy<Value = String> {
    "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{3})?"
}
fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

type OwnedInc = (
    MdUpdateAction,
    Option<MdEntryType>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn inc_entry() -> impl Strategy<Value = OwnedInc> {
    (
        pick(MdUpdateAction::ALL),
        proptest::option::of(pick(MdEntryType::ALL)),
        proptest::option::of(ident()),
        proptest::option::of(ident()),
        proptest::option::of(decimal()),
        proptest::option::of(decimal()),
        proptest::option::of(date()),
        proptest::option::of(time()),
    )
}

fn build_x<'a>(id: &'a Option<String>, es: &'a [OwnedInc]) -> MarketDataIncrementalRefresh<'a> {
    MarketDataIncrementalRefresh {
        md_req_id: id.as_deref(),
        entries: es
            .iter()
            .map(|(a, t, eid, sym, px, sz, d, tm)| IncrementalEntry {
                update_action: *a,
                entry_type: *t,
                entry_id: eid.as_deref(),
                symbol: sym.as_deref(),
                px: px.as_deref().map(|p| Decimal::new(p).unwrap()),
                size: sz.as_deref().map(|p| Decimal::new(p).unwrap()),
                date: d.as_deref(),
                time: tm.as_deref(),
            })
            .collect(),
    }
}

fn encoded<M: AppMessage>(m: &M) -> Vec<u8> {
    encode(&header(42), m).unwrap().to_vec()
}

/// Every decoder over the bytes; only checks that nothing panics.
fn decode_everything(bytes: &[u8]) {
    if let Ok(f) = frame(bytes, 1 << 20) {
        if let Ok(raw) = RawMessage::parse(&bytes[..f.len]) {
            let _ = MarketDataRequest::decode(&raw);
            let _ = MarketDataSnapshotFullRefresh::decode(&raw);
            let _ = MarketDataIncrementalRefresh::decode(&raw);
            let _ = MarketDataRequestReject::decode(&raw);
            for f in raw.body_fields() {
                if f.is_err() {
                    break;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn x_round_trips(id in proptest::option::of(ident()), es in proptest::collection::vec(inc_entry(), 1..12)) {
        let x = build_x(&id, &es);
        let bytes = encoded(&x);
        let raw = RawMessage::parse(&bytes).unwrap();
        prop_assert_eq!(MarketDataIncrementalRefresh::decode(&raw).unwrap(), x);
    }

    #[test]
    fn w_round_trips(
        id in proptest::option::of(ident()),
        sym in ident(),
        es in proptest::collection::vec((pick(MdEntryType::ALL), proptest::option::of(decimal()), proptest::option::of(decimal()), proptest::option::of(date()), proptest::option::of(time())), 0..12),
    ) {
        let w = MarketDataSnapshotFullRefresh {
            md_req_id: id.as_deref(),
            symbol: &sym,
            entries: es.iter().map(|(t, px, sz, d, tm)| SnapshotEntry {
                entry_type: *t,
                px: px.as_deref().map(|p| Decimal::new(p).unwrap()),
                size: sz.as_deref().map(|p| Decimal::new(p).unwrap()),
                date: d.as_deref(),
                time: tm.as_deref(),
            }).collect(),
        };
        let bytes = encoded(&w);
        let raw = RawMessage::parse(&bytes).unwrap();
        prop_assert_eq!(MarketDataSnapshotFullRefresh::decode(&raw).unwrap(), w);
    }

    #[test]
    fn v_round_trips(
        id in ident(),
        sub in pick(SubscriptionRequestType::ALL),
        depth in 0u32..1000,
        upd in proptest::option::of(pick(MdUpdateType::ALL)),
        types in proptest::collection::vec(pick(MdEntryType::ALL), 0..6),
        syms in proptest::collection::vec(ident(), 0..6),
    ) {
        let v = MarketDataRequest {
            md_req_id: &id,
            subscription_request_type: sub,
            market_depth: depth,
            md_update_type: upd,
            entry_types: types,
            symbols: syms.iter().map(String::as_str).collect(),
        };
        let bytes = encoded(&v);
        let raw = RawMessage::parse(&bytes).unwrap();
        prop_assert_eq!(MarketDataRequest::decode(&raw).unwrap(), v);
    }

    #[test]
    fn y_round_trips(id in ident(), reason in proptest::option::of(pick(MdReqRejReason::ALL)), txt in proptest::option::of(text())) {
        let y = MarketDataRequestReject { md_req_id: &id, reason, text: txt.as_deref() };
        let bytes = encoded(&y);
        let raw = RawMessage::parse(&bytes).unwrap();
        prop_assert_eq!(MarketDataRequestReject::decode(&raw).unwrap(), y);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
        let mut prefixed = b"8=FIX.4.4\x019=".to_vec();
        prefixed.extend_from_slice(&bytes);
        decode_everything(&prefixed);
    }

    #[test]
    fn mutated_valid_messages_never_panic(es in proptest::collection::vec(inc_entry(), 1..4), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let id = None;
        let mut bytes = encoded(&build_x(&id, &es));
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        decode_everything(&bytes);
        // A one-byte change can never leave a valid, different message: the checksum catches it.
        if byte != encoded(&build_x(&id, &es))[i] {
            prop_assert!(frame(&bytes, 1 << 20).is_err());
        }
    }

    #[test]
    fn truncation_is_incomplete(es in proptest::collection::vec(inc_entry(), 1..6), cut in any::<prop::sample::Index>()) {
        let id = Some("r".to_owned());
        let bytes = encoded(&build_x(&id, &es));
        let n = cut.index(bytes.len());
        prop_assert!(matches!(frame(&bytes[..n], 1 << 20), Err(Error::Incomplete)));
    }

    #[test]
    fn checksum_corruption_is_a_typed_error(es in proptest::collection::vec(inc_entry(), 1..6), delta in 1u16..1000) {
        let id = None;
        let mut bytes = encoded(&build_x(&id, &es));
        let n = bytes.len();
        let declared: u16 = std::str::from_utf8(&bytes[n - 4..n - 1]).unwrap().parse().unwrap();
        let wrong = format!("{:03}", (declared + delta) % 1000);
        bytes[n - 4..n - 1].copy_from_slice(wrong.as_bytes());
        match frame(&bytes, 1 << 20) {
            Err(Error::ChecksumMismatch { computed, .. }) => prop_assert_eq!(u16::from(computed), declared),
            other => prop_assert!(false, "expected ChecksumMismatch, got {:?}", other),
        }
    }

    #[test]
    fn body_corruption_is_detected(es in proptest::collection::vec(inc_entry(), 1..6), pos in any::<prop::sample::Index>()) {
        let id = None;
        let mut bytes = encoded(&build_x(&id, &es));
        let f = frame(&bytes, 1 << 20).unwrap();
        let i = f.body_start + pos.index(f.trailer_start - f.body_start);
        bytes[i] ^= 0x20;
        let e = frame(&bytes, 1 << 20).unwrap_err();
        prop_assert!(!e.is_incomplete());
    }
}

#[test]
fn oversize_is_refused() {
    let x = MarketDataIncrementalRefresh {
        md_req_id: None,
        entries: vec![IncrementalEntry::new(MdUpdateAction::Delete); 200],
    };
    let bytes = encoded(&x);
    assert!(matches!(
        frame(&bytes, 1024),
        Err(Error::TooLarge { max: 1024, .. })
    ));
}

#[test]
fn group_count_mismatch_is_an_error() {
    use tickwire_fix::RawBody;
    for body in [
        "268=3|279=0|269=0|279=1|269=1|", // fewer entries
        "268=1|279=0|269=0|279=1|269=1|", // more entries
        "268=1|269=0|279=0|",             // entry not starting with 279
        "268=1|279=0|269=0|269=1|",       // duplicate tag in entry
        "268=1|279=9|",                   // unknown MDUpdateAction
        "268=1|279=0|270=1.2.3|",         // bad decimal
        "268=1|279=0|272=2024|",          // bad date
    ] {
        let m = RawBody {
            msg_type: "X".into(),
            body: body.replace('|', "\x01").into_bytes(),
        };
        let bytes = encode(&header(1), &m).unwrap();
        let raw = RawMessage::parse(&bytes).unwrap();
        assert!(
            MarketDataIncrementalRefresh::decode(&raw).is_err(),
            "{body}"
        );
    }
}

#[test]
fn unknown_fields_are_skipped() {
    use tickwire_fix::RawBody;
    let m = RawBody {
        msg_type: "X".into(),
        body: "5000=x|268=1|279=0|269=0|15=EUR|55=A|270=1|346=3|"
            .replace('|', "\x01")
            .into_bytes(),
    };
    let bytes = encode(&header(1), &m).unwrap();
    let x = MarketDataIncrementalRefresh::decode(&RawMessage::parse(&bytes).unwrap()).unwrap();
    assert_eq!(x.entries[0].symbol, Some("A"));
    assert_eq!(x.entries[0].px.unwrap().as_str(), "1");
}

#[test]
fn wrong_type_is_an_error() {
    let y = MarketDataRequestReject {
        md_req_id: "1",
        reason: None,
        text: None,
    };
    let bytes = encoded(&y);
    let raw = RawMessage::parse(&bytes).unwrap();
    assert!(matches!(
        MarketDataIncrementalRefresh::decode(&raw),
        Err(Error::WrongMsgType { .. })
    ));
}
