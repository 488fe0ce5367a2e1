//! The X and W decoders as they were before the span-based ones (generic field iterator and
//! group walker), kept as the reference the fast ones are proptested against: same values on
//! valid input, and the same error, variant and text, on corrupted input.

use super::{check_type, group, set_once, MdEntryType, MdUpdateAction};
use super::{check_utc_date, check_utc_time};
use super::{IncrementalEntry, MarketDataIncrementalRefresh};
use super::{MarketDataSnapshotFullRefresh, SnapshotEntry};
use crate::decimal::Decimal;
use crate::error::{Error, Result};
use crate::field::Field;
use crate::tags::{self, msg_type};
use crate::RawMessage;

fn utc_date<'a>(f: &Field<'a>) -> Result<&'a str> {
    check_utc_date(f.tag, f.as_str()?)
}

fn utc_time<'a>(f: &Field<'a>) -> Result<&'a str> {
    check_utc_time(f.tag, f.as_str()?)
}

pub(super) fn decode_x<'a>(raw: &RawMessage<'a>) -> Result<MarketDataIncrementalRefresh<'a>> {
    let top_level = |tag| matches!(tag, tags::MD_REQ_ID | tags::NO_MD_ENTRIES);
    check_type(raw, msg_type::MARKET_DATA_INCREMENTAL_REFRESH)?;
    let mut md_req_id = None;
    let mut entries: Option<Vec<IncrementalEntry<'a>>> = None;
    let mut it = raw.body_fields();
    while let Some(f) = it.next() {
        let f = f?;
        match f.tag {
            tags::MD_REQ_ID => set_once(&mut md_req_id, &f, f.as_str()?)?,
            tags::NO_MD_ENTRIES => {
                let mut v: Vec<IncrementalEntry<'a>> = Vec::with_capacity(group::capacity_hint(&f));
                group::read_group(&mut it, &f, tags::MD_UPDATE_ACTION, top_level, |new, g| {
                    if new {
                        v.push(IncrementalEntry::new(MdUpdateAction::from_field(g)?));
                        return Ok(());
                    }
                    let Some(e) = v.last_mut() else { return Ok(()) };
                    match g.tag {
                        tags::MD_ENTRY_TYPE => {
                            set_once(&mut e.entry_type, g, MdEntryType::from_field(g)?)
                        }
                        tags::MD_ENTRY_ID => set_once(&mut e.entry_id, g, g.as_str()?),
                        tags::SYMBOL => set_once(&mut e.symbol, g, g.as_str()?),
                        tags::MD_ENTRY_PX => {
                            set_once(&mut e.px, g, Decimal::for_tag(g.tag, g.as_str()?)?)
                        }
                        tags::MD_ENTRY_SIZE => {
                            set_once(&mut e.size, g, Decimal::for_tag(g.tag, g.as_str()?)?)
                        }
                        tags::MD_ENTRY_DATE => set_once(&mut e.date, g, utc_date(g)?),
                        tags::MD_ENTRY_TIME => set_once(&mut e.time, g, utc_time(g)?),
                        _ => Ok(()),
                    }
                })?;
                set_once(&mut entries, &f, v)?
            }
            _ => {}
        }
    }
    Ok(MarketDataIncrementalRefresh {
        md_req_id,
        entries: entries.ok_or(Error::MissingField {
            tag: tags::NO_MD_ENTRIES,
            msg_type: msg_type::MARKET_DATA_INCREMENTAL_REFRESH,
        })?,
    })
}

pub(super) fn decode_w<'a>(raw: &RawMessage<'a>) -> Result<MarketDataSnapshotFullRefresh<'a>> {
    let top_level = |tag| matches!(tag, tags::MD_REQ_ID | tags::SYMBOL | tags::NO_MD_ENTRIES);
    check_type(raw, msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH)?;
    let mut md_req_id = None;
    let mut symbol = None;
    let mut entries: Option<Vec<SnapshotEntry<'a>>> = None;
    let mut it = raw.body_fields();
    while let Some(f) = it.next() {
        let f = f?;
        match f.tag {
            tags::MD_REQ_ID => set_once(&mut md_req_id, &f, f.as_str()?)?,
            tags::SYMBOL => set_once(&mut symbol, &f, f.as_str()?)?,
            tags::NO_MD_ENTRIES => {
                let mut v: Vec<SnapshotEntry<'a>> = Vec::with_capacity(group::capacity_hint(&f));
                group::read_group(&mut it, &f, tags::MD_ENTRY_TYPE, top_level, |new, g| {
                    if new {
                        v.push(SnapshotEntry {
                            entry_type: MdEntryType::from_field(g)?,
                            px: None,
                            size: None,
                            date: None,
                            time: None,
                        });
                        return Ok(());
                    }
                    let Some(e) = v.last_mut() else { return Ok(()) };
                    match g.tag {
                        tags::MD_ENTRY_PX => {
                            set_once(&mut e.px, g, Decimal::for_tag(g.tag, g.as_str()?)?)
                        }
                        tags::MD_ENTRY_SIZE => {
                            set_once(&mut e.size, g, Decimal::for_tag(g.tag, g.as_str()?)?)
                        }
                        tags::MD_ENTRY_DATE => set_once(&mut e.date, g, utc_date(g)?),
                        tags::MD_ENTRY_TIME => set_once(&mut e.time, g, utc_time(g)?),
                        _ => Ok(()),
                    }
                })?;
                set_once(&mut entries, &f, v)?
            }
            _ => {}
        }
    }
    let missing = |tag| Error::MissingField {
        tag,
        msg_type: msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH,
    };
    Ok(MarketDataSnapshotFullRefresh {
        md_req_id,
        symbol: symbol.ok_or_else(|| missing(tags::SYMBOL))?,
        entries: entries.ok_or_else(|| missing(tags::NO_MD_ENTRIES))?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{encode, Header, RawBody, Timestamp};
    use proptest::prelude::*;

    /// Field texts the decoders care about, valid and not, so mutations reach every check.
    fn field() -> impl Strategy<Value = String> {
        let tag = prop::sample::select(vec![
            "262",
            "268",
            "279",
            "269",
            "278",
            "55",
            "270",
            "271",
            "272",
            "273",
            "58",
            "95",
            "96",
            "0",
            "07",
            "x",
            "1234567890",
        ]);
        let value = prop::sample::select(vec![
            "0",
            "1",
            "2",
            "3",
            "9",
            "A",
            "00",
            "",
            "-",
            "1.5",
            "-0.25",
            "1.2.3",
            ".",
            "1e5",
            "20240229",
            "2024",
            "13:45:07",
            "13:45:07.089",
            "13-45-07",
            "EUR/USD",
            "b1",
            "\u{e9}t\u{e9}",
            "\u{ff}",
            "=",
            "3",
            "a\u{1}b",
        ]);
        (tag, value, any::<u8>()).prop_map(|(t, v, k)| match k % 16 {
            0 => format!("{t}{v}"), // no '='
            _ => format!("{t}={v}"),
        })
    }

    fn message(msg_type: &str, fields: &[String], raw_tail: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for f in fields {
            body.extend_from_slice(f.as_bytes());
            body.push(crate::SOH);
        }
        body.extend_from_slice(raw_tail);
        let h = Header {
            begin_string: "FIX.4.4",
            sender_comp_id: "S",
            target_comp_id: "T",
            seq_num: 1,
            sending_time: Timestamp(0),
            orig_sending_time: None,
        };
        encode(
            &h,
            &RawBody {
                msg_type: msg_type.into(),
                body,
            },
        )
        .map(|b| b.to_vec())
        .unwrap_or_default()
    }

    fn same<T: PartialEq + std::fmt::Debug>(
        a: Result<T>,
        b: Result<T>,
    ) -> std::result::Result<(), TestCaseError> {
        match (a, b) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "fast {a:?} vs reference {b:?}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn fast_decoders_match_the_reference(
            fields in prop::collection::vec(field(), 0..16),
            tail in prop::collection::vec(any::<u8>(), 0..4),
            w in any::<bool>(),
        ) {
            let bytes = message(if w { "W" } else { "X" }, &fields, &tail);
            let Ok(raw) = RawMessage::parse(&bytes) else { return Ok(()) };
            same(MarketDataIncrementalRefresh::decode(&raw), decode_x(&raw))?;
            same(MarketDataSnapshotFullRefresh::decode(&raw), decode_w(&raw))?;
            // The view of an owned Message does not know the text is UTF-8, nor (after a
            // round trip through Message) anything but the header index: same results.
            let owned = crate::Message::parse(bytes::Bytes::copy_from_slice(&bytes)).unwrap();
            let view = owned.raw();
            same(MarketDataIncrementalRefresh::decode(&view), decode_x(&raw))?;
            same(MarketDataSnapshotFullRefresh::decode(&view), decode_w(&raw))?;
            // decode_into leaves no trace of an earlier message.
            let mut v = vec![IncrementalEntry::new(MdUpdateAction::New); 3];
            if let Ok(x) = decode_x(&raw) {
                MarketDataIncrementalRefresh::decode_into(&raw, &mut v).unwrap();
                prop_assert_eq!(v, x.entries);
            }
        }
    }

    #[test]
    fn structured_groups_match_the_reference() {
        // Group shapes random fields rarely reach.
        for body in [
            "268=2|279=0|269=0|270=1|279=1|269=1|271=2|",
            "268=1|279=0|268=1|269=0|",
            "268=1|279=0|269=0|268=1|279=1|",
            "268=1|279=0|269=0|262=a|268=x|",
            "268=0|279=0|269=0|",
            "262=a|268=1|279=0|262=b|",
            "55=A|268=2|269=0|269=1|55=B|",
            "55=A|268=1|269=0|270=1|268=1|270=2|",
            "268=1|279=0|95=3|96=a\x01b|269=0|",
            "268=1|279=0|95=9|96=a|",
        ] {
            let fields: Vec<String> = body
                .trim_end_matches('|')
                .split('|')
                .map(str::to_string)
                .collect();
            for t in ["W", "X"] {
                let bytes = message(t, &fields, b"");
                let raw = RawMessage::parse(&bytes).unwrap();
                same(MarketDataIncrementalRefresh::decode(&raw), decode_x(&raw)).unwrap();
                same(MarketDataSnapshotFullRefresh::decode(&raw), decode_w(&raw)).unwrap();
            }
        }
    }
}
