//! The publish window: PUBLISH packets checked and batched, handed to the hub while the
//! connection goes on reading, and acknowledged in publish order as the hub answers.

use super::*;

/// Most publications from one client sent to the hub in one call.
const MAX_PUBLISH_BATCH: usize = 1024;
/// Most publications handed to the hub and not yet acknowledged before the connection stops
/// reading (backpressure towards a QoS 0 publisher faster than the log; QoS 1 and 2 are also
/// bounded by the receive maximum).
pub(super) const MAX_PENDING: u32 = 16 * 1024;

/// Longest a connection that ended waits for the answers of publications it handed to the hub.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// A batch of publications handed to the hub, waiting for its acknowledgements.
pub(super) struct PendingBatch {
    packets: Vec<Publish>,
    acks: AckFuture,
}

/// What a publishing connection holds of its publications (boxed in the driver, see
/// [`Driver::window`]).
#[derive(Default)]
pub(super) struct Window {
    /// Checked publications waiting for one hub call.
    pub(super) batch: Vec<(Publish, Checked)>,
    /// Batches handed to the hub, oldest first, answered in that order as each is
    /// acknowledged while the connection goes on reading: waiting for each batch before
    /// reading the next made a pipelining publisher's stages take turns.
    pub(super) pending: VecDeque<PendingBatch>,
    /// Publications in `pending`.
    pub(super) pending_len: u32,
}
impl Driver {
    /// Checks a PUBLISH and adds it to the batch. Consecutive PUBLISH packets already in the
    /// read buffer go to the hub together (one group commit), acknowledged in order after it.
    pub(super) async fn on_publish(&mut self, mut p: Publish) -> Option<End> {
        // A resent QoS 2 PUBLISH may be answered at once (its PUBREC again): after the
        // acknowledgements of everything before it.
        if p.dup {
            if let Some(end) = self.flush_batch().await {
                return Some(end);
            }
        }
        match self.session.incoming_publish(&mut p) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(end) => return Some(end),
        }
        let checked = publish::precheck_on(&self.conn, &p.topic, &p.payload);
        match checked {
            Ok(req) => {
                // The request holds the data; the packet is kept only to be answered, and
                // must not pin its payload while it waits in the window.
                p.payload = Bytes::new();
                let batch = &mut self.window.get_or_insert_default().batch;
                batch.push((p, req));
                if batch.len() >= MAX_PUBLISH_BATCH {
                    self.submit().await;
                }
                None
            }
            Err(r) => {
                // Earlier publications keep their order: stored and acknowledged first.
                if let Some(end) = self.flush_batch().await {
                    return Some(end);
                }
                self.conn.refused();
                self.session.refused(&p, r)
            }
        }
    }

    /// Hands the batched publications to the hub (waiting only while a writer's queue is
    /// full); they are acknowledged in order as the hub answers ([`Driver::answer`]).
    pub(super) async fn submit(&mut self) {
        let Some(w) = self.window.as_mut().filter(|w| !w.batch.is_empty()) else {
            return;
        };
        let (packets, requests): (Vec<Publish>, Vec<Checked>) =
            std::mem::take(&mut w.batch).into_iter().unzip();
        let acks = Box::pin(self.conn.enqueue(requests).await);
        w.pending_len = w.pending_len.saturating_add(count(&packets));
        w.pending.push_back(PendingBatch { packets, acks });
    }

    /// The oldest batch handed to the hub, taken out of the window.
    fn pop_pending(&mut self) -> Option<PendingBatch> {
        self.window.as_mut()?.pending.pop_front()
    }

    /// Waits (a bounded time) for the answers of every batch still with the hub, when the
    /// connection has ended; nothing more is sent.
    pub(super) async fn settle_pending(&mut self) {
        let limit = Instant::now() + SETTLE_LIMIT;
        while let Some(b) = self.pop_pending() {
            match tokio::time::timeout_at(limit, b.acks).await {
                Ok(acks) => {
                    let _ = self.answer(b.packets, acks);
                }
                Err(_) => {
                    tracing::warn!(client = %self.session.client_id(), "MQTT connection ended with publications the hub did not answer in time");
                    self.window = None;
                }
            }
        }
    }

    /// Stores every publication read so far and acknowledges each, before a packet of another
    /// kind or a refusal is handled: those follow the publications before them.
    pub(super) async fn flush_batch(&mut self) -> Option<End> {
        self.submit().await;
        while let Some(b) = self.pop_pending() {
            let acks = b.acks.await;
            if let Some(end) = self.answer(b.packets, acks) {
                return Some(end);
            }
        }
        None
    }

    /// The oldest batch's answers arrived ([`front_acks`]): it leaves the window, answered.
    pub(super) fn answer_front(&mut self, acks: Vec<Result<Ack, Refusal>>) -> Option<End> {
        let b = self.pop_pending()?;
        self.answer(b.packets, acks)
    }

    /// The hub's answers for one batch: PUBACK / PUBREC (only now, after the durable ack) for
    /// each publication stored, the refusal for each refused.
    fn answer(&mut self, packets: Vec<Publish>, results: Vec<Result<Ack, Refusal>>) -> Option<End> {
        if let Some(w) = self.window.as_mut() {
            w.pending_len = w.pending_len.saturating_sub(count(&packets));
        }
        for (p, result) in packets.iter().zip(results) {
            match result {
                Ok(_) => self.session.stored(p),
                Err(r) => {
                    self.conn.refused();
                    if let Some(end) = self.session.refused(p, refused(&r)) {
                        return Some(end);
                    }
                }
            }
        }
        None
    }
}

/// The acknowledgements of the oldest pending batch (pending while there is none).
pub(super) async fn front_acks(window: &mut Option<Box<Window>>) -> Vec<Result<Ack, Refusal>> {
    std::future::poll_fn(
        |cx| match window.as_mut().and_then(|w| w.pending.front_mut()) {
            Some(b) => b.acks.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        },
    )
    .await
}

/// Publications in a batch, as the window counts them.
fn count(packets: &[Publish]) -> u32 {
    u32::try_from(packets.len()).unwrap_or(u32::MAX)
}
