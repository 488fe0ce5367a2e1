//! What keeps the HTTP edge safe to put in front of browsers and the internet:
//!
//! - error texts without server file paths (a storage failure names the segment it failed
//!   on: that goes to the server log, not to the client).

use std::borrow::Cow;

use tickwire_gateway::ErrorCode;

/// The text a client gets for a refusal. Server-side failures (storage, internal errors) carry
/// the text of an I/O error, which names files under the data directory: those are replaced,
/// and the whole text goes to the server log instead. Refusals of the client's own request
/// describe its input and are kept as they are.
pub fn public_detail(server_error: bool, text: &str) -> Cow<'_, str> {
    if !server_error {
        return Cow::Borrowed(text);
    }
    let public = tickwire_model::layout::redact_paths(text);
    if let Cow::Owned(p) = &public {
        tracing::warn!(error = %text, answered = %p, "request failed on the server side");
    }
    public
}

/// [`public_detail`] for a refusal code (WebSocket error replies).
pub(crate) fn public_reason(code: ErrorCode, text: &str) -> Cow<'_, str> {
    public_detail(
        matches!(code, ErrorCode::Unavailable | ErrorCode::Internal),
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_errors_are_redacted() {
        let text = "write failed on /tmp/d/log/chat/0.log: No space left on device";
        assert_eq!(
            public_detail(true, text),
            "write failed on <path>: No space left on device"
        );
        assert_eq!(public_detail(false, "channel `a/b`"), "channel `a/b`");
    }
}
