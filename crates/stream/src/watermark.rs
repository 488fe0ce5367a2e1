//! A monotonically advancing offset that both threads and async tasks can wait on.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tickwire_model::Offset;
use tokio::sync::Notify;

/// The end of a stream as its readers may see it, with wake-ups when it moves. The writer
/// advances it once per appended batch, so its cost is per batch, not per record.
#[derive(Debug, Default)]
pub struct Watermark {
    value: Mutex<Offset>,
    moved: Condvar,
    notify: Notify,
}

impl Watermark {
    pub fn new(value: Offset) -> Watermark {
        Watermark {
            value: Mutex::new(value),
            moved: Condvar::new(),
            notify: Notify::new(),
        }
    }

    pub fn get(&self) -> Offset {
        *self.value.lock()
    }

    /// Moves the mark up to `to` (never down) and wakes every waiter.
    pub fn advance(&self, to: Offset) {
        {
            let mut v = self.value.lock();
            if to <= *v {
                return;
            }
            *v = to;
        }
        self.moved.notify_all();
        self.notify.notify_waiters();
    }

    /// Blocks until the mark is above `seen` or `timeout` passes; the current mark.
    pub fn wait_past(&self, seen: Offset, timeout: Duration) -> Offset {
        let mut v = self.value.lock();
        if *v <= seen {
            self.moved.wait_for(&mut v, timeout);
        }
        *v
    }

    /// Waits (async) until the mark is above `seen`; the current mark.
    pub async fn changed(&self, seen: Offset) -> Offset {
        loop {
            // Registered before the check, so an advance in between is not missed.
            let notified = self.notify.notified();
            let now = self.get();
            if now > seen {
                return now;
            }
            notified.await;
        }
    }
}
