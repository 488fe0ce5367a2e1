//! MarketDataRequestReject (Y).

use super::{check_type, set_once, MdReqRejReason};
use crate::encode::{AppMessage, FieldWriter};
use crate::error::{Error, Result};
use crate::tags::{self, msg_type};
use crate::RawMessage;

/// MarketDataRequestReject (Y): a MarketDataRequest was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketDataRequestReject<'a> {
    /// MDReqID (262) of the refused request.
    pub md_req_id: &'a str,
    /// MDReqRejReason (281).
    pub reason: Option<MdReqRejReason>,
    /// Text (58).
    pub text: Option<&'a str>,
}

impl<'a> MarketDataRequestReject<'a> {
    /// Decodes from a parsed message of type Y.
    pub fn decode(raw: &RawMessage<'a>) -> Result<Self> {
        check_type(raw, msg_type::MARKET_DATA_REQUEST_REJECT)?;
        let (mut id, mut reason, mut text) = (None, None, None);
        for f in raw.body_fields() {
            let f = f?;
            match f.tag {
                tags::MD_REQ_ID => set_once(&mut id, &f, f.as_str()?)?,
                tags::MD_REQ_REJ_REASON => {
                    set_once(&mut reason, &f, MdReqRejReason::from_field(&f)?)?
                }
                tags::TEXT => set_once(&mut text, &f, f.as_str()?)?,
                _ => {}
            }
        }
        Ok(MarketDataRequestReject {
            md_req_id: id.ok_or(Error::MissingField {
                tag: tags::MD_REQ_ID,
                msg_type: msg_type::MARKET_DATA_REQUEST_REJECT,
            })?,
            reason,
            text,
        })
    }
}

impl AppMessage for MarketDataRequestReject<'_> {
    fn msg_type(&self) -> &str {
        msg_type::MARKET_DATA_REQUEST_REJECT
    }

    fn write_body(&self, w: &mut FieldWriter<'_>) -> Result<()> {
        w.str(tags::MD_REQ_ID, self.md_req_id)?;
        if let Some(r) = self.reason {
            w.char(tags::MD_REQ_REJ_REASON, r.as_byte())?;
        }
        if let Some(t) = self.text {
            w.str(tags::TEXT, t)?;
        }
        Ok(())
    }
}
