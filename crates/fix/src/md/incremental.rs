//! MarketDataIncrementalRefresh (X).

use super::{
    check_type, check_utc_date, check_utc_time, num_in_group, one_char, set_once_tag, MdEntryType,
    MdUpdateAction,
};
use crate::decimal::Decimal;
use crate::encode::{AppMessage, FieldWriter};
use crate::error::{Error, Result};
use crate::field::{Scanner, Text};
use crate::tags::{self, msg_type};
use crate::RawMessage;

/// MarketDataIncrementalRefresh (X): changes to one or more instruments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketDataIncrementalRefresh<'a> {
    /// MDReqID (262) of the subscription, if any.
    pub md_req_id: Option<&'a str>,
    /// NoMDEntries (268).
    pub entries: Vec<IncrementalEntry<'a>>,
}

/// One NoMDEntries (268) entry of an X.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalEntry<'a> {
    /// MDUpdateAction (279).
    pub update_action: MdUpdateAction,
    /// MDEntryType (269); FIX 4.4 makes it conditional (required for New).
    pub entry_type: Option<MdEntryType>,
    /// MDEntryID (278).
    pub entry_id: Option<&'a str>,
    /// Symbol (55); optional in FIX 4.4 (e.g. a Delete by MDEntryID).
    pub symbol: Option<&'a str>,
    /// MDEntryPx (270).
    pub px: Option<Decimal<'a>>,
    /// MDEntrySize (271).
    pub size: Option<Decimal<'a>>,
    /// MDEntryDate (272), `YYYYMMDD`.
    pub date: Option<&'a str>,
    /// MDEntryTime (273), `HH:MM:SS[.sss]`.
    pub time: Option<&'a str>,
}

impl<'a> IncrementalEntry<'a> {
    /// An entry with only the update action set.
    pub fn new(update_action: MdUpdateAction) -> Self {
        IncrementalEntry {
            update_action,
            entry_type: None,
            entry_id: None,
            symbol: None,
            px: None,
            size: None,
            date: None,
            time: None,
        }
    }
}

impl<'a> MarketDataIncrementalRefresh<'a> {
    /// Decodes from a parsed message of type X.
    pub fn decode(raw: &RawMessage<'a>) -> Result<Self> {
        let mut entries = Vec::new();
        let md_req_id = Self::decode_into(raw, &mut entries)?;
        Ok(MarketDataIncrementalRefresh { md_req_id, entries })
    }

    /// Decodes the entries of an X into `entries` (cleared first, so its allocation is reused
    /// from message to message) and returns MDReqID (262). On error `entries` holds whatever
    /// was decoded before the fault. Same checks and errors as [`Self::decode`].
    ///
    /// To reuse one vector for messages of different lifetimes, pass it through
    /// [`recycle_entries`] between them.
    pub fn decode_into(
        raw: &RawMessage<'a>,
        entries: &mut Vec<IncrementalEntry<'a>>,
    ) -> Result<Option<&'a str>> {
        entries.clear();
        check_type(raw, msg_type::MARKET_DATA_INCREMENTAL_REFRESH)?;
        let (mut sc, text) = raw.body_scan();
        let mut md_req_id = None;
        let mut have_entries = false;
        while let Some(f) = sc.next_span()? {
            match f.tag {
                tags::MD_REQ_ID => set_once_tag(&mut md_req_id, f.tag, text.value(&f)?)?,
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
        if !have_entries {
            return Err(Error::MissingField {
                tag: tags::NO_MD_ENTRIES,
                msg_type: msg_type::MARKET_DATA_INCREMENTAL_REFRESH,
            });
        }
        Ok(md_req_id)
    }
}

/// An emptied `entries` whose allocation can hold entries of another message: what lets one
/// vector serve [`MarketDataIncrementalRefresh::decode_into`] for a stream of messages, each
/// borrowed for its own lifetime.
pub fn recycle_entries<'b>(mut entries: Vec<IncrementalEntry<'_>>) -> Vec<IncrementalEntry<'b>> {
    entries.clear();
    // An empty vector collected into a type of the same layout keeps its buffer (std's in-place
    // collection); no element is ever produced. `filter_map` because it may change the item
    // type (here: its lifetime), which `filter` cannot.
    #[allow(clippy::unnecessary_filter_map)]
    entries.into_iter().filter_map(|_| None).collect()
}

/// The NoMDEntries group: an entry starts at each MDUpdateAction (279) and the group ends at
/// a top-level field of the X (262, 268) or at the end of the body.
#[inline(always)]
fn read_entries<'a>(
    sc: &mut Scanner<'a>,
    text: &Text<'a>,
    count_tag: u32,
    declared: usize,
    entries: &mut Vec<IncrementalEntry<'a>>,
) -> Result<()> {
    let bad_group = |reason| Error::BadGroup { count_tag, reason };
    let mut seen = 0usize;
    // The entry being read is a local, pushed when the next one starts or the group ends:
    // filled in place inside the vector, every field was a store and a reload through memory.
    let mut cur = IncrementalEntry::new(MdUpdateAction::New);
    while let Some(g) = sc.next_span()? {
        if g.tag == tags::MD_UPDATE_ACTION {
            seen += 1;
            if seen > declared {
                return Err(bad_group("more entries than NumInGroup"));
            }
            let action = MdUpdateAction::from_byte(one_char(g.tag, text.bytes(&g))?)?;
            let done = std::mem::replace(&mut cur, IncrementalEntry::new(action));
            if seen > 1 {
                entries.push(done);
            }
            continue;
        }
        if matches!(g.tag, tags::MD_REQ_ID | tags::NO_MD_ENTRIES) {
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
            tags::MD_ENTRY_TYPE => {
                let t = MdEntryType::from_byte(one_char(g.tag, text.bytes(&g))?)?;
                set_once_tag(&mut e.entry_type, g.tag, t)?
            }
            tags::MD_ENTRY_ID => set_once_tag(&mut e.entry_id, g.tag, text.value(&g)?)?,
            tags::SYMBOL => set_once_tag(&mut e.symbol, g.tag, text.value(&g)?)?,
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

impl AppMessage for MarketDataIncrementalRefresh<'_> {
    fn msg_type(&self) -> &str {
        msg_type::MARKET_DATA_INCREMENTAL_REFRESH
    }

    fn write_body(&self, w: &mut FieldWriter<'_>) -> Result<()> {
        if let Some(id) = self.md_req_id {
            w.str(tags::MD_REQ_ID, id)?;
        }
        w.uint(tags::NO_MD_ENTRIES, self.entries.len() as u64);
        // Field order inside the entry follows the FIX 4.4 dictionary, which QuickFIX enforces.
        for e in &self.entries {
            w.char(tags::MD_UPDATE_ACTION, e.update_action.as_byte())?;
            if let Some(t) = e.entry_type {
                w.char(tags::MD_ENTRY_TYPE, t.as_byte())?;
            }
            if let Some(id) = e.entry_id {
                w.str(tags::MD_ENTRY_ID, id)?;
            }
            if let Some(s) = e.symbol {
                w.str(tags::SYMBOL, s)?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_entries_keep_their_allocation() {
        let text = String::from("b1");
        let mut v = Vec::with_capacity(16);
        v.push(IncrementalEntry {
            entry_id: Some(text.as_str()),
            ..IncrementalEntry::new(MdUpdateAction::New)
        });
        let cap = v.capacity();
        let v: Vec<IncrementalEntry<'static>> = recycle_entries(v);
        drop(text);
        assert!(v.is_empty());
        assert_eq!(v.capacity(), cap);
    }
}
