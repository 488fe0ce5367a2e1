//! FIX 4.4 market-data messages: V, W, X, Y as typed structs borrowing the wire bytes.
//!
//! Decoding is tolerant of body fields these structs do not model (a provider may add Currency,
//! NumberOfOrders, ...) and strict about the ones they do: wrong enumerations, bad decimals,
//! duplicate tags and NumInGroup counts that do not match are errors.

mod enums;
mod group;
mod incremental;
mod reject;
mod request;
mod snapshot;

pub use enums::{
    MdEntryType, MdReqRejReason, MdUpdateAction, MdUpdateType, SubscriptionRequestType,
};
pub use incremental::{IncrementalEntry, MarketDataIncrementalRefresh};
pub use reject::MarketDataRequestReject;
pub use request::MarketDataRequest;
pub use snapshot::{MarketDataSnapshotFullRefresh, SnapshotEntry};

use crate::error::{Error, Result};
use crate::field::Field;

pub(crate) fn check_type(raw: &crate::RawMessage<'_>, expected: &'static str) -> Result<()> {
    if raw.msg_type() == expected {
        Ok(())
    } else {
        Err(Error::WrongMsgType {
            expected,
            actual: raw.msg_type().to_owned(),
        })
    }
}

/// Sets an optional slot once; a second occurrence of the tag is an error.
pub(crate) fn set_once<T>(slot: &mut Option<T>, f: &Field<'_>, v: T) -> Result<()> {
    if slot.is_some() {
        return Err(Error::DuplicateField { tag: f.tag });
    }
    *slot = Some(v);
    Ok(())
}

/// MDEntryDate (272): UTCDateOnly `YYYYMMDD`.
pub(crate) fn utc_date<'a>(f: &Field<'a>) -> Result<&'a str> {
    let s = f.as_str()?;
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s)
    } else {
        Err(Error::InvalidValue {
            tag: f.tag,
            reason: "not a UTCDateOnly YYYYMMDD",
        })
    }
}

/// MDEntryTime (273): UTCTimeOnly `HH:MM:SS[.sss]`.
pub(crate) fn utc_time<'a>(f: &Field<'a>) -> Result<&'a str> {
    let s = f.as_str()?;
    if valid_utc_time(s.as_bytes()) {
        Ok(s)
    } else {
        Err(Error::InvalidValue {
            tag: f.tag,
            reason: "not a UTCTimeOnly HH:MM:SS[.sss]",
        })
    }
}

fn valid_utc_time(b: &[u8]) -> bool {
    let d = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 8
        && b[2] == b':'
        && b[5] == b':'
        && d(0..2)
        && d(3..5)
        && d(6..8)
        && (b.len() == 8 || (b[8] == b'.' && b.len() > 9 && b.len() <= 18 && d(9..b.len())))
}
