//! Topic names and topic filters (spec 4.7): validation, matching and shared subscriptions.
//!
//! All functions work on `&str` levels split at `/` and never allocate.

use crate::error::Error;

/// Longest topic the 16-bit string length can carry.
const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Prefix of an MQTT 5 shared subscription (`$share/{group}/{filter}`).
pub const SHARED_PREFIX: &str = "$share/";

/// Checks a topic name used in PUBLISH or a Will: non-empty, no wildcards, no U+0000.
pub fn validate_topic_name(topic: &str) -> Result<(), Error> {
    let reason = if topic.is_empty() {
        "empty" // [MQTT-4.7.3-1]
    } else if topic.len() > MAX_TOPIC_LEN {
        "longer than 65535 bytes"
    } else if topic.contains(['+', '#']) {
        "contains a wildcard" // [MQTT-3.3.2-2]
    } else if topic.contains('\0') {
        "contains U+0000"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTopicName { reason })
}

/// Checks a topic filter used in SUBSCRIBE / UNSUBSCRIBE.
///
/// `#` must be a whole level and the last one, `+` must be a whole level [MQTT-4.7.1-1/2];
/// a `$share/` filter must name a non-empty group without wildcards and a valid filter.
pub fn validate_topic_filter(filter: &str) -> Result<(), Error> {
    let invalid = |reason| Err(Error::InvalidTopicFilter { reason });
    if filter.is_empty() {
        return invalid("empty");
    }
    if filter.len() > MAX_TOPIC_LEN {
        return invalid("longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return invalid("contains U+0000");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return invalid("'#' is not the last level"),
            "#" | "+" => {}
            _ if level.contains('#') => return invalid("'#' is not a whole level"),
            _ if level.contains('+') => return invalid("'+' is not a whole level"),
            _ => {}
        }
    }
    parse_shared(filter).map(|_| ())
}

/// A shared subscription split into its group and the filter it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSubscription<'a> {
    /// Share name; messages are spread across the group's sessions.
    pub group: &'a str,
    /// The topic filter proper.
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}`; `Ok(None)` for an ordinary filter.
pub fn parse_shared(filter: &str) -> Result<Option<SharedSubscription<'_>>, Error> {
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        return Ok(None);
    };
    let invalid = |reason| Err(Error::InvalidTopicFilter { reason });
    let Some((group, filter)) = rest.split_once('/') else {
        return invalid("shared subscription without a topic filter");
    };
    if group.is_empty() {
        return invalid("shared subscription with an empty share name");
    }
    if group.contains(['+', '#']) {
        return invalid("share name contains a wildcard"); // [MQTT-4.8.2-2]
    }
    if filter.is_empty() {
        return invalid("shared subscription without a topic filter");
    }
    Ok(Some(SharedSubscription { group, filter }))
}

/// True if the filter contains `+` or `#`.
pub fn has_wildcards(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// True if `topic` matches `filter`. Both are assumed valid; a shared subscription must be
/// matched with its inner filter ([`SharedSubscription::filter`]).
///
/// `#` also matches the parent level (`sport/#` matches `sport`), `+` matches exactly one
/// (possibly empty) level, and topics starting with `$` are not matched by a filter starting
/// with a wildcard [MQTT-4.7.2-1], so `#` does not deliver `$SYS/...`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
