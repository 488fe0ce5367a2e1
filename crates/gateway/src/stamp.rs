//! Who sent a message, stamped by the server: a JWT user's stream message gets
//! `"from":{"sub":..,"info":..}` as its first field, replacing nothing the client could set —
//! a client-supplied `from` is refused, so a chat line can never claim another sender.

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tickwire_model::amend;
use tickwire_wire::ErrorCode;

use crate::{Refusal, User};

/// The top-level keys of a JSON object, or `None` when `data` is not an object.
fn object_keys(data: &[u8]) -> Option<Vec<String>> {
    serde_json::from_slice::<std::collections::HashMap<String, IgnoredAny>>(data)
        .ok()
        .map(|m| m.into_keys().collect())
}

fn forged() -> Refusal {
    Refusal::new(
        ErrorCode::BadData,
        "`from` is set by the server (the sender's identity); leave it out",
    )
}

fn reserved() -> Refusal {
    Refusal::new(
        ErrorCode::BadData,
        "`$edit` and `$delete` are written by the server for the `edit` and `delete` ops; a message may not carry them",
    )
}

/// Refuses the keys only the server may write: `from` (the sender) and, unless the caller is
/// the server API, the amendment keys.
fn check_keys(keys: &[String]) -> Result<(), Refusal> {
    if keys.iter().any(|k| k == "from") {
        return Err(forged());
    }
    if keys.iter().any(|k| amend::is_reserved_key(k)) {
        return Err(reserved());
    }
    Ok(())
}

/// `data` with the user's identity as its first field.
pub(crate) fn from_user(data: &[u8], user: &User) -> Result<Bytes, Refusal> {
    let keys = object_keys(data).ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadData,
            "a signed-in user's message must be a JSON object (the server adds `from` to it)",
        )
    })?;
    check_keys(&keys)?;
    stamp_user(data, user)
}

/// The user's `from` object: `{"sub":..,"info":..}`.
pub(crate) fn user_from(user: &User) -> Result<String, Refusal> {
    let sub = serde_json::to_string(&user.sub)
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("encoding the sender: {e}")))?;
    let mut out = String::with_capacity(sub.len() + 32);
    out.push_str("{\"sub\":");
    out.push_str(&sub);
    if let Some(info) = &user.info {
        out.push_str(",\"info\":");
        out.push_str(info.get());
    }
    out.push('}');
    Ok(out)
}

/// `data` (a JSON object the server built or checked) with the user's `from` in front.
pub(crate) fn stamp_user(data: &[u8], user: &User) -> Result<Bytes, Refusal> {
    Ok(prepend_from(data, user_from(user)?.as_bytes()))
}

/// `data`, a JSON object, with `"from":<from>` as its first field; the rest of the object as
/// it was written (its text, its number digits).
pub(crate) fn prepend_from(data: &[u8], from: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + from.len() + 16);
    out.extend_from_slice(b"{\"from\":");
    out.extend_from_slice(from);
    let text = data.trim_ascii();
    let inner = text
        .strip_prefix(b"{")
        .map(<[u8]>::trim_ascii_start)
        .unwrap_or(b"}");
    if inner.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(inner);
    Bytes::from(out)
}

/// An anonymous sender may not name anyone, nor write an amendment.
pub(crate) fn refuse_forged_from(data: &[u8]) -> Result<(), Refusal> {
    match object_keys(data) {
        Some(keys) => check_keys(&keys),
        None => Ok(()),
    }
}

/// A client that is not the server API (an API key without `publish`) may not write an
/// amendment record by hand: that would pass over the author check of `edit` and `delete`.
pub(crate) fn refuse_reserved(data: &[u8]) -> Result<(), Refusal> {
    if !amend::maybe_amendment(data) {
        return Ok(());
    }
    match object_keys(data) {
        Some(keys) if keys.iter().any(|k| amend::is_reserved_key(k)) => Err(reserved()),
        _ => Ok(()),
    }
}

/// The raw `from` of a stored message (a JSON object at the top level), if it has one.
pub(crate) fn from_of(data: &[u8]) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct F {
        from: Option<Box<RawValue>>,
    }
    serde_json::from_slice::<F>(data).ok()?.from
}

/// The `sub` of a `from` object.
pub(crate) fn sub_of(from: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct S {
        sub: Option<String>,
    }
    serde_json::from_str::<S>(from.get()).ok()?.sub
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user(info: Option<&str>) -> User {
        User {
            sub: "42".into(),
            channels: vec![],
            publish: vec![],
            info: info.map(|i| RawValue::from_string(i.into()).unwrap()),
            exp: None,
        }
    }

    #[test]
    fn the_sender_is_stamped_first_and_the_rest_kept_as_written() {
        let out = from_user(
            br#" { "text": "hi", "n": 1.10 } "#,
            &user(Some(r#"{"name":"Ann"}"#)),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"from":{"sub":"42","info":{"name":"Ann"}},"text": "hi", "n": 1.10 } "#.trim_end()
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["from"]["sub"], "42");
        let empty = from_user(b"{}", &user(None)).unwrap();
        assert_eq!(&empty[..], br#"{"from":{"sub":"42"}}"#);
    }

    #[test]
    fn a_forged_or_non_object_message_is_refused() {
        assert!(from_user(br#"{"from":{"sub":"admin"}}"#, &user(None)).is_err());
        assert!(from_user(b"[1]", &user(None)).is_err());
        assert!(from_user(b"\"text\"", &user(None)).is_err());
        assert!(refuse_forged_from(br#"{"from":"admin"}"#).is_err());
        assert!(refuse_forged_from(br#"{"user":"admin"}"#).is_ok());
        assert!(refuse_forged_from(b"[1]").is_ok());
        assert!(from_user(br#"{"$edit":3,"data":{}}"#, &user(None)).is_err());
        assert!(refuse_forged_from(br#"{"$delete":3}"#).is_err());
        assert!(refuse_reserved(br#"{"$delete":3}"#).is_err());
        assert!(refuse_reserved(br#"{"text":"\"$delete\":3"}"#).is_ok());
        assert!(refuse_reserved(br#"{"meta":{"$delete":3}}"#).is_ok());
    }
}
