//! Parking a quiet WebSocket connection (see the module above): what a parked connection
//! keeps, how a turn of serving ends, what wakes a parked one, and how long a connection is
//! quiet before it is parked.

use std::time::Duration;

use tickwire_gateway::Connection;

use super::upgrade::Lean;

/// How long a connection is quiet (nothing read, written, delivered or due) before it is
/// parked, at first: between this and twice this. Short, so an idle connection gives back
/// its memory soon after it goes quiet (bench/results/idle.md).
///
/// Each park and wake-up costs a rebuild of the serving state, and each check for quiet a turn
/// of the serving loop, so the period doubles, up to [`PARK_AFTER_MAX`], when two checks in a
/// row find the connection was not quiet for all of it, and when a parked connection is
/// woken sooner than it: a steady slow ticker stops parking and is checked every few seconds.
/// One that then stays parked for eight times its period goes back to this.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(500);
pub(super) const PARK_AFTER_MAX: Duration = Duration::from_secs(8);

/// What a parked connection keeps: who it is and its deadlines. Everything else (the
/// WebSocket layer and its read buffer, the command window, the outbox, the serving loop's
/// own state) is made again when it is needed.
pub(super) struct Idle {
    pub(super) conn: Box<Connection>,
    pub(super) binary: bool,
    pub(super) token_at: Option<tokio::time::Instant>,
    pub(super) grace_at: Option<tokio::time::Instant>,
    pub(super) ping_at: tokio::time::Instant,
    /// The quiet period before the next park, in ms (0: never served yet). Two bytes, in
    /// what was padding.
    pub(super) park_after_ms: u16,
}

impl Idle {
    /// After a wake-up: a connection woken sooner than its quiet period after parking waits
    /// twice as long before the next park; one that stayed parked for eight times it goes
    /// back to [`PARK_AFTER`] (see there).
    pub(super) fn adapt(&mut self, parked_for: Duration) {
        self.park_after_ms = next_park_after(self.park_after_ms, parked_for);
    }
}

/// [`PARK_AFTER`] in ms.
pub(super) fn base_ms() -> u16 {
    u16::try_from(PARK_AFTER.as_millis()).unwrap_or(u16::MAX)
}

/// A quiet period (ms) twice as long, up to [`PARK_AFTER_MAX`].
pub(super) fn doubled(ms: u16) -> u16 {
    let max = u16::try_from(PARK_AFTER_MAX.as_millis()).unwrap_or(u16::MAX);
    ms.saturating_mul(2).min(max)
}

/// A quiet period in ms as a duration.
pub(super) fn period(ms: u16) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// The quiet period (ms) after a wake-up from a park that lasted `parked_for`, given the one
/// before (0: the connection was never served).
fn next_park_after(now: u16, parked_for: Duration) -> u16 {
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

/// How a turn of serving ended.
pub(super) enum Served {
    /// The connection is over (closed by either side, or failed).
    Ended,
    /// It was quiet for its period ([`PARK_AFTER`]) with nothing held for the client: the raw
    /// socket and what the connection keeps while parked.
    Parked(Lean, Idle),
}

/// What ended a parked wait.
pub(super) enum Wake {
    /// Serve again; `deliver`: the hub's wake-up was taken by the wait, so deliveries are
    /// drained first, before waiting for the next.
    Resume { deliver: bool },
    /// The client closed the socket, or it failed.
    Gone,
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
        let step = |p: &mut u16, parked_for: Duration| *p = next_park_after(*p, parked_for);
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
}
