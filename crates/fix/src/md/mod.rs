//! FIX 4.4 market-data messages: V, W, X, Y as typed structs borrowing the wire bytes.
//!
//! Decoding is tolerant of body fields these structs do not model (a provider may add Currency,
//! NumberOfOrders, ...) and strict about the ones they do: wrong enumerations, bad decimals,
//! duplicate tags and NumInGroup counts that do not match are errors.

mod enums;
mod group;
mod incremental;
#[cfg(test)]
mod reference;
mod reject;
mod request;
mod snapshot;

pub use enums::{
    MdEntryType, MdReqRejReason, MdUpdateAction, MdUpdateType, SubscriptionRequestType,
};
pub use incremental::{recycle_entries, IncrementalEntry, MarketDataIncrementalRefresh};
pub use reject::MarketDataRequestReject;
pub use request::MarketDataRequest;
pub use snapshot::{MarketDataSnapshotFullRefresh, SnapshotEntry};

use crate::error::{Error, Result};
use crate::field::Field;

// Inlined, with the error (which allocates) kept out of line: as one function it was a call
// of its own on every decode, 1-3 % of an X.
#[inline]
pub(crate) fn check_type(raw: &crate::RawMessage<'_>, expected: &'static str) -> Result<()> {
    // Bytes, not text: the header was validated at parse time. A loop instead of slice `==`,
    // which calls memcmp, costly for one or two bytes.
    let (got, want) = (raw.msg_type_bytes(), expected.as_bytes());
    if got.len() == want.len() && got.iter().zip(want).all(|(a, b)| a == b) {
        Ok(())
    } else {
        Err(wrong_type(raw, expected))
    }
}

#[cold]
#[inline(never)]
fn wrong_type(raw: &crate::RawMessage<'_>, expected: &'static str) -> Error {
    Error::WrongMsgType {
        expected,
        actual: raw.msg_type().to_owned(),
    }
}

/// Sets an optional slot once; a second occurrence of the tag is an error.
pub(crate) fn set_once<T>(slot: &mut Option<T>, f: &Field<'_>, v: T) -> Result<()> {
    set_once_tag(slot, f.tag, v)
}

/// Sets an optional slot once, for the span-based decoders.
#[inline]
pub(crate) fn set_once_tag<T>(slot: &mut Option<T>, tag: u32, v: T) -> Result<()> {
    if slot.is_some() {
        return Err(Error::DuplicateField { tag });
    }
    *slot = Some(v);
    Ok(())
}

/// A FIX char value (one byte).
#[inline]
pub(crate) fn one_char(tag: u32, v: &[u8]) -> Result<u8> {
    match v {
        [c] => Ok(*c),
        _ => Err(Error::InvalidValue {
            tag,
            reason: "expected a single character",
        }),
    }
}

/// NumInGroup as a count; like [`Field::as_u64`].
pub(crate) fn num_in_group(tag: u32, v: &[u8]) -> Result<usize> {
    let n = crate::field::parse_u64(v)
        .ok_or_else(|| crate::field::invalid(tag, "not an unsigned integer"))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// MDEntryDate (272): UTCDateOnly `YYYYMMDD`.
pub(crate) fn check_utc_date(tag: u32, s: &str) -> Result<&str> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s)
    } else {
        Err(Error::InvalidValue {
            tag,
            reason: "not a UTCDateOnly YYYYMMDD",
        })
    }
}

/// MDEntryTime (273): UTCTimeOnly `HH:MM:SS[.sss]`.
pub(crate) fn check_utc_time(tag: u32, s: &str) -> Result<&str> {
    if valid_utc_time(s.as_bytes()) {
        Ok(s)
    } else {
        Err(Error::InvalidValue {
            tag,
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
