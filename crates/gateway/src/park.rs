//! Parking quiet connections: how long an edge's serving loop waits, quiet, before it parks a
//! connection, and how that period adapts to the connection's traffic.
//!
//! A parked connection's task keeps only what the connection is (its socket, its
//! [`crate::Connection`], its protocol state) and drops its serving loop and buffers, which
//! are made again when the client sends, a delivery comes or a deadline is due. The WebSocket
//! edge (edge-http, `ws/park.rs`) and the MQTT edge (edge-mqtt, `driver/park.rs`) park this
//! way; what each drops is its own, the period is this one (bench/results/idle.md).

use std::time::Duration;

use tokio::time::Instant;

/// How long a connection is quiet (nothing read, written, delivered or due) before it is
/// parked, at first: between this and twice this. Short, so an idle connection gives back
/// its memory soon after it goes quiet.
///
/// Each park and wake-up costs a rebuild of the serving state, and each check for quiet a turn
/// of the serving loop, so the period doubles, up to [`PARK_AFTER_MAX`], when two checks in a
/// row find the connection was not quiet for all of it, and when a parked connection is
/// woken sooner than it: a steady slow ticker stops parking and is checked every few seconds.
/// One that then stays parked for eight times its period goes back to this.
pub const PARK_AFTER: Duration = Duration::from_millis(500);
pub const PARK_AFTER_MAX: Duration = Duration::from_secs(8);

/// [`PARK_AFTER`] in ms.
pub fn base_ms() -> u16 {
    u16::try_from(PARK_AFTER.as_millis()).unwrap_or(u16::MAX)
}

/// A quiet period (ms) twice as long, up to [`PARK_AFTER_MAX`].
fn doubled(ms: u16) -> u16 {
    let max = u16::try_from(PARK_AFTER_MAX.as_millis()).unwrap_or(u16::MAX);
    ms.saturating_mul(2).min(max)
}

/// A quiet period in ms as a duration.
fn period(ms: u16) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// The quiet period (ms) after a wake-up from a park that lasted `parked_for`, given the one
/// before (0: the connection was never served; it is kept in two bytes, as every parked
/// connection keeps it).
pub fn after_wake(now: u16, parked_for: Duration) -> u16 {
    if now == 0 {
        // The first wake-up ends the park every connection starts in: no signal yet.
        base_ms()
    } else if parked_for < period(now) {
        doubled(now)
    } else if parked_for >= period(now) * 8 {
        base_ms()
    } else {
        now
    }
}

/// The quiet-period clock of one turn of serving: the connection parks when the clock's
/// instant comes and nothing ran since the period began ([`Quiet::busy`]). A busy connection
/// pays one flag store per turn of its loop, not a clock read.
pub struct Quiet {
    ms: u16,
    /// Checks in a row that found the connection busy.
    checks: u8,
    busy: bool,
    at: Instant,
}

impl Quiet {
    /// Starts the period kept from the last park (0: the connection was never parked).
    pub fn start(ms: u16) -> Quiet {
        let ms = ms.max(base_ms());
        Quiet {
            ms,
            checks: 0,
            busy: false,
            at: Instant::now() + period(ms),
        }
    }

    /// Something ran: the connection was not quiet in this period.
    pub fn busy(&mut self) {
        self.busy = true;
    }

    /// When the period ends: the serving loop's timer is armed for it while the connection
    /// holds nothing that forbids parking.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The period in ms, kept while parked.
    pub fn ms(&self) -> u16 {
        self.ms
    }

    /// At `now`: whether the connection may park, having been quiet for the whole period
    /// with `parkable` (nothing owed either way). Otherwise a new period starts when this one
    /// has ended, twice as long after two such checks in a row (the first period holds the
    /// turn that woke the connection), so a connection with steady traffic is not checked
    /// every half second.
    pub fn check(&mut self, now: Instant, parkable: bool) -> bool {
        if self.at > now {
            return false;
        }
        if !self.busy && parkable {
            return true;
        }
        self.busy = false;
        self.checks += 1;
        if self.checks >= 2 {
            self.checks = 0;
            self.ms = doubled(self.ms);
        }
        self.at = now + period(self.ms);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quiet period doubles for a connection woken soon after each park, up to the cap,
    /// stays where it is for one woken later, and goes back to the start after a long park;
    /// the wake-up from the park every connection starts in only starts it.
    #[test]
    fn the_quiet_period_follows_how_soon_a_parked_connection_is_woken() {
        let ms = Duration::from_millis;
        let mut p: u16 = 0;
        let step = |p: &mut u16, parked_for: Duration| *p = after_wake(*p, parked_for);
        step(&mut p, ms(1));
        assert_eq!(p, 500, "the first wake-up only starts the period");
        for want in [1000, 2000, 4000, 8000, 8000] {
            step(&mut p, ms(10));
            assert_eq!(p, want, "woken soon after parking: doubled, up to the cap");
        }
        step(&mut p, ms(20_000));
        assert_eq!(
            p, 8000,
            "parked longer than the period, under 8 times it: kept"
        );
        step(&mut p, ms(64_000));
        assert_eq!(p, 500, "parked for 8 times the period: back to the start");
    }

    /// A quiet connection parks when its period ends, not before; one busy in the period does
    /// not, and after two busy periods in a row the next is twice as long.
    #[test]
    fn a_period_parks_only_a_connection_quiet_through_it() {
        let mut q = Quiet::start(0);
        assert_eq!(q.ms(), 500);
        let start = q.at();
        assert!(!q.check(start - period(1), true), "not before the end");
        assert!(!q.check(start, false), "something owed: no park");
        assert_eq!(q.at(), start + period(500), "a new period began");
        q.busy();
        assert!(!q.check(q.at(), true), "busy in the period: no park");
        assert_eq!(q.ms(), 1000, "two checks in a row found it busy: doubled");
        let at = q.at();
        assert!(q.check(at, true), "quiet through the period: parks");
        let mut q = Quiet::start(4000);
        assert_eq!(q.ms(), 4000, "the period kept from the last park");
        q.busy();
        assert!(!q.check(q.at(), true));
        assert_eq!(q.ms(), 4000, "one busy check alone keeps the period");
    }
}
