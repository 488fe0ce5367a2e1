//! Deadlines that cost nothing when they are not needed: write deadlines armed only for a
//! write that waits, and one timer per connection loop for all of its deadlines.

use std::{future::Future, pin::Pin, task::Poll, time::Duration};

use tokio::time::{error::Elapsed, Instant, Sleep};

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

/// Arms a connection loop's one timer for `due`, the earliest of the loop's deadlines (one
/// timer instead of one per deadline: each was a future in every idle connection's task,
/// bench/results/idle.md). The timer moves only when `due` comes before it or it has fired:
/// a deadline that moved later (the socket took more, a packet arrived) lets it fire early
/// once, find nothing due, and be re-armed here, which is cheaper than re-registering it in
/// every turn.
pub fn arm(timer: Pin<&mut Sleep>, due: Instant) {
    if due < timer.deadline() || timer.is_elapsed() {
        timer.reset(due);
    }
}

/// Sleeps until `at`, or forever without a deadline: the `select!` branch of an optional
/// deadline (a token's expiry, a session timer, a shutdown's grace, a parked connection's
/// keep-alive verdict).
pub fn sleep_until(at: Option<Instant>) -> SleepUntil {
    SleepUntil {
        sleep: at.map(tokio::time::sleep_until),
    }
}

pin_project_lite::pin_project! {
    /// [`sleep_until`]'s future: no larger than the timer itself (an `async fn` kept the
    /// deadline beside it), as it sits in every parked MQTT connection's task
    /// (bench/results/idle.md).
    pub struct SleepUntil {
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl Future for SleepUntil {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match self.project().sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_until_its_deadline_or_forever() {
        let start = Instant::now();
        let at = start + Duration::from_millis(30);
        sleep_until(Some(at)).await;
        assert!(Instant::now() >= at);
        let never = tokio::time::timeout(Duration::from_millis(60), sleep_until(None)).await;
        assert!(never.is_err(), "no deadline: it never fires");
        assert_eq!(
            std::mem::size_of::<SleepUntil>(),
            std::mem::size_of::<Sleep>(),
            "no room beside the timer"
        );
    }
}
