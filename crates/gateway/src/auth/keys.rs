//! Verifying keys from key material: a PEM public key, or the JWKs of a JWKS document (a
//! file or `jwks_url`), each with the algorithms it may verify.

use jsonwebtoken::{
    jwk::{AlgorithmParameters, Jwk, PublicKeyUse},
    Algorithm, DecodingKey,
};
use serde::Deserialize;

/// A verifying key and the algorithms it may verify.
pub(super) struct VerifyKey {
    pub(super) kid: Option<String>,
    pub(super) key: DecodingKey,
    pub(super) algorithms: Vec<Algorithm>,
    /// Fetched from `jwks_url`: replaced by each refresh (the other keys stay).
    pub(super) from_url: bool,
}

pub(super) fn pem_key(pem: &[u8]) -> Option<VerifyKey> {
    let key = |key, algorithms| {
        Some(VerifyKey {
            kid: None,
            key,
            algorithms,
            from_url: false,
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

/// The signing keys of a JWKS document. Keys this server cannot verify with (encryption keys,
/// which identity providers such as Keycloak publish beside their signing keys; key types or
/// curves it does not know) are skipped with a warning, so one of them never costs the usable
/// ones; a document with keys but none usable is an error.
pub(super) fn jwks_keys(text: &[u8], from_url: bool) -> Result<Vec<VerifyKey>, String> {
    // Each key parsed on its own: a key of an unknown type must not fail the whole document.
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in doc.keys.into_iter().enumerate() {
        match jwk_key(raw) {
            Ok(Some((kid, key, algorithms))) => out.push(VerifyKey {
                // Keys of a JWKS always count as JWKS keys (replaced on refresh), `kid` or not.
                kid: Some(kid),
                key,
                algorithms,
                from_url,
            }),
            Ok(None) => {}
            Err(why) => skipped.push(format!("key {i}: {why}")),
        }
    }
    if out.is_empty() && !skipped.is_empty() {
        return Err(format!("no usable signing key ({})", skipped.join("; ")));
    }
    for why in &skipped {
        tracing::warn!("JWKS: {why}; skipped");
    }
    Ok(out)
}

/// One JWK as a verification key: `Ok(None)` for an encryption key (not ours to use), `Err`
/// for a key that should sign but cannot be used.
fn jwk_key(
    raw: serde_json::Value,
) -> Result<Option<(String, DecodingKey, Vec<Algorithm>)>, String> {
    let jwk: Jwk = serde_json::from_value(raw).map_err(|e| format!("not a usable JWK: {e}"))?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Ok(None);
    }
    let algorithms = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(a), _) => match a.to_string().parse::<Algorithm>() {
            Ok(alg) => vec![alg],
            // Encryption algorithms (RSA-OAEP...) name no signature algorithm.
            Err(_) => return Ok(None),
        },
        (None, AlgorithmParameters::RSA(_)) => vec![Algorithm::RS256],
        (None, AlgorithmParameters::EllipticCurve(_)) => vec![Algorithm::ES256, Algorithm::ES384],
        (None, AlgorithmParameters::OctetKeyPair(_)) => vec![Algorithm::EdDSA],
        (None, AlgorithmParameters::OctetKey(_)) => {
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(Some((
        jwk.common.key_id.clone().unwrap_or_default(),
        key,
        algorithms,
    )))
}
