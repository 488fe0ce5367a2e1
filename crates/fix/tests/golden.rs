//! Literal messages as QuickFIX writes them (header order 8,9,35,34,49,52,56), with BodyLength
//! and CheckSum verified by hand counting in the helper, not by the crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{hand_verify, soh};
use tickwire_fix::md::{
    IncrementalEntry, MarketDataIncrementalRefresh, MarketDataSnapshotFullRefresh, MdEntryType,
    MdUpdateAction, SnapshotEntry,
};
use tickwire_fix::{encode, frame, Decimal, Header, RawMessage, Timestamp};

const QF_LOGON: &str =
    "8=FIX.4.4|9=75|35=A|34=1|49=CLIENT|52=20240229-13:45:07.089|56=TICKWIRE|98=0|108=30|141=Y|10=090|";
const QF_X: &str = "8=FIX.4.4|9=155|35=X|34=7|49=FEED|52=20240229-13:45:07.089|56=TICKWIRE|262=req-1|268=2|279=0|269=0|278=b1|55=EUR/USD|270=1.08543|271=1000000|279=2|269=1|278=o7|55=EUR/USD|10=060|";
const OUR_W: &str = "8=FIX.4.4|9=173|35=W|49=TICKWIRE|56=CLIENT|34=3|52=20240229-13:45:07.089|262=req-1|55=EUR/USD|268=2|269=0|270=1.08543|271=1000000|272=20240229|273=13:45:07.089|269=1|270=1.08547|271=500000|10=020|";

#[test]
fn quickfix_logon_literal_parses() {
    let bytes = soh(QF_LOGON);
    hand_verify(&bytes);
    let f = frame(&bytes, 4096).unwrap();
    assert_eq!(f.len, bytes.len());
    let raw = RawMessage::parse(&bytes).unwrap();
    assert_eq!(raw.msg_type(), "A");
    assert_eq!(raw.seq_num(), Some(1));
    assert_eq!(raw.sender_comp_id(), Some("CLIENT"));
    assert_eq!(raw.target_comp_id(), Some("TICKWIRE"));
    assert_eq!(
        raw.sending_time().unwrap().unwrap(),
        Timestamp(1_709_214_307_089)
    );
    let hb = raw.body_field(108).unwrap().unwrap();
    assert_eq!(hb.value, b"30");
}

#[test]
fn quickfix_incremental_literal_decodes() {
    let bytes = soh(QF_X);
    hand_verify(&bytes);
    let raw = RawMessage::parse(&bytes).unwrap();
    let x = MarketDataIncrementalRefresh::decode(&raw).unwrap();
    assert_eq!(x.md_req_id, Some("req-1"));
    assert_eq!(x.entries.len(), 2);
    let e = &x.entries[0];
    assert_eq!(e.update_action, MdUpdateAction::New);
    assert_eq!(e.entry_type, Some(MdEntryType::Bid));
    assert_eq!(e.entry_id, Some("b1"));
    assert_eq!(e.symbol, Some("EUR/USD"));
    assert_eq!(e.px.unwrap().as_str(), "1.08543");
    assert_eq!(e.px.unwrap().to_scaled(), Some((108_543, 5)));
    assert_eq!(e.size.unwrap().as_str(), "1000000");
    assert_eq!(x.entries[1].update_action, MdUpdateAction::Delete);
    assert_eq!(x.entries[1].px, None);
}

#[test]
fn our_snapshot_encoding_matches_literal() {
    let expected = soh(OUR_W);
    hand_verify(&expected);
    let w = MarketDataSnapshotFullRefresh {
        md_req_id: Some("req-1"),
        symbol: "EUR/USD",
        entries: vec![
            SnapshotEntry {
                entry_type: MdEntryType::Bid,
                px: Some(Decimal::new("1.08543").unwrap()),
                size: Some(Decimal::new("1000000").unwrap()),
                date: Some("20240229"),
                time: Some("13:45:07.089"),
            },
            SnapshotEntry {
                entry_type: MdEntryType::Offer,
                px: Some(Decimal::new("1.08547").unwrap()),
                size: Some(Decimal::new("500000").unwrap()),
                date: None,
                time: None,
            },
        ],
    };
    let h = Header {
        begin_string: "FIX.4.4",
        sender_comp_id: "TICKWIRE",
        target_comp_id: "CLIENT",
        seq_num: 3,
        sending_time: Timestamp(1_709_214_307_089),
        orig_sending_time: None,
    };
    let bytes = encode(&h, &w).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&expected)
    );
    let raw = RawMessage::parse(&bytes).unwrap();
    assert_eq!(MarketDataSnapshotFullRefresh::decode(&raw).unwrap(), w);
}

#[test]
fn our_incremental_encoding_is_hand_verifiable() {
    let x = MarketDataIncrementalRefresh {
        md_req_id: None,
        entries: vec![IncrementalEntry {
            entry_type: Some(MdEntryType::Trade),
            symbol: Some("BTC-USD"),
            px: Some(Decimal::new("64000.5").unwrap()),
            size: Some(Decimal::new("0.25").unwrap()),
            ..IncrementalEntry::new(MdUpdateAction::New)
        }],
    };
    let h = Header {
        begin_string: "FIX.4.4",
        sender_comp_id: "TICKWIRE",
        target_comp_id: "CLIENT",
        seq_num: 12,
        sending_time: Timestamp(1_709_214_307_089),
        orig_sending_time: Some(Timestamp(1_709_214_300_000)),
    };
    let bytes = encode(&h, &x).unwrap();
    hand_verify(&bytes);
    let s = String::from_utf8_lossy(&bytes).replace('\x01', "|");
    assert!(
        s.starts_with("8=FIX.4.4|9=") && s.contains("|35=X|49=TICKWIRE|56=CLIENT|34=12|52=20240229-13:45:07.089|43=Y|122=20240229-13:45:00.000|268=1|279=0|269=2|55=BTC-USD|270=64000.5|271=0.25|10="),
        "{s}"
    );
}
