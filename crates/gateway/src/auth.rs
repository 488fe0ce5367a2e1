//! Identity: who a client is, from what it presented.
//!
//! - **API keys** with scopes (`publish`, `subscribe_all`, `admin`), compared in constant time.
//! - **JWT users**: HS256/384/512 from a shared secret, RS256/ES256/EdDSA (and their siblings)
//!   from a PEM public key, a JWKS file or a JWKS URL (refreshed by `crate::jwks`); `exp`, `nbf`, `aud` and `iss` checked. Claims: `sub`
//!   (the user id), optional `channels` and `publish` (channel patterns), and `info` (opaque
//!   JSON stamped on the user's messages).
//!
//! A credential that is given but not valid is refused, never treated as anonymous, so a
//! client learns its key or token is wrong instead of silently seeing less.

use std::{path::PathBuf, sync::Arc};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tickwire_model::{Channel, Pattern};
use tickwire_wire::ErrorCode;

use crate::Refusal;

mod keys;

use keys::{jwks_keys, pem_key, VerifyKey};

/// What an API key may do beyond what any authenticated client may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Publish to any channel (the server API).
    Publish,
    /// Subscribe to and read any channel, users' private ones included.
    SubscribeAll,
    /// The operator endpoints: `/metrics`, `/v1/fix/sessions`, channel and namespace listings.
    Admin,
}

/// One configured API key (`[[auth.api_keys]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and metrics (never the key itself).
    pub name: String,
    pub key: String,
    #[serde(default = "all_scopes")]
    pub scopes: Vec<Scope>,
}

fn all_scopes() -> Vec<Scope> {
    vec![Scope::Publish, Scope::SubscribeAll, Scope::Admin]
}

/// The `[auth]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub api_keys: Vec<ApiKeyConfig>,
    /// HS256/384/512 tokens are verified with this secret (and `tickwire token` mints them).
    pub jwt_hmac_secret: Option<String>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519) that verifies tokens.
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS document (`{"keys":[...]}`) whose keys verify tokens, chosen by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// The identity provider's JWKS URL (`https://…`; `http://` only to a loopback address),
    /// fetched at start and refreshed in the background (crate::jwks).
    pub jwks_url: Option<String>,
    /// Seconds between refreshes of `jwks_url`.
    pub jwks_refresh_secs: u64,
    /// PEM CA certificates that may sign the `jwks_url` server's certificate; absent: the
    /// operating system's trust store.
    pub jwks_ca_file: Option<PathBuf>,
    /// Required `aud` (any of these), when set.
    pub jwt_audience: Vec<String>,
    /// Required `iss`, when set.
    pub jwt_issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// After a connection's token expires, how long it may send `refresh` before it is closed.
    pub token_grace_secs: u64,
    /// Serve the operator endpoints without the `admin` scope (behind a trusted network).
    pub admin_open: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            api_keys: Vec::new(),
            jwt_hmac_secret: None,
            jwt_public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_ca_file: None,
            jwt_audience: Vec::new(),
            jwt_issuer: None,
            leeway_secs: 5,
            token_grace_secs: 30,
            admin_open: false,
        }
    }
}

impl AuthConfig {
    /// Whether any identity is configured. Without one the server is in development mode:
    /// every client may read and publish everything.
    pub fn enabled(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt_enabled()
    }

    fn jwt_enabled(&self) -> bool {
        self.jwt_hmac_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }

    /// Whether a key other than the `jwks_url` ones is configured: then the server may start
    /// while the URL cannot be fetched.
    pub(crate) fn has_static_jwt_key(&self) -> bool {
        self.jwt_hmac_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwks_file.is_some()
    }
}

/// An API key's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl KeyIdentity {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A JWT user.
#[derive(Debug, Clone)]
pub struct User {
    /// The user id (`sub`): owner of `<ns>.<sub>` channels.
    pub sub: String,
    /// Patterns the token lets the user subscribe to, beyond its namespaces' rules.
    pub channels: Vec<Pattern>,
    /// Patterns the token lets the user publish to.
    pub publish: Vec<Pattern>,
    /// Opaque JSON attached to the user's messages (`from.info`).
    pub info: Option<Box<RawValue>>,
    /// Unix seconds the token expires at.
    pub exp: Option<u64>,
}

impl PartialEq for User {
    fn eq(&self, other: &Self) -> bool {
        self.sub == other.sub
            && self.channels == other.channels
            && self.publish == other.publish
            && self.info.as_ref().map(|r| r.get()) == other.info.as_ref().map(|r| r.get())
            && self.exp == other.exp
    }
}

impl Eq for User {}

impl User {
    /// The channel is the user's own: `<ns>.<sub>` or below it.
    pub fn owns(&self, channel: &Channel) -> bool {
        let name = channel.name();
        name == self.sub
            || name
                .strip_prefix(self.sub.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// The claims Tickwire reads; others are ignored.
#[derive(Debug, Deserialize, Serialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

/// Verifies credentials. Built once from the configuration.
pub(crate) struct Authenticator {
    keys: Vec<(Vec<u8>, Arc<KeyIdentity>)>,
    jwt: RwLock<Vec<VerifyKey>>,
    audience: Vec<String>,
    issuer: Option<String>,
    leeway: u64,
    /// `jwks_url` is configured: a token is verified as one even before its keys arrive.
    jwks_url: bool,
    /// Woken when a token names a key id no key has: the JWKS refresher fetches again (at
    /// most once per `jwks::UNKNOWN_KID_INTERVAL`). A permit is kept if it is not waiting,
    /// so any number of such tokens cost one fetch.
    pub(crate) unknown_kid: tokio::sync::Notify,
}

/// Why the auth configuration cannot be used.
fn config_error(what: &str, e: impl std::fmt::Display) -> String {
    format!("[auth] {what}: {e}")
}

impl Authenticator {
    pub(crate) fn new(config: &AuthConfig) -> Result<Authenticator, String> {
        let mut jwt = Vec::new();
        if let Some(secret) = &config.jwt_hmac_secret {
            if secret.len() < 32 {
                return Err(config_error(
                    "jwt_hmac_secret",
                    "use at least 32 bytes (HS256 needs a 256-bit secret)",
                ));
            }
            jwt.push(VerifyKey {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                from_url: false,
            });
        }
        if let Some(path) = &config.jwt_public_key_file {
            let pem = std::fs::read(path)
                .map_err(|e| config_error(&format!("jwt_public_key_file {}", path.display()), e))?;
            jwt.push(pem_key(&pem).ok_or_else(|| {
                config_error(
                    &format!("jwt_public_key_file {}", path.display()),
                    "not a PEM RSA, EC (P-256/P-384) or Ed25519 public key",
                )
            })?);
        }
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read(path)
                .map_err(|e| config_error(&format!("jwks_file {}", path.display()), e))?;
            jwt.extend(
                jwks_keys(&text, false)
                    .map_err(|e| config_error(&format!("jwks_file {}", path.display()), e))?,
            );
        }
        if let Some(url) = &config.jwks_url {
            crate::jwks::check_url(url).map_err(|e| config_error("jwks_url", e))?;
            if config.jwks_refresh_secs == 0 {
                return Err(config_error("jwks_refresh_secs", "must be at least 1"));
            }
        } else if config.jwks_ca_file.is_some() {
            return Err(config_error("jwks_ca_file", "is only used with jwks_url"));
        }
        Ok(Authenticator {
            keys: config
                .api_keys
                .iter()
                .map(|k| {
                    (
                        k.key.as_bytes().to_vec(),
                        Arc::new(KeyIdentity {
                            name: k.name.clone(),
                            scopes: k.scopes.clone(),
                        }),
                    )
                })
                .collect(),
            jwt: RwLock::new(jwt),
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
            leeway: config.leeway_secs,
            jwks_url: config.jwks_url.is_some(),
            unknown_kid: tokio::sync::Notify::new(),
        })
    }

    /// Replaces the keys fetched from `jwks_url` with those of `text`, a fresh JWKS document;
    /// the secret, the PEM key and `jwks_file`'s keys stay. A document that does not parse or
    /// holds no key changes nothing. Returns the key ids now in use from the URL.
    pub(crate) fn replace_jwks(&self, text: &[u8]) -> Result<Vec<String>, String> {
        let fresh = jwks_keys(text, true)?;
        if fresh.is_empty() {
            // An identity provider always publishes its current key; an empty set is a broken
            // answer, and taking it would refuse every user at once.
            return Err("the JWKS document holds no key".into());
        }
        let kids = fresh
            .iter()
            .map(|k| k.kid.clone().unwrap_or_default())
            .collect();
        let mut keys = self.jwt.write();
        keys.retain(|k| !k.from_url);
        keys.extend(fresh);
        Ok(kids)
    }

    /// The API key `presented` matches, comparing every configured key so the time taken
    /// does not say which one matched.
    pub(crate) fn api_key(&self, presented: &str) -> Option<Arc<KeyIdentity>> {
        let mut found = None;
        for (k, id) in &self.keys {
            if constant_time_eq(k, presented.as_bytes()) {
                found = Some(id.clone());
            }
        }
        found
    }

    /// Whether any JWT key is configured (or will be fetched from `jwks_url`).
    pub(crate) fn has_jwt(&self) -> bool {
        self.jwks_url || !self.jwt.read().is_empty()
    }

    /// Verifies a JWT; the user it names.
    pub(crate) fn verify(&self, token: &str) -> Result<User, Refusal> {
        let bad = |why: String| Refusal::new(ErrorCode::Unauthorized, why);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| bad(format!("the token is not a JWT: {e}")))?;
        let keys = self.jwt.read();
        // A key id no key has: the provider may have rotated its keys since the last fetch.
        let unknown_kid = header
            .kid
            .as_ref()
            .is_some_and(|want| !keys.iter().any(|k| k.kid.as_ref() == Some(want)));
        let refetch = || {
            if unknown_kid && self.jwks_url {
                self.unknown_kid.notify_one();
                " (the server is fetching its keys again: retry in a few seconds)"
            } else {
                ""
            }
        };
        let candidates: Vec<&VerifyKey> = keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(bad(format!(
                "no configured key verifies {:?} tokens{}{}",
                header.alg,
                header
                    .kid
                    .as_deref()
                    .map(|k| format!(" with kid {k:?}"))
                    .unwrap_or_default(),
                refetch()
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let mut last = None;
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => return user_of(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    if matches!(e.kind(), ErrorKind::ExpiredSignature) {
                        return Err(Refusal::new(
                            ErrorCode::TokenExpired,
                            "the token has expired",
                        ));
                    }
                    if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                        return Err(bad(format!("the token is not valid: {e}")));
                    }
                    last = Some(e);
                }
            }
        }
        Err(bad(format!(
            "the token's signature does not verify{}{}",
            last.map(|e| format!(" ({e})")).unwrap_or_default(),
            refetch()
        )))
    }
}

fn user_of(c: Claims) -> Result<User, Refusal> {
    let patterns = |list: Option<Vec<String>>, claim: &str| -> Result<Vec<Pattern>, Refusal> {
        list.unwrap_or_default()
            .iter()
            .map(|p| {
                // A plain channel name is a pattern that matches only itself.
                Pattern::parse(p).map_err(|e| {
                    Refusal::new(
                        ErrorCode::Unauthorized,
                        format!("the token's `{claim}` claim has a bad pattern: {e}"),
                    )
                })
            })
            .collect()
    };
    if c.sub.is_empty() || c.sub.contains(['.', '*', '>', '/', '+', '#']) {
        return Err(Refusal::new(
            ErrorCode::Unauthorized,
            "the token's `sub` must be a non-empty user id without `.`, `*`, `>`, `/`, `+` or `#`",
        ));
    }
    Ok(User {
        channels: patterns(c.channels, "channels")?,
        publish: patterns(c.publish, "publish")?,
        sub: c.sub,
        info: c.info,
        exp: c.exp,
    })
}

/// Mints an HS256 token (`tickwire token`, tests): `ttl_secs` from `now_secs`.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// Compares two byte strings in time that depends only on their lengths, so a wrong key's
/// answer time says nothing about how much of it matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(c: AuthConfig) -> Authenticator {
        Authenticator::new(&c).unwrap()
    }

    fn hmac() -> AuthConfig {
        AuthConfig {
            jwt_hmac_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }
    }

    fn now() -> u64 {
        tickwire_model::clock::now_nanos() / 1_000_000_000
    }

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp: Some(exp),
            channels: Some(vec!["signals.*".into()]),
            publish: None,
            info: Some(RawValue::from_string(r#"{"name":"Ann"}"#.into()).unwrap()),
        }
    }

    #[test]
    fn hmac_tokens_verify_and_carry_their_claims() {
        let a = auth(hmac());
        let t = mint_hs256(SECRET.as_bytes(), &claims("42", now() + 60)).unwrap();
        let u = a.verify(&t).unwrap();
        assert_eq!(u.sub, "42");
        assert_eq!(u.channels[0].as_str(), "signals.*");
        assert_eq!(u.info.as_ref().unwrap().get(), r#"{"name":"Ann"}"#);
        assert!(u.owns(&Channel::parse("user.42").unwrap()));
        assert!(u.owns(&Channel::parse("user.42.inbox").unwrap()));
        assert!(!u.owns(&Channel::parse("user.421").unwrap()));
    }

    #[test]
    fn expired_wrongly_signed_and_malformed_tokens_are_refused() {
        let a = auth(hmac());
        let t = mint_hs256(SECRET.as_bytes(), &claims("42", now() - 3600)).unwrap();
        assert_eq!(a.verify(&t).unwrap_err().code, ErrorCode::TokenExpired);
        let t = mint_hs256(
            b"another secret of at least 32 bytes!",
            &claims("42", now() + 60),
        )
        .unwrap();
        let e = a.verify(&t).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.reason.contains("signature"), "{}", e.reason);
        assert_eq!(a.verify("nope").unwrap_err().code, ErrorCode::Unauthorized);
        let no_exp = Claims {
            exp: None,
            ..claims("42", 0)
        };
        let t = mint_hs256(SECRET.as_bytes(), &no_exp).unwrap();
        assert_eq!(a.verify(&t).unwrap_err().code, ErrorCode::Unauthorized);
        let dotted = mint_hs256(SECRET.as_bytes(), &claims("4.2", now() + 60)).unwrap();
        assert_eq!(a.verify(&dotted).unwrap_err().code, ErrorCode::Unauthorized);
    }

    #[test]
    fn audience_and_issuer_are_checked() {
        let a = auth(AuthConfig {
            jwt_audience: vec!["tickwire".into()],
            jwt_issuer: Some("https://auth.example".into()),
            ..hmac()
        });
        #[derive(Serialize)]
        struct Full<'a> {
            sub: &'a str,
            exp: u64,
            aud: &'a str,
            iss: &'a str,
        }
        let sign = |aud, iss| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &Full {
                    sub: "7",
                    exp: now() + 60,
                    aud,
                    iss,
                },
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        assert!(a.verify(&sign("tickwire", "https://auth.example")).is_ok());
        assert!(a.verify(&sign("other", "https://auth.example")).is_err());
        assert!(a.verify(&sign("tickwire", "https://evil.example")).is_err());
    }

    #[test]
    fn short_secrets_and_bad_key_files_are_configuration_errors() {
        let short = AuthConfig {
            jwt_hmac_secret: Some("short".into()),
            ..AuthConfig::default()
        };
        assert!(Authenticator::new(&short).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "not a key").unwrap();
        let bad = AuthConfig {
            jwt_public_key_file: Some(p),
            ..AuthConfig::default()
        };
        assert!(Authenticator::new(&bad).is_err());
    }

    /// A JWKS with one HS256 key: `kid`, the secret `base64url(secret)`.
    fn oct_jwks(kid: &str, k: &str) -> Vec<u8> {
        format!(r#"{{"keys":[{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{k}"}}]}}"#)
            .into_bytes()
    }
    const KEY_A: &[u8] = b"abcdefghijklmnopqrstuvwxyz012345";
    const KEY_A_B64: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU";
    const KEY_B: &[u8] = b"fedcba9876543210fedcba9876543210";
    const KEY_B_B64: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA";

    fn with_kid(kid: &str, secret: &[u8]) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            &claims("42", now() + 60),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    async fn asked_to_refetch(a: &Authenticator) -> bool {
        tokio::time::timeout(
            std::time::Duration::from_millis(20),
            a.unknown_kid.notified(),
        )
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn an_unknown_kid_asks_for_a_jwks_refresh_and_a_refresh_replaces_only_url_keys() {
        let a = auth(AuthConfig {
            jwks_url: Some("https://idp.example/jwks".into()),
            ..hmac()
        });
        assert_eq!(a.replace_jwks(&oct_jwks("a", KEY_A_B64)).unwrap(), ["a"]);
        assert!(a.verify(&with_kid("a", KEY_A)).is_ok());
        assert!(!asked_to_refetch(&a).await, "a known kid needs no fetch");
        let e = a.verify(&with_kid("b", KEY_B)).unwrap_err();
        assert!(e.reason.contains("retry"), "{}", e.reason);
        assert!(
            asked_to_refetch(&a).await,
            "an unknown kid asks for a fetch"
        );

        a.replace_jwks(&oct_jwks("b", KEY_B_B64)).unwrap();
        assert!(a.verify(&with_kid("b", KEY_B)).is_ok());
        assert!(a.verify(&with_kid("a", KEY_A)).is_err(), "a's key is gone");
        // The configured secret is not the URL's to replace.
        let t = mint_hs256(SECRET.as_bytes(), &claims("42", now() + 60)).unwrap();
        assert!(a.verify(&t).is_ok());
        // A broken or empty answer keeps the keys in use.
        assert!(a.replace_jwks(b"<html>").is_err());
        assert!(a.replace_jwks(br#"{"keys":[]}"#).is_err());
        assert!(a.verify(&with_kid("b", KEY_B)).is_ok());
    }

    #[test]
    fn encryption_keys_and_unknown_key_types_in_a_jwks_are_skipped_not_fatal() {
        let a = auth(AuthConfig {
            jwks_url: Some("https://idp.example/jwks".into()),
            ..AuthConfig::default()
        });
        // As Keycloak publishes: an RSA-OAEP encryption key beside the signing key, and a key
        // type this server does not know.
        let doc = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"enc","use":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"}},
                {{"kty":"PQC","kid":"future","x":"AAAA"}},
                {{"kty":"oct","kid":"a","alg":"HS256","k":"{KEY_A_B64}"}}]}}"#
        );
        assert_eq!(a.replace_jwks(doc.as_bytes()).unwrap(), ["a"]);
        assert!(a.verify(&with_kid("a", KEY_A)).is_ok());
        // Nothing usable at all is an error that says why, and keeps the keys in use.
        let e = a
            .replace_jwks(br#"{"keys":[{"kty":"PQC","kid":"future"}]}"#)
            .unwrap_err();
        assert!(e.contains("no usable signing key"), "{e}");
        assert!(a.verify(&with_kid("a", KEY_A)).is_ok());
    }

    #[tokio::test]
    async fn without_a_jwks_url_an_unknown_kid_fetches_nothing_and_jwks_file_keys_stay() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, oct_jwks("a", KEY_A_B64)).unwrap();
        let a = auth(AuthConfig {
            jwks_file: Some(file.clone()),
            ..AuthConfig::default()
        });
        assert!(a.verify(&with_kid("b", KEY_B)).is_err());
        assert!(!asked_to_refetch(&a).await);
        let b = auth(AuthConfig {
            jwks_file: Some(file),
            jwks_url: Some("https://idp.example/jwks".into()),
            ..AuthConfig::default()
        });
        b.replace_jwks(&oct_jwks("b", KEY_B_B64)).unwrap();
        assert!(
            b.verify(&with_kid("a", KEY_A)).is_ok(),
            "the file's key stays"
        );
        assert!(b.verify(&with_kid("b", KEY_B)).is_ok());
    }

    #[test]
    fn jwks_url_settings_are_checked_at_start() {
        let bad = |c: AuthConfig| Authenticator::new(&c).err().unwrap_or_default();
        let e = bad(AuthConfig {
            jwks_url: Some("http://idp.example/jwks".into()),
            ..AuthConfig::default()
        });
        assert!(e.contains("jwks_url"), "{e}");
        let e = bad(AuthConfig {
            jwks_url: Some("https://idp.example/jwks".into()),
            jwks_refresh_secs: 0,
            ..AuthConfig::default()
        });
        assert!(e.contains("jwks_refresh_secs"), "{e}");
        let e = bad(AuthConfig {
            jwks_ca_file: Some("/ca.pem".into()),
            ..hmac()
        });
        assert!(e.contains("jwks_ca_file"), "{e}");
    }

    #[test]
    fn api_keys_match_exactly() {
        let a = auth(AuthConfig {
            api_keys: vec![ApiKeyConfig {
                name: "feed".into(),
                key: "k-123".into(),
                scopes: vec![Scope::Publish],
            }],
            ..AuthConfig::default()
        });
        assert_eq!(a.api_key("k-123").unwrap().name, "feed");
        assert!(a.api_key("k-12").is_none());
        assert!(a.api_key("k-1234").is_none());
    }
}
