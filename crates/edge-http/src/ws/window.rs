//! The publish window: publishes handed to the hub, answered in order as they become
//! durable, with the replies of commands answered off the task kept in their place.

use super::*;

impl Conn {
    /// Puts a command answered off this task into the window, after the publishes read
    /// before it.
    pub(super) fn later(&mut self, reply: impl Future<Output = Bytes> + Send + 'static) {
        self.close_batch_into_window();
        self.in_flight += 1;
        self.window.push_back(PublishReply::Later(Box::pin(reply)));
    }

    /// `edit` and `delete`: checked against the target message and stored off this task,
    /// answered like a publish (in order with the publishes around it).
    pub(super) fn amend(
        &mut self,
        id: u64,
        channel: Channel,
        offset: u64,
        change: Change,
        msg_id: Option<String>,
    ) {
        let done = self.conn.amend(channel.clone(), offset, change, msg_id);
        let conn_refused = self.conn.gateway().clone();
        self.later(async move {
            match done.await {
                Ok(ack) => encode_publish_ok(id, channel.as_str(), ack.offset, ack.duplicate),
                Err(r) => {
                    conn_refused.metrics().edge(WEBSOCKET).rejected();
                    refusal_frame(id, &r)
                }
            }
        });
    }

    pub(super) fn refuse(&self, id: u64, r: &Refusal) -> Bytes {
        self.conn.refused();
        encode_error(
            Some(id),
            r.code,
            &hardening::public_reason(r.code, &r.reason),
        )
    }

    /// Marks where the publishes read so far end, so a refusal read after them is answered
    /// after their acknowledgements. They are handed to the hub by [`Conn::submit`].
    pub(super) fn close_batch_into_window(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.window.push_back(PublishReply::Unsent(batch));
    }

    /// Hands the publishes read in this turn to the hub (waiting only while a namespace
    /// writer's queue is full) and puts their acknowledgements in the window.
    pub(super) async fn submit(&mut self) {
        // Batches closed early by a refusal, then the rest, in order.
        for entry in self.window.iter_mut() {
            if let PublishReply::Unsent(batch) = entry {
                let (ids, checked) = split(std::mem::take(batch).into_iter());
                self.in_flight += checked.len();
                let acks: AckFuture = Box::pin(self.conn.enqueue(checked).await);
                *entry = PublishReply::Pending { ids, acks };
            }
        }
        if !self.batch.is_empty() {
            // Drained, not taken: the batch keeps its allocation for the next turn while the
            // client keeps publishing (freed once the socket has nothing to read: `ws::run`).
            // Growing it anew each turn asked glibc for ever larger chunks, each of which
            // first consolidates the small chunks other threads freed.
            let (ids, checked) = split(self.batch.drain(..));
            self.in_flight += checked.len();
            let acks = Box::pin(self.conn.enqueue(checked).await);
            self.window.push_back(PublishReply::Pending { ids, acks });
        }
    }

    /// Whether the front of the window waits for work off this task (a batch's
    /// acknowledgements or a reply computed elsewhere): the connection loop's select asks
    /// [`poll_front`] only then.
    pub(super) fn front_waits(&self) -> bool {
        matches!(
            self.window.front(),
            Some(
                PublishReply::Pending { .. } | PublishReply::Later(_) | PublishReply::Subscribed(_)
            )
        )
    }

    /// What the front of the window produced, moved to the output in its place.
    pub(super) fn on_front(&mut self, front: Front) {
        match front {
            Front::Acks(acks) => self.answer(acks),
            Front::Reply(reply) => {
                if let Some(PublishReply::Subscribed(_)) = self.window.pop_front() {
                    self.held_subscribes -= 1;
                }
                self.in_flight = self.in_flight.saturating_sub(1);
                self.out.replies.push_back(text(reply));
            }
        }
    }

    /// The oldest batch's acknowledgements arrived: its replies, in order.
    pub(super) fn answer(&mut self, acks: Vec<Result<Ack, Refusal>>) {
        // Only a pending batch is taken: anything else in front keeps its place.
        let Some(PublishReply::Pending { ids, .. }) = self
            .window
            .pop_front_if(|r| matches!(r, PublishReply::Pending { .. }))
        else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(ids.len());
        let mut acks = acks.into_iter();
        for (id, channel) in ids {
            let reply = match acks.next() {
                Some(Ok(ack)) => self.published(id, &channel, &ack),
                Some(Err(r)) => self.refuse_frame(id, &r),
                None => self.error_frame(Some(id), ErrorCode::Internal, "no result from the hub"),
            };
            self.out.replies.push_back(reply);
        }
    }

    /// Moves refusals that reached the front of the window to the output.
    pub(super) fn flush_window(&mut self) {
        while let Some(PublishReply::Ready(_)) = self.window.front() {
            if let Some(PublishReply::Ready(frame)) = self.window.pop_front() {
                self.out.replies.push_back(frame);
            }
        }
    }
}

fn split(
    batch: impl ExactSizeIterator<Item = (u64, Channel, Checked)>,
) -> (Vec<(u64, Channel)>, Vec<Checked>) {
    let mut ids = Vec::with_capacity(batch.len());
    let mut checked = Vec::with_capacity(batch.len());
    for (id, ch, c) in batch {
        ids.push((id, ch));
        checked.push(c);
    }
    (ids, checked)
}
