//! MarketDataSnapshotFullRefresh (W).

use super::{
    check_type, check_utc_date, check_utc_time, num_in_group, one_char, set_once_tag, MdEntryType,
};
use crate::decimal::Decimal;
use crate::encode::{AppMessage, FieldWriter};
use crate::error::{Error, Result};
use crate::field::{Scanner, Text};
use crate::tags::{self, msg_type};
use crate::RawMessage;

/// MarketDataSnapshotFullRefresh (W): the full state of one instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketDataSnapshotFullRefresh<'a> {
    /// MDReqID (262) of the request this answers, if any.
    pub md_req_id: Option<&'a str>,
    /// Symbol (55).
    pub symbol: &'a str,
    /// NoMDEntries (268).
    pub entries: Vec<SnapshotEntry<'a>>,
}

/// One NoMDEntries (268) entry of a W.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry<'a> {
    /// MDEntryType (269).
    pub entry_type: MdEntryType,
    /// MDEntryPx (270).
    pub px: Option<Decimal<'a>>,
    /// MDEntrySize (271).
    pub size: Option<Decimal<'a>>,
    /// MDEntryDate (272), `YYYYMMDD`.
    pub date: Option<&'a str>,
    /// MDEntryTime (273), `HH:MM:SS[.sss]`.
    pub time: Option<&'a str>,
}

impl<'a> MarketDataSnapshotFullRefresh<'a> {
    /// Decodes from a parsed message of type W.
    pub fn decode(raw: &RawMessage<'a>) -> Result<Self> {
        let mut entries = Vec::new();
        let (md_req_id, symbol) = Self::decode_into(raw, &mut entries)?;
        Ok(MarketDataSnapshotFullRefresh {
            md_req_id,
            symbol,
            entries,
        })
    }

    /// Decodes the entries of a W into `entries` (cleared first, so its allocation is reused)
    /// and returns MDReqID (262) and Symbol (55). On error `entries` holds whatever was decoded
    /// before the fault. Same checks and errors as [`Self::decode`].
    pub fn decode_into(
        raw: &RawMessage<'a>,
        entries: &mut Vec<SnapshotEntry<'a>>,
    ) -> Result<(Option<&'a str>, &'a str)> {
        entries.clear();
        check_type(raw, msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH)?;
        let (mut sc, text) = raw.body_scan();
        let mut md_req_id = None;
        let mut symbol = None;
        let mut have_entries = false;
        while let Some(f) = sc.next_span()? {
            match f.tag {
                tags::MD_REQ_ID => set_once_tag(&mut md_req_id, f.tag, text.value(&f)?)?,
                tags::SYMBOL => set_once_tag(&mut symbol, f.tag, text.value(&f)?)?,
                tags::NO_MD_ENTRIES => {
                    let declared = num_in_group(f.tag, text.bytes(&f))?;
                    if declared > 0 {
                        // Bounded so a hostile NumInGroup cannot reserve gigabytes.
                        entries.reserve(declared.min(64));
                        read_entries(&mut sc, &text, f.tag, declared, entries)?;
                    }
                    // After the group, so a second, malformed group reports its own error
                    // first, as it always has.
                    if have_entries {
                        return Err(Error::DuplicateField { tag: f.tag });
                    }
                    have_entries = true;
                }
                _ => {}
            }
        }
        let missing = |tag| Error::MissingField {
            tag,
            msg_type: msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH,
        };
        let symbol = symbol.ok_or_else(|| missing(tags::SYMBOL))?;
        if !have_entries {
            return Err(missing(tags::NO_MD_ENTRIES));
        }
        Ok((md_req_id, symbol))
    }
}

/// The NoMDEntries group: an entry starts at each MDEntryType (269) and the group ends at a
/// top-level field of the W (262, 55, 268) or at the end of the body.
#[inline(always)]
fn read_entries<'a>(
    sc: &mut Scanner<'a>,
    text: &Text<'a>,
    count_tag: u32,
    declared: usize,
    entries: &mut Vec<SnapshotEntry<'a>>,
) -> Result<()> {
    let bad_group = |reason| Error::BadGroup { count_tag, reason };
    let mut seen = 0usize;
    let entry = |entry_type| SnapshotEntry {
        entry_type,
        px: None,
        size: None,
        date: None,
        time: None,
    };
    // The entry being read is a local, pushed when the next one starts or the group ends:
    // filled in place inside the vector, every field was a store and a reload through memory.
    let mut cur = entry(MdEntryType::Bid);
    while let Some(g) = sc.next_span()? {
        if g.tag == tags::MD_ENTRY_TYPE {
            seen += 1;
            if seen > declared {
                return Err(bad_group("more entries than NumInGroup"));
            }
            let t = MdEntryType::from_byte(one_char(g.tag, text.bytes(&g))?)?;
            let done = std::mem::replace(&mut cur, entry(t));
            if seen > 1 {
                entries.push(done);
            }
            continue;
        }
        if matches!(g.tag, tags::MD_REQ_ID | tags::SYMBOL | tags::NO_MD_ENTRIES) {
            sc.rewind(g.start);
            break;
        }
        if seen == 0 {
            return Err(bad_group(
                "entry does not start with the group's first field",
            ));
        }
        let e = &mut cur;
        match g.tag {
            tags::MD_ENTRY_PX => {
                let px = Decimal::for_tag(g.tag, text.value(&g)?)?;
                set_once_tag(&mut e.px, g.tag, px)?
            }
            tags::MD_ENTRY_SIZE => {
                let sz = Decimal::for_tag(g.tag, text.value(&g)?)?;
                set_once_tag(&mut e.size, g.tag, sz)?
            }
            tags::MD_ENTRY_DATE => {
                let d = check_utc_date(g.tag, text.value(&g)?)?;
                set_once_tag(&mut e.date, g.tag, d)?
            }
            tags::MD_ENTRY_TIME => {
                let t = check_utc_time(g.tag, text.value(&g)?)?;
                set_once_tag(&mut e.time, g.tag, t)?
            }
            _ => {}
        }
    }
    if seen > 0 {
        entries.push(cur);
    }
    if seen != declared {
        return Err(bad_group("fewer entries than NumInGroup"));
    }
    Ok(())
}

impl AppMessage for MarketDataSnapshotFullRefresh<'_> {
    fn msg_type(&self) -> &str {
        msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH
    }

    fn write_body(&self, w: &mut FieldWriter<'_>) -> Result<()> {
        if let Some(id) = self.md_req_id {
            w.str(tags::MD_REQ_ID, id)?;
        }
        w.str(tags::SYMBOL, self.symbol)?;
        w.uint(tags::NO_MD_ENTRIES, self.entries.len() as u64);
        for e in &self.entries {
            w.char(tags::MD_ENTRY_TYPE, e.entry_type.as_byte())?;
            if let Some(px) = e.px {
                w.str(tags::MD_ENTRY_PX, px.as_str())?;
            }
            if let Some(sz) = e.size {
                w.str(tags::MD_ENTRY_SIZE, sz.as_str())?;
            }
            if let Some(d) = e.date {
                w.str(tags::MD_ENTRY_DATE, d)?;
            }
            if let Some(t) = e.time {
                w.str(tags::MD_ENTRY_TIME, t)?;
            }
        }
        Ok(())
    }
}
