//! Appending to a namespace's JetStream stream: each item is published in the order given and
//! acknowledged by JetStream (stored on a quorum of the stream's replicas) before its
//! publisher is answered. Publishes are pipelined: acknowledgements are awaited beside the
//! sending, bounded by the JetStream context's in-flight limit.

use std::{sync::atomic::Ordering, sync::Arc, time::Duration};

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use tickwire_stream::{AppendDone, Appended, SharedAppender, SharedItem, StreamError};
use tokio::sync::mpsc;

use crate::{codec, stream::Shared};

/// Publish requests waiting for the sending task before the hub's writer waits.
const QUEUE: usize = 1024;
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
        shared.cluster.handle.spawn(send_loop(shared.clone(), rx));
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
    subject: String,
    key: String,
    data: bytes::Bytes,
}

async fn send_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let js = shared.cluster.js.clone();
    let prefix = shared.cluster.config.prefix.clone();
    while let Some(Job { items, done }) = rx.recv().await {
        if let Some(why) = shared.cluster.unreachable() {
            let err = StreamError::storage(&shared.namespace, why);
            done(items.iter().map(|_| Err(err.clone())).collect());
            continue;
        }
        let mut sent = Vec::with_capacity(items.len());
        for it in items {
            let subject = codec::subject(&prefix, &it.channel);
            let key = it
                .msg_id
                .as_deref()
                .map(|id| codec::dedup_key(&it.channel, id));
            let retry = key.as_ref().map(|k| Retry {
                subject: subject.clone(),
                key: k.clone(),
                data: it.data.clone(),
            });
            let mut publish = Publish::build().payload(it.data);
            if let Some(k) = key {
                publish = publish.message_id(k);
            }
            sent.push((js.send_publish(subject, publish).await, retry));
        }
        tokio::spawn(complete(shared.clone(), js.clone(), sent, done));
    }
}

type Sent = (
    Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>,
    Option<Retry>,
);

/// Waits for each item's acknowledgement, in order, and reports them together.
async fn complete(shared: Arc<Shared>, js: jetstream::Context, sent: Vec<Sent>, done: AppendDone) {
    let mut out = Vec::with_capacity(sent.len());
    for (s, retry) in sent {
        let mut r = match s {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        if let Some(retry) = &retry {
            let mut tries = 0;
            while tries < IN_PROCESS_RETRIES && r.as_ref().is_err_and(not_taken_yet) {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                r = match js
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
            }
        }
        out.push(match r {
            Ok(ack) => {
                shared.known_end.fetch_max(ack.sequence, Ordering::AcqRel);
                Ok(Appended {
                    offset: codec::offset_of(ack.sequence),
                    duplicate: ack.duplicate,
                })
            }
            Err(e) => Err(StreamError::storage(
                &shared.namespace,
                match shared.cluster.unreachable() {
                    Some(why) => why,
                    None => format!("JetStream did not acknowledge the publish ({e}); it may or may not be stored: retry with the same msg_id"),
                },
            )),
        });
    }
    done(out);
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
