//! Appending to a namespace's JetStream stream: each item is published in the order given and
//! acknowledged by JetStream (stored on a quorum of the stream's replicas) before its
//! publisher is answered.
//!
//! Publishes are pipelined on the client's connection as plain NATS publishes with a reply
//! subject of this appender's own (`<inbox>.<n>`, one subscription for all of them), and one
//! task matches the acknowledgements to the items by `n`. The client's JetStream publish does
//! the same per message with a fresh inbox, a one-shot channel, a map entry, a timer and a
//! generic JSON decode each; on a node publishing at full speed that was half of its CPU
//! (bench/results/cluster.md), and that CPU is taken from the NATS servers sharing the host.

use std::{collections::VecDeque, sync::atomic::Ordering, sync::Arc, time::Duration};

use async_nats::{
    header::NATS_MESSAGE_ID,
    jetstream::{self, message::PublishMessage as Publish},
    HeaderMap, StatusCode, Subject,
};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tickwire_stream::{AppendDone, Appended, SharedAppender, SharedItem, StreamError};
use tokio::{sync::mpsc, time::Instant};

use crate::{codec, stream::Shared};

/// Publish requests waiting for the sending task before the hub's writer waits.
const QUEUE: usize = 1024;
/// Items published and not yet acknowledged, at most. The client buffers 65,536 messages per
/// subscription and drops what overflows: every acknowledgement the reply subscription can
/// hold is for an item counted here, so it never overflows.
const IN_FLIGHT: usize = 16_384;
/// Acknowledgements handled at once when they are already there.
const ACK_BURST: usize = 1024;
/// JetStream answers "duplicate message id is in process" (error 10158) while the first copy
/// of an id published on another node is still being replicated; the retry gets the first
/// copy's sequence once it is stored.
const IN_PROCESS: u64 = 10158;
/// Retries of a keyed publish JetStream did not take yet: "in process" (above), or no stream
/// answering on its subject (no responders), which happens while a just-created stream of a
/// starting cluster is not yet reachable from this node. No responders means nothing stored,
/// and the msg_id makes the retry a duplicate at worst.
const IN_PROCESS_RETRIES: usize = 100;

struct Job {
    items: Vec<SharedItem>,
    done: AppendDone,
}

/// The writer of a shared namespace.
pub(crate) struct NatsAppender {
    tx: mpsc::Sender<Job>,
    namespace: String,
}

impl NatsAppender {
    pub fn spawn(shared: &Arc<Shared>) -> NatsAppender {
        let (tx, rx) = mpsc::channel(QUEUE);
        shared.cluster.handle.spawn(run(shared.clone(), rx));
        NatsAppender {
            tx,
            namespace: shared.namespace.clone(),
        }
    }
}

impl SharedAppender for NatsAppender {
    fn append(&self, items: Vec<SharedItem>, done: AppendDone) {
        // Called from the hub's writer thread (never a runtime thread): waiting here is the
        // backpressure that keeps the queue bounded.
        if let Err(e) = self.tx.blocking_send(Job { items, done }) {
            let Job { items, done } = e.0;
            let err = StreamError::storage(&self.namespace, "the cluster publisher stopped");
            done(items.iter().map(|_| Err(err.clone())).collect());
        }
    }
}

/// What an item needs to be sent again (only items with a msg_id are ever retried).
struct Retry {
    subject: Subject,
    key: String,
    data: bytes::Bytes,
}

/// One published item's state.
enum Slot {
    /// Published; its acknowledgement has not come yet.
    Waiting(Option<Box<Retry>>),
    /// Sent again by a retry task, which reports back on its own.
    Retrying,
    Done(Result<Appended, StreamError>),
}

/// One job: its items in order, the first `slots.len()` of them published, with ids
/// `first..first + slots.len()`.
struct Flight {
    first: u64,
    slots: Vec<Slot>,
    unsent: std::vec::IntoIter<SharedItem>,
    waiting: usize,
    retrying: usize,
    /// When the items still waiting time out (the last send plus the ack timeout).
    deadline: Instant,
    done: Option<AppendDone>,
}

impl Flight {
    fn finished(&self) -> bool {
        self.unsent.len() == 0 && self.waiting == 0 && self.retrying == 0
    }
}

/// How an acknowledgement reads.
enum Outcome {
    Stored {
        seq: u64,
        duplicate: bool,
    },
    /// Not taken, and safe to send again when keyed (see [`IN_PROCESS_RETRIES`]).
    NotTaken(String),
    Failed(String),
}

#[derive(Deserialize)]
struct AckBody {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

fn outcome(m: &async_nats::Message) -> Outcome {
    match m.status {
        Some(StatusCode::NO_RESPONDERS) => {
            return Outcome::NotTaken("no stream answered on the subject (no responders)".into())
        }
        Some(s) if m.payload.is_empty() => {
            return Outcome::Failed(format!(
                "status {s}{}",
                m.description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ))
        }
        _ => {}
    }
    match serde_json::from_slice::<AckBody>(&m.payload) {
        Ok(AckBody { error: Some(e), .. }) if e.err_code == IN_PROCESS => {
            Outcome::NotTaken(e.description)
        }
        Ok(AckBody { error: Some(e), .. }) => Outcome::Failed(format!(
            "JetStream refused it: {} (code {}, error code {})",
            e.description, e.code, e.err_code
        )),
        Ok(AckBody { seq, duplicate, .. }) if seq > 0 => Outcome::Stored { seq, duplicate },
        Ok(_) => Outcome::Failed("an acknowledgement without a sequence".into()),
        Err(e) => Outcome::Failed(format!("an acknowledgement that does not parse ({e})")),
    }
}

/// The task that publishes a namespace's items and matches their acknowledgements.
struct Publisher {
    shared: Arc<Shared>,
    client: async_nats::Client,
    prefix: String,
    /// `<inbox>.` : the reply subject of item `n` is this followed by `n`.
    reply_base: String,
    timeout: Duration,
    next_id: u64,
    flights: VecDeque<Flight>,
    /// Items in the `Waiting` state, over every flight.
    outstanding: usize,
    retried_tx: mpsc::UnboundedSender<(u64, Result<Appended, StreamError>)>,
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let client = shared.cluster.client.clone();
    let inbox = client.new_inbox();
    // Subscribed before the first publish on the same connection, so no reply can come first;
    // the client subscribes again by itself after a reconnect.
    let mut acks = match client.subscribe(format!("{inbox}.*")).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(namespace = %shared.namespace, error = %e, "cannot subscribe to JetStream acknowledgements; every publish of this namespace fails");
            None
        }
    };
    let (retried_tx, mut retried_rx) = mpsc::unbounded_channel();
    let mut p = Publisher {
        prefix: shared.cluster.config.prefix.clone(),
        timeout: Duration::from_millis(shared.cluster.config.ack_timeout_ms.max(100)),
        shared,
        client,
        reply_base: format!("{inbox}."),
        next_id: 0,
        flights: VecDeque::new(),
        outstanding: 0,
        retried_tx,
    };
    let mut closed = false;
    loop {
        p.send_some(acks.is_some()).await;
        p.complete_front();
        if closed && p.flights.is_empty() {
            return;
        }
        let sending = p.flights.back().is_some_and(|f| f.unsent.len() > 0);
        let can_take = !closed && !sending && p.outstanding < IN_FLIGHT;
        let deadline = p.next_deadline();
        tokio::select! {
            biased;
            m = async { acks.as_mut()?.next().await }, if acks.is_some() => match m {
                Some(m) => {
                    p.on_ack(&m);
                    // Whatever else has come, without another turn of the loop and its timer.
                    for _ in 0..ACK_BURST {
                        match acks.as_mut().and_then(|a| a.next().now_or_never()) {
                            Some(Some(m)) => p.on_ack(&m),
                            _ => break,
                        }
                    }
                }
                None => {
                    // The client is gone: nothing more will be acknowledged.
                    acks = None;
                    p.fail_waiting("the NATS client closed");
                }
            },
            Some((id, r)) = retried_rx.recv() => p.on_retried(id, r),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => p.expire(),
            job = rx.recv(), if can_take => match job {
                Some(job) => p.take(job),
                None => closed = true,
            },
        }
    }
}

impl Publisher {
    fn take(&mut self, Job { items, done }: Job) {
        let mut f = Flight {
            first: self.next_id,
            slots: Vec::with_capacity(items.len()),
            unsent: Vec::new().into_iter(),
            waiting: 0,
            retrying: 0,
            deadline: Instant::now() + self.timeout,
            done: Some(done),
        };
        match self.shared.cluster.unreachable() {
            Some(why) => {
                let err = StreamError::storage(&self.shared.namespace, why);
                f.slots = items.iter().map(|_| Slot::Done(Err(err.clone()))).collect();
            }
            None => f.unsent = items.into_iter(),
        }
        self.next_id += f.slots.len() as u64 + f.unsent.len() as u64;
        self.flights.push_back(f);
    }

    /// Publishes the newest flight's items while the window allows.
    async fn send_some(&mut self, can_ack: bool) {
        let Some(f) = self.flights.back_mut() else {
            return;
        };
        let mut sent = false;
        while self.outstanding < IN_FLIGHT {
            let Some(it) = f.unsent.next() else { break };
            let id = f.first + f.slots.len() as u64;
            // A subject clones without copying: kept for a keyed item's retry.
            let subject = Subject::from(codec::subject(&self.prefix, &it.channel));
            let mut reply = String::with_capacity(self.reply_base.len() + 20);
            reply.push_str(&self.reply_base);
            reply.push_str(itoa::Buffer::new().format(id));
            let (r, retry) = match it.msg_id.as_deref() {
                _ if !can_ack => (
                    Err("cannot receive JetStream acknowledgements".to_string()),
                    None,
                ),
                Some(msg_id) => {
                    let key = codec::dedup_key(&it.channel, msg_id);
                    let mut h = HeaderMap::new();
                    h.insert(NATS_MESSAGE_ID, key.as_str());
                    let r = self
                        .client
                        .publish_with_reply_and_headers(subject.clone(), reply, h, it.data.clone())
                        .await
                        .map_err(|e| e.to_string());
                    let retry = Retry {
                        subject,
                        key,
                        data: it.data,
                    };
                    (r, Some(Box::new(retry)))
                }
                None => (
                    self.client
                        .publish_with_reply(subject, reply, it.data)
                        .await
                        .map_err(|e| e.to_string()),
                    None,
                ),
            };
            match r {
                Ok(()) => {
                    f.slots.push(Slot::Waiting(retry));
                    f.waiting += 1;
                    self.outstanding += 1;
                    sent = true;
                }
                Err(e) => f.slots.push(Slot::Done(Err(StreamError::storage(
                    &self.shared.namespace,
                    format!("the publish was not sent ({e})"),
                )))),
            }
        }
        if sent {
            f.deadline = Instant::now() + self.timeout;
        }
    }

    /// Answers the finished flights at the front, in call order.
    fn complete_front(&mut self) {
        while self.flights.front().is_some_and(Flight::finished) {
            let Some(mut f) = self.flights.pop_front() else {
                return;
            };
            let out = f
                .slots
                .drain(..)
                .map(|s| match s {
                    Slot::Done(r) => r,
                    // Unreachable for a finished flight; answered as not acknowledged.
                    Slot::Waiting(_) | Slot::Retrying => Err(self.not_acknowledged("lost")),
                })
                .collect();
            if let Some(done) = f.done.take() {
                done(out);
            }
        }
    }

    /// Which flight and slot item `id` is, while it has a slot.
    fn locate(&self, id: u64) -> Option<(usize, usize)> {
        let fi = self
            .flights
            .iter()
            .position(|f| id >= f.first && id < f.first + f.slots.len() as u64)?;
        let i = usize::try_from(id - self.flights[fi].first).ok()?;
        Some((fi, i))
    }

    fn on_ack(&mut self, m: &async_nats::Message) {
        let Some(id) = m
            .subject
            .as_str()
            .strip_prefix(self.reply_base.as_str())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return;
        };
        // None: an item that timed out already (its publisher was told it may be stored).
        let Some((fi, i)) = self.locate(id) else {
            return;
        };
        let f = &mut self.flights[fi];
        let Slot::Waiting(retry) = &mut f.slots[i] else {
            return;
        };
        let result = match outcome(m) {
            Outcome::Stored { seq, duplicate } => Ok((seq, duplicate)),
            Outcome::NotTaken(why) => match retry.take() {
                Some(retry) => {
                    f.slots[i] = Slot::Retrying;
                    f.waiting -= 1;
                    f.retrying += 1;
                    self.outstanding -= 1;
                    self.spawn_resend(id, *retry);
                    return;
                }
                None => Err(why),
            },
            Outcome::Failed(why) => Err(why),
        };
        f.waiting -= 1;
        self.outstanding -= 1;
        f.slots[i] = Slot::Done(match result {
            Ok((seq, duplicate)) => {
                self.shared.known_end.fetch_max(seq, Ordering::AcqRel);
                Ok(appended(seq, duplicate))
            }
            Err(why) => Err(not_acknowledged(&self.shared.namespace, &why)),
        });
    }

    /// Sends item `id` again on a task of its own, which reports back through `retried_tx`.
    fn spawn_resend(&self, id: u64, retry: Retry) {
        let js = self.shared.cluster.js.clone();
        let cluster = self.shared.cluster.clone();
        let namespace = self.shared.namespace.clone();
        let tx = self.retried_tx.clone();
        self.shared.cluster.handle.spawn(async move {
            let r = match resend(&js, retry).await {
                Ok(ack) => Ok(appended(ack.sequence, ack.duplicate)),
                Err(e) => Err(match cluster.unreachable() {
                    Some(why) => StreamError::storage(&namespace, why),
                    None => not_acknowledged(&namespace, &e.to_string()),
                }),
            };
            let _ = tx.send((id, r));
        });
    }

    fn on_retried(&mut self, id: u64, r: Result<Appended, StreamError>) {
        if let Ok(a) = &r {
            self.shared
                .known_end
                .fetch_max(codec::seq_of(a.offset), Ordering::AcqRel);
        }
        if let Some((fi, i)) = self.locate(id) {
            let f = &mut self.flights[fi];
            if matches!(f.slots[i], Slot::Retrying) {
                f.slots[i] = Slot::Done(r);
                f.retrying -= 1;
            }
        }
    }

    /// The earliest time an item still waiting times out.
    fn next_deadline(&self) -> Option<Instant> {
        self.flights
            .iter()
            .filter(|f| f.waiting > 0)
            .map(|f| f.deadline)
            .min()
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let err = self.not_acknowledged("no acknowledgement in time");
        for f in self.flights.iter_mut().filter(|f| f.deadline <= now) {
            expire_waiting(f, &err, &mut self.outstanding);
        }
    }

    fn fail_waiting(&mut self, why: &str) {
        let err = self.not_acknowledged(why);
        for f in self.flights.iter_mut() {
            expire_waiting(f, &err, &mut self.outstanding);
        }
    }

    fn not_acknowledged(&self, why: &str) -> StreamError {
        match self.shared.cluster.unreachable() {
            Some(why) => StreamError::storage(&self.shared.namespace, why),
            None => not_acknowledged(&self.shared.namespace, why),
        }
    }
}

fn expire_waiting(f: &mut Flight, err: &StreamError, outstanding: &mut usize) {
    for s in f.slots.iter_mut() {
        if matches!(s, Slot::Waiting(_)) {
            *s = Slot::Done(Err(err.clone()));
            f.waiting -= 1;
            *outstanding -= 1;
        }
    }
}

fn appended(seq: u64, duplicate: bool) -> Appended {
    Appended {
        offset: codec::offset_of(seq),
        duplicate,
    }
}

fn not_acknowledged(namespace: &str, why: &str) -> StreamError {
    StreamError::storage(
        namespace,
        format!("JetStream did not acknowledge the publish ({why}); it may or may not be stored: retry with the same msg_id"),
    )
}

/// Sends a keyed item again until JetStream takes it (or answers anything but "not yet").
async fn resend(
    js: &jetstream::Context,
    retry: Retry,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    let mut tries = 0;
    loop {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = match js
            .send_publish(
                retry.subject.clone(),
                Publish::build()
                    .payload(retry.data.clone())
                    .message_id(retry.key.clone()),
            )
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        if tries >= IN_PROCESS_RETRIES || !r.as_ref().is_err_and(not_taken_yet) {
            return r;
        }
    }
}

/// JetStream did not take the publish yet and a retry is safe ([`IN_PROCESS_RETRIES`]).
fn not_taken_yet(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error;
    if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
        return true;
    }
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| j.error_code().0 == IN_PROCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(payload: &str, status: Option<StatusCode>) -> async_nats::Message {
        async_nats::Message {
            subject: "_INBOX.x.1".into(),
            reply: None,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn acknowledgements_read_as_stored_not_taken_or_failed() {
        match outcome(&reply(r#"{"stream":"tw-quotes","seq":42}"#, None)) {
            Outcome::Stored { seq, duplicate } => assert_eq!((seq, duplicate), (42, false)),
            _ => panic!("a plain ack is stored"),
        }
        match outcome(&reply(
            r#"{"stream":"tw-quotes","seq":7,"duplicate":true,"domain":"d"}"#,
            None,
        )) {
            Outcome::Stored { seq, duplicate } => assert_eq!((seq, duplicate), (7, true)),
            _ => panic!("a duplicate is stored at the first copy's sequence"),
        }
        let in_process = r#"{"error":{"code":503,"err_code":10158,"description":"duplicate message id is in process"}}"#;
        assert!(matches!(
            outcome(&reply(in_process, None)),
            Outcome::NotTaken(_)
        ));
        assert!(matches!(
            outcome(&reply("", Some(StatusCode::NO_RESPONDERS))),
            Outcome::NotTaken(_)
        ));
        let refused =
            r#"{"error":{"code":400,"err_code":10054,"description":"maximum messages exceeded"}}"#;
        match outcome(&reply(refused, None)) {
            Outcome::Failed(why) => assert!(why.contains("maximum messages exceeded"), "{why}"),
            _ => panic!("a JetStream error is a failure"),
        }
        for bad in ["", "{", "null", r#"{"seq":0}"#, r#"{"seq":"1"}"#, "\u{0}"] {
            assert!(
                matches!(outcome(&reply(bad, None)), Outcome::Failed(_)),
                "{bad:?} must not read as stored"
            );
        }
        assert!(matches!(
            outcome(&reply("", Some(StatusCode::TIMEOUT))),
            Outcome::Failed(_)
        ));
    }
}
