//! MarketDataSnapshotFullRefresh (W).

use super::{check_type, group, set_once, utc_date, utc_time, MdEntryType};
use crate::decimal::Decimal;
use crate::encode::{AppMessage, FieldWriter};
use crate::error::{Error, Result};
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

fn top_level(tag: u32) -> bool {
    matches!(tag, tags::MD_REQ_ID | tags::SYMBOL | tags::NO_MD_ENTRIES)
}

impl<'a> MarketDataSnapshotFullRefresh<'a> {
    /// Decodes from a parsed message of type W.
    pub fn decode(raw: &RawMessage<'a>) -> Result<Self> {
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
                    let mut v: Vec<SnapshotEntry<'a>> =
                        Vec::with_capacity(group::capacity_hint(&f));
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
