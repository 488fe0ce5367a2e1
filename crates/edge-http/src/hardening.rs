//! What keeps the HTTP edge safe to put in front of browsers and the internet:
//!
//! - error texts without server file paths (a storage failure names the segment it failed
//!   on: that goes to the server log, not to the client);
//! - close code 1009 for a WebSocket frame over the limit, as docs/protocol.md promises.

use std::{borrow::Cow, time::Duration};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tickwire_gateway::ErrorCode;

/// WebSocket close code for a message too big to process (RFC 6455 §7.4.1).
pub const CLOSE_TOO_LARGE: u16 = 1009;

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

/// Whether a WebSocket read failed because a frame or message was over the size limit.
pub(crate) fn is_too_large(e: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source()
            .and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Tells the client why its connection ends: close code 1009. The frame is dropped unread
/// (its length alone was over the limit), so the connection cannot go on.
pub(crate) async fn close_too_large(socket: &mut WebSocket, timeout: Duration) {
    let close = Message::Close(Some(CloseFrame {
        code: CLOSE_TOO_LARGE,
        reason: ErrorCode::TooLarge.as_str().into(),
    }));
    let _ = tokio::time::timeout(timeout.min(Duration::from_secs(2)), socket.send(close)).await;
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
