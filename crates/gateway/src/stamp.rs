//! Who sent a message, stamped by the server: a JWT user's stream message gets
//! `"from":{"sub":..,"info":..}` as its first field, replacing nothing the client could set —
//! a client-supplied `from` is refused, so a chat line can never claim another sender.

use bytes::Bytes;
use serde::de::IgnoredAny;
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

/// `data` with the user's identity as its first field.
pub(crate) fn from_user(data: &[u8], user: &User) -> Result<Bytes, Refusal> {
    let keys = object_keys(data).ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadData,
            "a signed-in user's message must be a JSON object (the server adds `from` to it)",
        )
    })?;
    if keys.iter().any(|k| k == "from") {
        return Err(forged());
    }
    let sub = serde_json::to_string(&user.sub)
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("encoding the sender: {e}")))?;
    let mut out = Vec::with_capacity(data.len() + sub.len() + 32);
    out.extend_from_slice(b"{\"from\":{\"sub\":");
    out.extend_from_slice(sub.as_bytes());
    if let Some(info) = &user.info {
        out.extend_from_slice(b",\"info\":");
        out.extend_from_slice(info.get().as_bytes());
    }
    out.push(b'}');
    // The rest of the object as the client wrote it (its text, its number digits).
    let text = data.trim_ascii();
    let inner = text
        .strip_prefix(b"{")
        .map(<[u8]>::trim_ascii_start)
        .unwrap_or(b"}");
    if inner.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(inner);
    Ok(Bytes::from(out))
}

/// An anonymous sender may not name anyone.
pub(crate) fn refuse_forged_from(data: &[u8]) -> Result<(), Refusal> {
    match object_keys(data) {
        Some(keys) if keys.iter().any(|k| k == "from") => Err(forged()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::value::RawValue;

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
    }
}
