//! Channel patterns: `quotes.*` (one segment), `chat.>` (one or more trailing segments),
//! `*.EURUSD`. The MQTT edge maps `+` to `*` and `#` to `>`.

use crate::{Channel, ModelError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Exact(String),
    One,
    Rest,
}

/// A parsed channel pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segs: Vec<Seg>,
}

impl Pattern {
    /// Parses `a.*.c` / `a.>`; `>` only last; at least two segments (namespace and name).
    pub fn parse(s: &str) -> Result<Pattern, ModelError> {
        let bad = |why: &str| ModelError::BadPattern {
            pattern: s.to_string(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() < 2 {
            return Err(bad("needs a namespace and a name, e.g. quotes.*"));
        }
        let mut segs = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            segs.push(match *p {
                "*" => Seg::One,
                ">" if i + 1 == parts.len() => Seg::Rest,
                ">" => return Err(bad("`>` may only be the last segment")),
                "" => return Err(bad("empty segment")),
                p if p.contains(['*', '>']) => return Err(bad("wildcards must be whole segments")),
                p => {
                    // Validates the characters the same way channel names are validated.
                    Channel::parse(&format!("x.{p}")).map_err(|e| bad(&e.to_string()))?;
                    Seg::Exact(p.to_string())
                }
            });
        }
        Ok(Pattern {
            text: s.to_string(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The namespace, when the pattern fixes it.
    pub fn namespace(&self) -> Option<&str> {
        match self.segs.first() {
            Some(Seg::Exact(n)) => Some(n),
            _ => None,
        }
    }

    pub fn matches(&self, channel: &Channel) -> bool {
        let mut parts = channel.as_str().split('.');
        for seg in &self.segs {
            match seg {
                Seg::Rest => return parts.next().is_some(),
                Seg::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Seg::Exact(e) => {
                    if parts.next() != Some(e.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, c: &str) -> bool {
        Pattern::parse(p)
            .unwrap()
            .matches(&Channel::parse(c).unwrap())
    }

    #[test]
    fn matching() {
        assert!(m("quotes.*", "quotes.EURUSD"));
        assert!(!m("quotes.*", "quotes.EURUSD.x"));
        assert!(!m("quotes.*", "chat.x"));
        assert!(m("chat.>", "chat.a"));
        assert!(m("chat.>", "chat.a.b.c"));
        assert!(m("*.EURUSD", "quotes.EURUSD"));
        assert!(m("*.EURUSD", "trades.EURUSD"));
        assert!(!m("*.EURUSD", "trades.GBPUSD"));
        assert!(m("candles.EURUSD.*", "candles.EURUSD.1m"));
        assert!(m("quotes.EURUSD", "quotes.EURUSD"));
        for bad in [
            "quotes",
            "quotes.>.x",
            "quotes.a*",
            "quotes..x",
            "quotes.a b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Pattern::parse("chat.>").unwrap().namespace(), Some("chat"));
        assert_eq!(Pattern::parse("*.x").unwrap().namespace(), None);
    }
}
