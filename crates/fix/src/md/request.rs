//! MarketDataRequest (V).

use super::{check_type, group, set_once, MdEntryType, MdUpdateType, SubscriptionRequestType};
use crate::encode::{AppMessage, FieldWriter};
use crate::error::{Error, Result};
use crate::tags::{self, msg_type};
use crate::RawMessage;

/// MarketDataRequest (V): subscribe to, snapshot or unsubscribe from symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketDataRequest<'a> {
    /// MDReqID (262).
    pub md_req_id: &'a str,
    /// SubscriptionRequestType (263).
    pub subscription_request_type: SubscriptionRequestType,
    /// MarketDepth (264): 0 full book, 1 top of book, N levels.
    pub market_depth: u32,
    /// MDUpdateType (265), expected when subscribing.
    pub md_update_type: Option<MdUpdateType>,
    /// NoMDEntryTypes (267) / MDEntryType (269).
    pub entry_types: Vec<MdEntryType>,
    /// NoRelatedSym (146) / Symbol (55).
    pub symbols: Vec<&'a str>,
}

fn top_level(tag: u32) -> bool {
    matches!(
        tag,
        tags::MD_REQ_ID
            | tags::SUBSCRIPTION_REQUEST_TYPE
            | tags::MARKET_DEPTH
            | tags::MD_UPDATE_TYPE
            | tags::NO_MD_ENTRY_TYPES
            | tags::NO_RELATED_SYM
    )
}

impl<'a> MarketDataRequest<'a> {
    /// Decodes from a parsed message of type V.
    pub fn decode(raw: &RawMessage<'a>) -> Result<Self> {
        check_type(raw, msg_type::MARKET_DATA_REQUEST)?;
        let mut md_req_id = None;
        let mut sub = None;
        let mut depth = None;
        let mut update_type = None;
        let mut entry_types: Option<Vec<MdEntryType>> = None;
        let mut symbols: Option<Vec<&'a str>> = None;
        let mut it = raw.body_fields();
        while let Some(f) = it.next() {
            let f = f?;
            match f.tag {
                tags::MD_REQ_ID => set_once(&mut md_req_id, &f, f.as_str()?)?,
                tags::SUBSCRIPTION_REQUEST_TYPE => {
                    set_once(&mut sub, &f, SubscriptionRequestType::from_field(&f)?)?
                }
                tags::MARKET_DEPTH => {
                    let d = u32::try_from(f.as_u64()?).map_err(|_| Error::InvalidValue {
                        tag: f.tag,
                        reason: "MarketDepth out of range",
                    })?;
                    set_once(&mut depth, &f, d)?
                }
                tags::MD_UPDATE_TYPE => {
                    set_once(&mut update_type, &f, MdUpdateType::from_field(&f)?)?
                }
                tags::NO_MD_ENTRY_TYPES => {
                    let mut v = Vec::with_capacity(group::capacity_hint(&f));
                    group::read_group(&mut it, &f, tags::MD_ENTRY_TYPE, top_level, |_, g| {
                        if g.tag == tags::MD_ENTRY_TYPE {
                            v.push(MdEntryType::from_field(g)?);
                        }
                        Ok(())
                    })?;
                    set_once(&mut entry_types, &f, v)?
                }
                tags::NO_RELATED_SYM => {
                    let mut v = Vec::with_capacity(group::capacity_hint(&f));
                    group::read_group(&mut it, &f, tags::SYMBOL, top_level, |_, g| {
                        if g.tag == tags::SYMBOL {
                            v.push(g.as_str()?);
                        }
                        Ok(())
                    })?;
                    set_once(&mut symbols, &f, v)?
                }
                _ => {}
            }
        }
        let missing = |tag| Error::MissingField {
            tag,
            msg_type: msg_type::MARKET_DATA_REQUEST,
        };
        Ok(MarketDataRequest {
            md_req_id: md_req_id.ok_or_else(|| missing(tags::MD_REQ_ID))?,
            subscription_request_type: sub
                .ok_or_else(|| missing(tags::SUBSCRIPTION_REQUEST_TYPE))?,
            market_depth: depth.ok_or_else(|| missing(tags::MARKET_DEPTH))?,
            md_update_type: update_type,
            entry_types: entry_types.ok_or_else(|| missing(tags::NO_MD_ENTRY_TYPES))?,
            symbols: symbols.ok_or_else(|| missing(tags::NO_RELATED_SYM))?,
        })
    }
}

impl AppMessage for MarketDataRequest<'_> {
    fn msg_type(&self) -> &str {
        msg_type::MARKET_DATA_REQUEST
    }

    fn write_body(&self, w: &mut FieldWriter<'_>) -> Result<()> {
        w.str(tags::MD_REQ_ID, self.md_req_id)?;
        w.char(
            tags::SUBSCRIPTION_REQUEST_TYPE,
            self.subscription_request_type.as_byte(),
        )?;
        w.uint(tags::MARKET_DEPTH, u64::from(self.market_depth));
        if let Some(u) = self.md_update_type {
            w.char(tags::MD_UPDATE_TYPE, u.as_byte())?;
        }
        w.uint(tags::NO_MD_ENTRY_TYPES, self.entry_types.len() as u64);
        for t in &self.entry_types {
            w.char(tags::MD_ENTRY_TYPE, t.as_byte())?;
        }
        w.uint(tags::NO_RELATED_SYM, self.symbols.len() as u64);
        for s in &self.symbols {
            w.str(tags::SYMBOL, s)?;
        }
        Ok(())
    }
}
