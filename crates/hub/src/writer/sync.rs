//! The namespace's fsync thread: group commit across writer batches.

use std::{sync::Arc, time::Instant};

use tickwire_stream::DurabilityPoint;

use super::{dispatch_stream, Reply, WriteReply};
use crate::{
    hub::NamespaceRt,
    node::{NodeCache, Registry},
    HubError, Message,
};

/// Most sync jobs queued behind a running fsync before the writer waits (backpressure).
pub(super) const SYNC_QUEUE: usize = 1024;

/// A sync point and what waits for it.
pub(crate) struct SyncMsg {
    pub(super) point: Box<dyn DurabilityPoint>,
    pub(super) replies: Vec<(Reply, WriteReply)>,
    /// Stream messages under `fsync = always`: delivered only once durable.
    pub(super) stream: Vec<Arc<Message>>,
}

pub(super) fn fail_replies(replies: Vec<(Reply, WriteReply)>, err: &HubError) {
    for (reply, answer) in replies {
        let _ = reply.send(WriteReply {
            acks: answer.acks.into_iter().map(|_| Err(err.clone())).collect(),
            timing: answer.timing,
        });
    }
}

/// The fsync thread of one namespace: group commit across writer batches. Whatever queued up
/// while one fsync ran is covered by the next single fsync, then completed in order.
pub(super) struct Syncer {
    pub(super) ns: Arc<NamespaceRt>,
    pub(super) registry: Arc<Registry>,
    pub(super) ring_cap: usize,
}

impl Syncer {
    pub(super) fn run(self, rx: std::sync::mpsc::Receiver<SyncMsg>) {
        let mut jobs: Vec<SyncMsg> = Vec::new();
        let mut nodes = NodeCache::default();
        while let Ok(first) = rx.recv() {
            jobs.push(first);
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
            }
            let mut point: Option<Box<dyn DurabilityPoint>> = None;
            let mut waiting = Vec::with_capacity(jobs.len());
            for SyncMsg {
                point: newest,
                replies,
                stream,
            } in jobs.drain(..)
            {
                // Points arrive oldest first: the newest covers every earlier offset.
                point = Some(match point.take() {
                    Some(older) => {
                        let mut p = newest;
                        p.absorb(older);
                        p
                    }
                    None => newest,
                });
                waiting.push((replies, stream));
            }
            let mut synced = (0, 0);
            let result = match point.map(|p| {
                let t = Instant::now();
                synced.0 = tickwire_model::clock::now_nanos();
                let r = p.run();
                synced.1 = tickwire_model::clock::now_nanos();
                self.ns.metrics.fsync.observe(t.elapsed());
                r
            }) {
                Some(Err(e)) => {
                    tracing::error!(namespace = %self.ns.spec.name, error = %e, "fsync failed; the log refuses writes from now on");
                    Err(HubError::from(e))
                }
                _ => Ok(()),
            };
            for (replies, stream) in waiting {
                match &result {
                    Ok(()) => {
                        if !stream.is_empty() {
                            dispatch_stream(
                                &self.ns,
                                &self.registry,
                                &mut nodes,
                                self.ring_cap,
                                &stream,
                            );
                        }
                        for (reply, mut answer) in replies {
                            (answer.timing.fsync_start, answer.timing.fsync_end) = synced;
                            let _ = reply.send(answer);
                        }
                    }
                    Err(e) => fail_replies(replies, e),
                }
            }
        }
    }
}
