//! MarketDataIncrementalRefresh (X).

use super::{check_type, group, set_once, utc_date, utc_time, MdEntryType, MdUpdateAction};
use crate::decimal::Decimal;
use crate::encode::{AppMessage, FieldWriter};
use crate::error::{Error, Result};
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

fn top_level(tag: u32) -> bool {
    matches!(tag, tags::MD_REQ_ID | tags::NO_MD_ENTRIES)
}

impl<'a> MarketDataIncrementalRefresh<'a> {
    /// Decodes from a parsed message of type X.
    pub fn decode(raw: &RawMessage<'a>) -> Result<Self> {
        check_type(raw, msg_type::MARKET_DATA_INCREMENTAL_REFRESH)?;
        let mut md_req_id = None;
        let mut entries: Option<Vec<IncrementalEntry<'a>>> = None;
        let mut it = raw.body_fields();
        while let Some(f) = it.next() {
            let f = f?;
            match f.tag {
                tags::MD_REQ_ID => set_once(&mut md_req_id, &f, f.as_str()?)?,
                tags::NO_MD_ENTRIES => {
                    let mut v: Vec<IncrementalEntry<'a>> =
                        Vec::with_capacity(group::capacity_hint(&f));
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
