//! `[http]`: where the HTTP listener binds and the limits that keep it answering under abuse
//! (docs/configuration.md). The server composes it; the listener (crates/server) applies the
//! connection limits, this crate the Origin and CORS rules.

use std::{net::SocketAddr, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::hardening::{parse_origin_list, OriginPolicy};

/// Default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// The `[http]` section. `http = "ADDR"` (the older form) is the same as `[http] listen = "ADDR"`
/// with every other key at its default (see [`address_or_table`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Listen address: REST, WebSocket, SSE, console.
    pub listen: SocketAddr,
    /// A request's headers must be complete this long after the server starts waiting for them
    /// (a new connection, or the previous response on a kept-alive one), milliseconds.
    pub header_timeout_ms: u64,
    /// A connection that is not a WebSocket or an event stream is closed after moving no bytes
    /// for this long while it is the client's turn (a stalled request body, a response the
    /// client does not read), milliseconds.
    pub idle_timeout_ms: u64,
    /// Connections accepted and not (yet) a WebSocket or an event stream; over it the oldest
    /// one waiting on its client is closed to make room. Lowered at start to half the process's
    /// open-file limit.
    pub max_pending_connections: usize,
    /// Origins allowed to open a WebSocket or an event stream besides the server's own;
    /// `["*"]`: any. A request without `Origin` (not a browser) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Origins whose pages may read REST and UDF answers (CORS); `["*"]`: any. Empty: no CORS
    /// headers, so browsers keep pages of other origins out.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7700))),
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_pending_connections: 4096,
            allowed_origins: Vec::new(),
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl HttpSection {
    /// Refuses settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.header_timeout_ms == 0 {
            return Err("http.header_timeout_ms must be at least 1".into());
        }
        if self.idle_timeout_ms == 0 {
            return Err("http.idle_timeout_ms must be at least 1".into());
        }
        if self.max_pending_connections == 0 {
            return Err("http.max_pending_connections must be at least 1".into());
        }
        parse_origin_list(&self.allowed_origins)
            .map_err(|e| format!("http.allowed_origins: {e}"))?;
        parse_origin_list(&self.cors_allowed_origins)
            .map_err(|e| format!("http.cors_allowed_origins: {e}"))?;
        Ok(())
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }

    /// Who may open a WebSocket or an event stream. Settings that [`HttpSection::validate`]
    /// refuses fall back to the server's own origin only.
    pub fn origin_policy(&self) -> OriginPolicy {
        OriginPolicy::new(&self.allowed_origins).unwrap_or_default()
    }
}

/// Deserializes `http` from either form: a listen address string, or an `[http]` table.
/// Unknown keys in the table are refused with their name, as everywhere else.
pub fn address_or_table<'de, D: Deserializer<'de>>(d: D) -> Result<HttpSection, D::Error> {
    struct Form;
    impl<'de> de::Visitor<'de> for Form {
        type Value = HttpSection;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a listen address such as \"127.0.0.1:7700\", or an [http] table")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<HttpSection, E> {
            let listen = v.parse().map_err(|e| {
                E::custom(format!(
                    "http: {v:?} is not a listen address like 127.0.0.1:7700: {e}"
                ))
            })?;
            Ok(HttpSection {
                listen,
                ..HttpSection::default()
            })
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<HttpSection, A::Error> {
            HttpSection::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(Form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrap {
        #[serde(deserialize_with = "address_or_table")]
        http: HttpSection,
    }

    #[test]
    fn both_forms_and_unknown_keys() {
        let w: Wrap = serde_json::from_str(r#"{"http":"0.0.0.0:80"}"#).unwrap();
        assert_eq!(w.http.listen.port(), 80);
        assert_eq!(w.http.header_timeout_ms, 10_000);
        let w: Wrap =
            serde_json::from_str(r#"{"http":{"listen":"127.0.0.1:81","idle_timeout_ms":5}}"#)
                .unwrap();
        assert_eq!(w.http.listen.port(), 81);
        assert_eq!(w.http.idle_timeout_ms, 5);
        let e = serde_json::from_str::<Wrap>(r#"{"http":{"header_timeout":5}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("header_timeout"), "{e}");
        assert!(serde_json::from_str::<Wrap>(r#"{"http":"nope"}"#).is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let mut s = HttpSection {
            allowed_origins: vec!["example.com".into()],
            ..HttpSection::default()
        };
        assert!(s.validate().unwrap_err().contains("allowed_origins"));
        s.allowed_origins = vec!["https://example.com".into(), "*".into()];
        s.cors_allowed_origins = vec!["https://charts.example.com:8443".into()];
        s.validate().unwrap();
        s.header_timeout_ms = 0;
        assert!(s.validate().unwrap_err().contains("header_timeout_ms"));
    }
}
