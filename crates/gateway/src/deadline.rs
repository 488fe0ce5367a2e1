//! Write deadlines that cost nothing when they are not needed.

use std::{future::Future, pin::Pin, task::Poll, time::Duration};

use tokio::time::error::Elapsed;

/// Runs `fut` under a deadline of `limit`, armed only if its first poll does not finish it.
/// Almost every socket write completes at once (the buffer has room); a timer registered and
/// dropped per write showed in fan-out profiles, so only a write that has to wait pays for one.
///
/// `fut` is pinned by the caller and borrowed here: taking it by value made this future hold a
/// second copy of the caller's write future, and since every WebSocket task is sized for its
/// largest state, that cost ~580 bytes per idle connection (7,810 -> 8,389 B at 19,500
/// connections, bench/results/idle.md).
pub async fn timeout_if_pending<F: Future>(
    limit: Duration,
    mut fut: Pin<&mut F>,
) -> Result<F::Output, Elapsed> {
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => tokio::time::timeout(limit, fut).await,
    }
}
