//! Parking a quiet MQTT connection (`tickwire_gateway::park`, as the WebSocket edge does):
//! once it has been quiet for its period with nothing owed either way, the serving loop
//! ([`Driver::main_loop`], boxed) ends, and the connection's task waits with only its driver
//! (the socket, the broker session, the hub session) until the client sends a packet, the hub
//! has a delivery or closes the session, another connection takes the client id over, or the
//! keep-alive verdict or the token's expiry is due. Most MQTT clients of a large deployment
//! are idle between rare publishes; this is what they cost while they are
//! (bench/results/idle.md).

use super::*;
use tickwire_gateway::{deadline::sleep_until, park};

/// How a turn of serving ended.
pub(super) enum Turn {
    /// The connection is over.
    End(End),
    /// It was quiet for its period with nothing owed ([`Driver::parkable`]).
    Park,
}

impl Driver {
    /// Serves the connection from its CONNACK to its end: in turns of [`Driver::main_loop`]
    /// while there is traffic, parked between them. A new connection starts parked (it has
    /// no subscription yet, unless its stored session brought some, and then deliveries wake
    /// it at once).
    ///
    /// The parked wait is the state every idle connection's task is sized for (see
    /// [`super::run`]), so it holds as little as it can: a plain function returning an
    /// `async move` block keeps its one argument once (an `async fn` keeps it twice), and
    /// the wait is written out here rather than in a function of its own.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub(super) fn serve_parking(&mut self) -> impl std::future::Future<Output = End> + Send + '_ {
        async move {
            let mut woken = false;
            loop {
                if self.parkable() {
                    // The buffers' allocations are made again when they are needed (the
                    // read buffer is empty here, but may still hold what CONNECT needed).
                    self.window = None;
                    self.rbuf = BytesMut::new();
                    self.session.shrink();
                    self.conn.set_parked(true);
                    self.parked_at = Instant::now();
                    // The keep-alive verdict or the token's expiry (the deadline itself is not
                    // kept beside the timer: the task is sized for this state).
                    let due = sleep_until(
                        [self.keep_alive_at(), self.token_at]
                            .into_iter()
                            .flatten()
                            .min(),
                    );
                    let Driver { io, rbuf, conn, .. } = self;
                    // What the client sends is read into the driver's buffer, for the serving
                    // loop. The hub closing the session, and another connection taking the
                    // client id over (`Broker::claim`), wake `notified` too; the serving loop
                    // then finds the close or the takeover, as it finds what is due after a
                    // deadline.
                    let wake = tokio::select! {
                        biased;
                        r = std::future::poll_fn(|cx| io.poll_read(cx, rbuf)) => match r {
                            Ok(true) => Some(Wake::Read),
                            Ok(false) | Err(_) => None,
                        },
                        () = conn.notified() => Some(Wake::Hub),
                        () = due => Some(Wake::Due),
                    };
                    self.conn.set_parked(false);
                    self.park_after_ms =
                        park::after_wake(self.park_after_ms, self.parked_at.elapsed());
                    match wake {
                        None => return End::Abrupt,
                        Some(Wake::Read) => {
                            self.last_rx = Instant::now();
                            woken = false;
                        }
                        Some(Wake::Hub) => woken = true,
                        Some(Wake::Due) => woken = false,
                    }
                }
                match Box::pin(self.main_loop(woken)).await {
                    Turn::End(end) => return end,
                    Turn::Park => woken = false,
                }
            }
        }
    }

    /// Whether the connection holds nothing for the client and nothing of it: no packet
    /// (or part of one) read and not handled, no publication waiting for the hub or for its
    /// answer, nothing to write, no delivery waiting for the client's Receive Maximum, and
    /// no change of a stored session waiting to be saved.
    pub(super) fn parkable(&mut self) -> bool {
        self.rbuf.is_empty()
            && self
                .window
                .as_ref()
                .is_none_or(|w| w.batch.is_empty() && w.pending.is_empty())
            && !self.moved
            && self.session.queued() == 0
            && !(self.session.dirty() && self.session.persistent())
            && self.session.output().is_empty()
    }
}

/// What ended a parked wait, the client's leaving aside.
enum Wake {
    /// The client sent something.
    Read,
    /// The hub session's wake-up: a delivery, a close, or a takeover of the client id. It
    /// is taken, so the serving loop drains before it waits for the next.
    Hub,
    /// The keep-alive verdict or the token's expiry.
    Due,
}
