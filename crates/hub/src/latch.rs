//! A one-way signal: set once, awaited by any number of tasks.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Set once, and every task in [`Latch::wait`] (before or after) resolves. A flag and a
/// `Notify` inline, where a cancellation token allocated a ~150-byte tree node of its own:
/// every connection holds one (its hub session's close, an MQTT client id's takeover).
#[derive(Debug, Default)]
pub struct Latch {
    set: AtomicBool,
    notify: Notify,
}

impl Latch {
    /// Sets it and wakes every waiter. Idempotent.
    pub fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once it is set. Cancel-safe.
    pub async fn wait(&self) {
        // A `Notified` receives every `notify_waiters` made after it was created, polled or
        // not, and `set` stores the flag before notifying: checked after creating it, no set
        // can slip between the check and the wait.
        let notified = self.notify.notified();
        if self.set.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}
