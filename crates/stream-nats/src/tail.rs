//! This node's one ordered consumer per namespace, and its look at the stream's state.
//!
//! The consumer (ephemeral, in memory, no acknowledgements; async-nats recreates it at the
//! next sequence when the server loses it) feeds the namespace's window, from which the hub
//! dispatches to every local session: a node never has a consumer per client or per channel,
//! however many it serves.

use std::{sync::atomic::Ordering, sync::Arc, time::Duration};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt;
use tickwire_model::{Offset, Publication};

use crate::{codec, stream::Shared, ClusterError};

/// How often a node looks at each stream's state (its ends, whether it still exists as the
/// same stream, whether JetStream answers at all).
const PROBE_EVERY: Duration = Duration::from_millis(1000);
/// Messages the tail moves into the window at once (whatever is ready, up to this).
const CHUNK: usize = 1024;
/// How long one pull of the tail's consumer waits on the server (its idle heartbeat is half).
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Starts the tail from offset `from` and the probe.
pub(crate) fn spawn(shared: &Arc<Shared>, from: Offset) {
    let handle = shared.cluster.handle.clone();
    handle.spawn(follow(shared.clone(), from));
    handle.spawn(probe(shared.clone()));
}

fn decode(
    shared: &Shared,
    m: &async_nats::jetstream::Message,
) -> Option<(u64, Option<Publication>)> {
    let info = m.info().ok()?;
    let seq = info.stream_sequence;
    let id = m
        .message
        .headers
        .as_ref()
        .and_then(|h| h.get(codec::MSG_ID))
        .map(|v| v.as_str().to_string());
    let p = codec::publication(
        &shared.cluster.config.prefix,
        m.message.subject.as_str(),
        seq,
        codec::nanos(info.published),
        id.as_deref(),
        m.message.payload.clone(),
    );
    Some((seq, p))
}

/// Reads the namespace in order from `from` for as long as the node runs.
async fn follow(shared: Arc<Shared>, from: Offset) {
    let mut next_seq = codec::seq_of(from);
    let mut failures = 0u32;
    loop {
        match follow_once(&shared, &mut next_seq).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(namespace = %shared.namespace, next = codec::offset_of(next_seq), error = %e, "the stream's tail stopped; starting it again");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(failures.min(8)))).await;
    }
}

async fn follow_once(shared: &Arc<Shared>, next_seq: &mut u64) -> Result<(), ClusterError> {
    let what = || format!("tail of {}", shared.stream_name);
    let consumer = shared
        .leader
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: *next_seq,
            },
            // Pulls expire (and idle heartbeats come) this often, so a consumer lost with its
            // NATS server is noticed in seconds: with the client's defaults (30 s pulls, 15 s
            // heartbeats, two misses) a node stopped delivering for up to a minute.
            max_expires: PULL_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::js(what(), e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ClusterError::js(what(), e))?;
    let mut chunks = messages.ready_chunks(CHUNK);
    while let Some(chunk) = chunks.next().await {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut failed = None;
        for m in chunk {
            match m {
                Ok(m) => {
                    match decode(shared, &m) {
                        // The client recreated the consumer from an earlier point (from the
                        // stream's start when it had delivered nothing yet): start it again here
                        // rather than read through what this node has already.
                        Some((seq, _)) if seq < *next_seq => {
                            failed = Some(ClusterError::js(
                            what(),
                            format!("the consumer went back to {seq}; following from {next_seq} again"),
                        ));
                            break;
                        }
                        Some((seq, p)) => {
                            *next_seq = seq + 1;
                            batch.extend(p);
                        }
                        None => {}
                    }
                }
                Err(e) => {
                    failed = Some(ClusterError::js(what(), e));
                    break;
                }
            }
        }
        let end = codec::offset_of(*next_seq);
        shared.cache.lock().extend(batch, end);
        shared.known_end.fetch_max(end, Ordering::AcqRel);
        shared.watermark.advance(end);
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Err(ClusterError::js(
        what(),
        "the consumer's message stream ended",
    ))
}

/// Keeps the stream's ends and health current, and notices a stream that was recreated.
async fn probe(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let got =
            tokio::time::timeout(shared.cluster.request_timeout(), shared.leader.get_info()).await;
        let problem = match got {
            Ok(Ok(info)) => {
                let epoch = codec::nanos(info.created);
                if epoch != shared.epoch.0 {
                    Some(format!(
                        "stream {} was deleted and created again (epoch {:016x}, this node opened {}); restart this node so its offsets and epoch follow the new stream",
                        shared.stream_name, epoch, shared.epoch
                    ))
                } else {
                    shared
                        .known_end
                        .fetch_max(info.state.last_sequence, Ordering::AcqRel);
                    shared.start.store(
                        info.state.first_sequence.saturating_sub(1),
                        Ordering::Release,
                    );
                    None
                }
            }
            Ok(Err(e)) => Some(format!(
                "JetStream does not answer for stream {}: {e}",
                shared.stream_name
            )),
            Err(_) => Some(format!(
                "JetStream did not answer for stream {} within {:?}",
                shared.stream_name,
                shared.cluster.request_timeout()
            )),
        };
        let mut cur = shared.probe_error.lock();
        if *cur != problem {
            match &problem {
                Some(p) => tracing::warn!(namespace = %shared.namespace, "cluster: {p}"),
                None => {
                    tracing::info!(namespace = %shared.namespace, "cluster: stream reachable again")
                }
            }
            *cur = problem;
        }
    }
}

/// The newest message of every channel with an offset below `end` (where the tail starts),
/// through a consumer that delivers the last message per subject: what a node needs of a
/// state namespace at start, without replaying its history.
pub(crate) fn latest_values(
    shared: &Arc<Shared>,
    end: Offset,
) -> Result<Vec<Publication>, ClusterError> {
    if end == 0 {
        return Ok(Vec::new());
    }
    let s = shared.clone();
    let timeout = Duration::from_secs(60);
    shared
        .cluster
        .run("reading the newest values", timeout, async move {
            let what = || format!("newest values of {}", s.stream_name);
            let consumer = s
                .leader
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::LastPerSubject,
                    // JetStream wants the subjects spelled out for this policy.
                    filter_subject: s.all_subjects.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError::js(what(), e))?;
            // The read ends on the server's own count of what is left to deliver (here, and
            // after each message), never on a pause: a JetStream slow for a moment (a node
            // starting beside a fresh cluster) must not start this node with values missing.
            // A read that never ends is bounded by `timeout` and is an error, not a start.
            if consumer.cached_info().num_pending == 0 {
                return Ok(Vec::new());
            }
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| ClusterError::js(what(), e))?;
            let mut out = Vec::new();
            let last_seq = codec::seq_of(end.saturating_sub(1));
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| ClusterError::js(what(), e))?;
                if let Some((seq, p)) = decode(&s, &m) {
                    // Published after this node took `end`: the tail delivers it.
                    if seq > last_seq {
                        break;
                    }
                    out.extend(p);
                    // The message at the stream's last sequence is the newest of its subject,
                    // so it comes last.
                    if seq == last_seq {
                        break;
                    }
                }
                // If that message was deleted, the server's count says when all are in.
                if m.info().is_ok_and(|i| i.pending == 0) {
                    break;
                }
            }
            Ok(out)
        })?
}
