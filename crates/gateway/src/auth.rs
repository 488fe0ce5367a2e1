//! Identity: who a client is, from what it presented.
//!
//! - **API keys** with scopes (`publish`, `subscribe_all`, `admin`), compared in constant time.
//! - **JWT users**: HS256/384/512 from a shared secret, RS256/ES256/EdDSA (and their siblings)
//!   from a PEM public key or a JWKS file; `exp`, `nbf`, `aud` and `iss` checked. Claims: `sub`
//!   (the user id), optional `channels` and `publish` (channel patterns), and `info` (opaque
//!   JSON stamped on the user's messages).
//!
//! A credential that is given but not valid is refused, never treated as anonymous, so a
//! client learns its key or token is wrong instead of silently seeing less.

use std::{path::PathBuf, sync::Arc};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, JwkSet},
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tickwire_model::{Channel, Pattern};
use tickwire_wire::ErrorCode;

use crate::Refusal;

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

/// A verifying key and the algorithms it may verify.
struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Verifies credentials. Built once from the configuration.
pub(crate) struct Authenticator {
    keys: Vec<(Vec<u8>, Arc<KeyIdentity>)>,
    jwt: RwLock<Vec<VerifyKey>>,
    audience: Vec<String>,
    issuer: Option<String>,
    leeway: u64,
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
                jwks_keys(&text)
                    .map_err(|e| config_error(&format!("jwks_file {}", path.display()), e))?,
            );
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
        })
    }

    /// Replaces the JWKS keys (a refreshed document); the secret and PEM keys stay.
    #[allow(dead_code)]
    pub(crate) fn replace_jwks(&self, text: &[u8]) -> Result<usize, String> {
        let fresh = jwks_keys(text)?;
        let n = fresh.len();
        let mut keys = self.jwt.write();
        keys.retain(|k| k.kid.is_none());
        keys.extend(fresh);
        Ok(n)
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

    /// Whether any JWT key is configured.
    pub(crate) fn has_jwt(&self) -> bool {
        !self.jwt.read().is_empty()
    }

    /// Verifies a JWT; the user it names.
    pub(crate) fn verify(&self, token: &str) -> Result<User, Refusal> {
        let bad = |why: String| Refusal::new(ErrorCode::Unauthorized, why);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| bad(format!("the token is not a JWT: {e}")))?;
        let keys = self.jwt.read();
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
                "no configured key verifies {:?} tokens{}",
                header.alg,
                header
                    .kid
                    .as_deref()
                    .map(|k| format!(" with kid {k:?}"))
                    .unwrap_or_default()
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
            "the token's signature does not verify{}",
            last.map(|e| format!(" ({e})")).unwrap_or_default()
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

fn pem_key(pem: &[u8]) -> Option<VerifyKey> {
    let key = |key, algorithms| {
        Some(VerifyKey {
            kid: None,
            key,
            algorithms,
        })
    };
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return key(
            k,
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
        );
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return key(k, vec![Algorithm::ES256, Algorithm::ES384]);
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return key(k, vec![Algorithm::EdDSA]);
    }
    None
}

fn jwks_keys(text: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
        let algorithms = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            // Encryption algorithms (RSA-OAEP...) name no signature algorithm.
            (Some(a), _) => match a.to_string().parse::<Algorithm>() {
                Ok(alg) => vec![alg],
                Err(_) => return Err(format!("key {i}: algorithm {a} does not sign")),
            },
            (None, AlgorithmParameters::RSA(_)) => vec![Algorithm::RS256],
            (None, AlgorithmParameters::EllipticCurve(_)) => {
                vec![Algorithm::ES256, Algorithm::ES384]
            }
            (None, AlgorithmParameters::OctetKeyPair(_)) => vec![Algorithm::EdDSA],
            (None, AlgorithmParameters::OctetKey(_)) => {
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
            }
        };
        out.push(VerifyKey {
            // Keys of a JWKS always count as JWKS keys (replaced on refresh), `kid` or not.
            kid: Some(jwk.common.key_id.clone().unwrap_or_default()),
            key,
            algorithms,
        });
    }
    Ok(out)
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
