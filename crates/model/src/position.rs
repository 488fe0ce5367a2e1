//! Where a message sits: an offset in its namespace's stream, and the stream's epoch.
//!
//! Offsets restart at 0 when a namespace's stream is recreated (a wiped data directory, a
//! JetStream stream deleted and made again). The epoch names one incarnation of a stream, so a
//! client that kept "offset 42" can tell whether it is offset 42 of the stream it read or of a
//! new one (the same idea as Centrifugo's `StreamPosition{Offset, Epoch}`).

use std::fmt;

use crate::Offset;

/// One incarnation of a namespace's stream: chosen at random when the stream is created and
/// kept with it. Shown to clients as 16 lowercase hex digits (a string, so JavaScript keeps
/// every bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Parses the 16-hex-digit form (any case); `None` otherwise.
    pub fn parse(s: &str) -> Option<Epoch> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A position in a namespace's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPos {
    pub epoch: Epoch,
    pub offset: Offset,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_text_round_trips() {
        for v in [0u64, 1, 0xdead_beef, u64::MAX] {
            let e = Epoch(v);
            assert_eq!(e.to_string().len(), 16);
            assert_eq!(Epoch::parse(&e.to_string()), Some(e));
        }
        assert_eq!(Epoch::parse("00000000000000FF"), Some(Epoch(255)));
        for bad in ["", "x", "12345678901234567", "-1", "0x10"] {
            assert_eq!(Epoch::parse(bad), None, "{bad}");
        }
    }
}
