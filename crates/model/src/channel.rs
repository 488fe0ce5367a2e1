use std::{collections::HashMap, fmt, hash::BuildHasherDefault, sync::Arc};

use crate::ModelError;

/// Longest channel name accepted, in bytes. Names are keys in the log and in every push.
pub const MAX_CHANNEL_LEN: usize = 200;

/// A validated channel name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

/// Lets a set of channels be searched with a plain name ([`Channel::parse_cached`]).
/// Consistent with `Eq` and `Hash`, which both see the name's text.
impl std::borrow::Borrow<str> for Channel {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Names remembered per thread by [`Channel::parse_cached`] before the cache starts over.
const CACHE_MAX: usize = 8192;

/// foldhash, not SipHash: one lookup per published item, of a short name; its per-process
/// random seed keeps precomputed collisions out.
type RecentSet = std::collections::HashSet<Channel, foldhash::fast::RandomState>;

thread_local! {
    static RECENT: std::cell::RefCell<RecentSet> = std::cell::RefCell::new(RecentSet::default());
}

impl Channel {
    /// [`Channel::parse`] through a small per-thread set of recently seen channels. Publishers
    /// repeat the same few thousand names at high rates; a known one costs a hash lookup and a
    /// reference count instead of validation, an allocation here and a free on the writer
    /// thread (cross-thread frees were a visible share of ingest CPU). Bounded: the set starts
    /// over when full, so at worst it is a plain `parse`.
    pub fn parse_cached(name: &str) -> Result<Channel, ModelError> {
        let hit = RECENT.with(|r| r.try_borrow().ok().and_then(|r| r.get(name).cloned()));
        if let Some(c) = hit {
            return Ok(c);
        }
        let c = Channel::parse(name)?;
        RECENT.with(|r| {
            if let Ok(mut r) = r.try_borrow_mut() {
                if r.len() >= CACHE_MAX {
                    r.clear();
                }
                r.insert(c.clone());
            }
        });
        Ok(c)
    }

    /// Identity of this name's shared allocation: equal for clones of one `Channel`, and
    /// unique among live allocations. For caches keyed by identity that keep a clone alive
    /// (so the address cannot be reused for another name while cached).
    pub fn alloc_id(&self) -> usize {
        Arc::as_ptr(&self.0).cast::<u8>() as usize
    }

    /// Validates `name`: `<namespace>.<rest>`, ASCII letters, digits and `_ - . : @ =`,
    /// no empty segment. The character set is what MQTT topics, URLs and FIX symbols can all
    /// carry without escaping.
    pub fn parse(name: &str) -> Result<Channel, ModelError> {
        if name.is_empty() {
            return Err(ModelError::EmptyChannel);
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ModelError::ChannelTooLong {
                len: name.len(),
                max: MAX_CHANNEL_LEN,
            });
        }
        if let Some(c) = name.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '='))
        }) {
            return Err(ModelError::BadChannelChar {
                channel: name.to_string(),
                what: format!("the character {c:?}"),
            });
        }
        if !name.contains('.') {
            return Err(ModelError::NoNamespace {
                channel: name.to_string(),
            });
        }
        if name.split('.').any(str::is_empty) {
            return Err(ModelError::BadChannelChar {
                channel: name.to_string(),
                what: "an empty segment".to_string(),
            });
        }
        Ok(Channel(Arc::from(name)))
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment, which selects the namespace configuration.
    pub fn namespace(&self) -> &str {
        // A byte search, not `split('.')`: the publish path asks this once per item, and the
        // char searcher's memchr call cost more than the lookup it serves (~1.5 % of server
        // CPU under JSON ingest). `.` is ASCII, so its index is a char boundary.
        let end = self
            .0
            .bytes()
            .position(|b| b == b'.')
            .unwrap_or(self.0.len());
        self.0.get(..end).unwrap_or_default()
    }

    /// Everything after the namespace (`EURUSD` for `quotes.EURUSD`).
    pub fn name(&self) -> &str {
        self.0.split_once('.').map(|(_, n)| n).unwrap_or_default()
    }
}

/// Multiplicative hash of a pointer-sized key (Fibonacci hashing); the low bits of an address
/// are alignment zeros, so the high half of the product is kept. For maps keyed by an
/// allocation's address ([`Channel::alloc_id`], a node's pointer): no name is hashed or
/// compared per lookup.
#[derive(Default)]
pub struct AddrHash(u64);

impl std::hash::Hasher for AddrHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `usize` keys are hashed here; fold anything else in bytewise all the same.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(32);
    }
}

/// A map from a channel's allocation ([`Channel::alloc_id`]) to a value, holding a clone of
/// the channel beside it so the address cannot be reused for another name while cached. Fed
/// by [`Channel::parse_cached`], which hands out the same allocation for a name over and
/// over; a second allocation of the same name is simply a second entry.
pub type ByAlloc<V> = HashMap<usize, (Channel, V), BuildHasherDefault<AddrHash>>;

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({})", &self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_cached_agrees_with_parse_and_stays_bounded() {
        use super::*;
        for name in [
            "quotes.EURUSD",
            "quotes.EURUSD",
            "chat.a.b",
            "bad",
            "",
            "a..b",
            "x.y z",
        ] {
            assert_eq!(Channel::parse_cached(name), Channel::parse(name), "{name}");
        }
        for i in 0..CACHE_MAX + 10 {
            let name = format!("quotes.S{i}");
            assert_eq!(Channel::parse_cached(&name).unwrap().as_str(), name);
        }
        assert!(RECENT.with(|r| r.borrow().len()) <= CACHE_MAX);
    }

    use super::*;

    #[test]
    fn accepts_common_names() {
        for n in [
            "quotes.EURUSD",
            "chat.lobby",
            "user.42",
            "candles.EURUSD.1m",
            "book.BTC-USD",
            "user.a@b.com",
        ] {
            let c = Channel::parse(n).unwrap();
            assert_eq!(c.as_str(), n);
        }
        let c = Channel::parse("candles.EURUSD.1m").unwrap();
        assert_eq!(c.namespace(), "candles");
        assert_eq!(c.name(), "EURUSD.1m");
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(Channel::parse(""), Err(ModelError::EmptyChannel));
        assert!(matches!(
            Channel::parse("lobby"),
            Err(ModelError::NoNamespace { .. })
        ));
        assert!(matches!(
            Channel::parse("chat..x"),
            Err(ModelError::BadChannelChar { .. })
        ));
        assert!(matches!(
            Channel::parse("chat.x."),
            Err(ModelError::BadChannelChar { .. })
        ));
        assert!(matches!(
            Channel::parse("chat.a b"),
            Err(ModelError::BadChannelChar { .. })
        ));
        assert!(matches!(
            Channel::parse("chat/lobby"),
            Err(ModelError::BadChannelChar { .. })
        ));
        assert!(matches!(
            Channel::parse("chat.é"),
            Err(ModelError::BadChannelChar { .. })
        ));
        let long = format!("chat.{}", "x".repeat(MAX_CHANNEL_LEN));
        assert!(matches!(
            Channel::parse(&long),
            Err(ModelError::ChannelTooLong { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = Channel::parse(&s);
        }
    }
}
