//! How the writer waits for its next batch: after a large one it looks for a while before it
//! sleeps, and backs off when looking finds nothing.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::WriterMsg;

/// A batch of at least this many items means a publisher may be streaming: the writer then
/// looks for the next batch for [`LINGER`] before it sleeps.
const LINGER_AFTER: usize = 16;
/// How long a busy writer keeps looking. Sleeping on an empty queue costs the publishing
/// worker a futex wake per batch and this thread a context switch; a streaming publisher's
/// next batch is usually a few tens of microseconds behind.
const LINGER: Duration = Duration::from_micros(30);
/// Most large batches a writer skips lingering after, following looks that found nothing.
const LINGER_MAX_SKIP: u32 = 256;

/// Whether the writer looks for its next batch before it sleeps, learnt from how that went.
/// A publisher that waits for its acknowledgements before sending more (MQTT QoS 1 with a
/// small window) sends nothing while the writer looks: there the looking only takes a
/// shared core from the publisher, so from the second look in a row that finds nothing, the
/// writer sleeps at once after a doubling number of large batches (up to
/// [`LINGER_MAX_SKIP`]); a look that finds a batch resets it.
#[derive(Debug, Default)]
pub(super) struct Linger {
    /// Consecutive looks that found nothing.
    misses: u32,
    /// Large batches still to be followed by sleep at once.
    skip: u32,
}

impl Linger {
    /// Whether to look after a batch of `items`.
    pub(super) fn wanted(&mut self, items: usize) -> bool {
        if items < LINGER_AFTER {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    fn found(&mut self, found: bool) {
        if found {
            self.misses = 0;
        } else {
            self.misses = self.misses.saturating_add(1);
            // One miss alone skips nothing (a streaming publisher's batch came late); then
            // 2, 6, 14, … large batches.
            self.skip = 1u32
                .checked_shl(self.misses)
                .unwrap_or(u32::MAX)
                .saturating_sub(2)
                .min(LINGER_MAX_SKIP);
        }
    }
}

/// The next message for the writer: when `linger` is set, looked for (yielding the core
/// between looks) for up to [`LINGER`] first; then waited for asleep. None when every sender
/// is gone.
pub(super) fn next_message(
    rx: &mut mpsc::Receiver<WriterMsg>,
    linger: Option<&mut Linger>,
) -> Option<WriterMsg> {
    if let Some(state) = linger {
        let until = Instant::now() + LINGER;
        loop {
            match rx.try_recv() {
                Ok(m) => {
                    state.found(true);
                    return Some(m);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if Instant::now() >= until {
                state.found(false);
                break;
            }
            std::thread::yield_now();
        }
    }
    rx.blocking_recv()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lingering_writer_still_sleeps_wakes_and_ends() {
        let (tx, mut rx) = mpsc::channel::<WriterMsg>(4);
        let mut linger = Linger::default();
        // Queued: taken during the linger.
        tx.try_send(WriterMsg::Sync).unwrap();
        let got = next_message(&mut rx, Some(&mut linger));
        assert!(matches!(got, Some(WriterMsg::Sync)));
        // Sent long after the linger ran out: the writer is asleep by then and must wake.
        // Long is 200 ms, not a small multiple of the 30 µs linger: in CI, beside a
        // parallel build, this thread was once descheduled for longer than 3 ms before its
        // first look, found the message already there, and counted no miss.
        let late = tx.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            late.blocking_send(WriterMsg::Sync).is_ok()
        });
        let got = next_message(&mut rx, Some(&mut linger));
        assert!(matches!(got, Some(WriterMsg::Sync)));
        assert!(sender.join().unwrap());
        assert_eq!(linger.misses, 1, "the second look found nothing");
        // Every sender gone: the writer's loop ends, lingering or not.
        drop(tx);
        assert!(next_message(&mut rx, Some(&mut Linger::default())).is_none());
        assert!(next_message(&mut rx, None).is_none());
    }

    #[test]
    fn looks_that_find_nothing_back_off_and_one_that_finds_resets() {
        let mut l = Linger::default();
        assert!(
            !l.wanted(LINGER_AFTER - 1),
            "a small batch: no publisher streaming"
        );
        assert!(l.wanted(LINGER_AFTER));
        // One miss skips nothing; then the large batches skipped double (plus 2).
        for skipped in [0, 2, 6, 14] {
            l.found(false);
            for _ in 0..skipped {
                assert!(!l.wanted(LINGER_AFTER));
            }
            assert!(l.wanted(LINGER_AFTER));
        }
        for _ in 0..40 {
            l.found(false);
        }
        assert_eq!(l.skip, LINGER_MAX_SKIP);
        for _ in 0..LINGER_MAX_SKIP {
            assert!(!l.wanted(LINGER_AFTER));
        }
        // The skips ran out, and this look found a batch: the next large batch is looked
        // after at once.
        assert!(l.wanted(LINGER_AFTER));
        l.found(true);
        assert_eq!(l.misses, 0);
        assert!(l.wanted(LINGER_AFTER));
    }
}
