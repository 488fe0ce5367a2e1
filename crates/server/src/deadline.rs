//! Write deadlines that cost nothing when they are not needed.

use std::{future::Future, task::Poll, time::Duration};

use tokio::time::error::Elapsed;

/// Runs `fut` under a deadline of `limit`, armed only if its first poll does not finish it.
/// Almost every socket write completes at once (the buffer has room); a timer registered and
/// dropped per write showed in fan-out profiles, so only a write that has to wait pays for one.
pub(crate) async fn timeout_if_pending<F: Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => tokio::time::timeout(limit, fut).await,
    }
}
