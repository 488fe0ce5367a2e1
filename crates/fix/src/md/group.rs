//! Repeating-group walking shared by the market-data decoders.

use crate::error::{Error, Result};
use crate::field::{Field, FieldIter};

/// Reads the entries of a repeating group whose NumInGroup field `count` was just read.
///
/// An entry starts at each `delimiter` tag (the group's first field). The group ends at the
/// first tag for which `ends_group` is true (a top-level field of the message) or at the end of
/// the body; any other tag belongs to the current entry and goes to `on_field`, which ignores
/// tags it does not model. The number of entries must equal NumInGroup.
pub(crate) fn read_group<'a>(
    it: &mut FieldIter<'a>,
    count: &Field<'a>,
    delimiter: u32,
    ends_group: impl Fn(u32) -> bool,
    mut on_field: impl FnMut(bool, &Field<'a>) -> Result<()>,
) -> Result<usize> {
    let declared = usize::try_from(count.as_u64()?).unwrap_or(usize::MAX);
    if declared == 0 {
        return Ok(0);
    }
    let mut seen = 0usize;
    while let Some(f) = it.next() {
        let f = f?;
        if ends_group(f.tag) {
            it.rewind(&f);
            break;
        }
        if f.tag == delimiter {
            seen += 1;
            if seen > declared {
                return Err(Error::BadGroup {
                    count_tag: count.tag,
                    reason: "more entries than NumInGroup",
                });
            }
            on_field(true, &f)?;
        } else if seen == 0 {
            return Err(Error::BadGroup {
                count_tag: count.tag,
                reason: "entry does not start with the group's first field",
            });
        } else {
            on_field(false, &f)?;
        }
    }
    if seen != declared {
        return Err(Error::BadGroup {
            count_tag: count.tag,
            reason: "fewer entries than NumInGroup",
        });
    }
    Ok(seen)
}

/// Keeps `Vec::with_capacity` from trusting a hostile NumInGroup.
pub(crate) fn capacity_hint(count: &Field<'_>) -> usize {
    count
        .as_u64()
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(64)
}
