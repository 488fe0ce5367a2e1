//! Reads of stored messages without a consumer: JetStream's batched direct get (ADR-31,
//! NATS 2.11+), answered by any replica of the stream, and the leader's message get to check a
//! replica's "nothing more" (a follower may lag the leader by a few writes; a read must never
//! report a gap that is only that lag).

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use tickwire_model::{Offset, Publication};

use crate::{codec, ClusterError};

/// The most messages one direct get asks for.
pub(crate) const MAX_BATCH: usize = 1000;

/// What one batched direct get returned.
pub(crate) struct DirectBatch {
    pub publications: Vec<Publication>,
    /// The replica said it has more matching messages after these.
    pub more: bool,
}

/// Up to `batch` messages from stream sequence `seq` on (only subject `filter` if given), as
/// one replica has them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn batch(
    client: &async_nats::Client,
    stream: &str,
    prefix: &str,
    seq: u64,
    batch: usize,
    max_bytes: usize,
    filter: Option<&str>,
    timeout: Duration,
) -> Result<DirectBatch, ClusterError> {
    let what = || format!("direct get on {stream}");
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ClusterError::js(what(), e))?;
    let mut req = serde_json::json!({
        "seq": seq.max(1),
        "batch": batch.clamp(1, MAX_BATCH),
        "max_bytes": max_bytes.max(1),
    });
    if let Some(f) = filter {
        req["next_by_subj"] = serde_json::Value::from(f);
    }
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{stream}"),
            inbox,
            Bytes::from(req.to_string()),
        )
        .await
        .map_err(|e| ClusterError::js(what(), e))?;
    let mut out = DirectBatch {
        publications: Vec::new(),
        more: false,
    };
    loop {
        let msg = match tokio::time::timeout(timeout, sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(ClusterError::js(what(), "the reply subscription closed")),
            Err(_) => {
                return Err(ClusterError::js(
                    what(),
                    format!("no answer within {timeout:?} (is the stream's direct access on, and are the NATS servers 2.11 or newer?)"),
                ))
            }
        };
        let header = |name: &str| -> Option<String> {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        match msg.status.map(|s| s.as_u16()) {
            // End of batch: how many matching messages the replica still has.
            Some(204) => {
                out.more = header("Nats-Num-Pending")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > 0);
                break;
            }
            Some(404) => break,
            Some(code) if code != 200 => {
                let why = msg.description.clone().unwrap_or_default();
                return Err(ClusterError::js(what(), format!("status {code} {why}")));
            }
            _ => {}
        }
        let (Some(subject), Some(seq)) = (
            header("Nats-Subject"),
            header("Nats-Sequence").and_then(|s| s.parse::<u64>().ok()),
        ) else {
            return Err(ClusterError::js(
                what(),
                "a reply without Nats-Subject or Nats-Sequence",
            ));
        };
        let ts = header("Nats-Time-Stamp")
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(codec::nanos)
            .unwrap_or(0);
        let id = header(codec::MSG_ID);
        if let Some(p) = codec::publication(
            prefix,
            &subject,
            seq,
            ts,
            id.as_deref(),
            msg.payload.clone(),
        ) {
            out.publications.push(p);
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(out)
}

/// The first message at or after stream sequence `seq` (matching `filter`), from the stream
/// leader: read-after-write consistent, one message per request.
pub(crate) async fn leader_next(
    stream: &jetstream::stream::Stream,
    prefix: &str,
    seq: u64,
    filter: &str,
) -> Result<Option<Publication>, ClusterError> {
    let got = stream
        .raw_message_builder()
        .sequence(seq.max(1))
        .next_by_subject(filter.to_string())
        .send()
        .await;
    match got {
        Ok(m) => {
            let id = m.headers.get(codec::MSG_ID).map(|v| v.as_str().to_string());
            Ok(codec::publication(
                prefix,
                m.subject.as_str(),
                m.sequence,
                codec::nanos(m.time),
                id.as_deref(),
                m.payload,
            ))
        }
        Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(ClusterError::js(
            format!("leader get on {}", stream.cached_info().config.name),
            e,
        )),
    }
}

/// Messages in `[from, until)` (one subject if `filter`), at most `max`, as far as one read
/// gets; where the next read continues. A replica's "no more" is believed only once the leader
/// confirms there is nothing before `until`: a lagging replica otherwise looks like a gap.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_range(
    client: &async_nats::Client,
    leader: &jetstream::stream::Stream,
    stream: &str,
    prefix: &str,
    all_subjects: &str,
    from: Offset,
    until: Offset,
    max: usize,
    max_bytes: usize,
    filter: Option<&str>,
    timeout: Duration,
) -> Result<(Vec<Publication>, Offset), ClusterError> {
    if from >= until {
        return Ok((Vec::new(), from));
    }
    let got = batch(
        client,
        stream,
        prefix,
        codec::seq_of(from),
        max,
        max_bytes,
        filter,
        timeout,
    )
    .await?;
    let mut pubs = got.publications;
    let crossed = pubs.last().is_some_and(|p| p.offset >= until);
    pubs.retain(|p| p.offset < until);
    if crossed {
        return Ok((pubs, until));
    }
    if got.more {
        let next = pubs.last().map_or(from, |p| p.offset + 1);
        return Ok((pubs, next.max(from)));
    }
    let after = pubs.last().map_or(from, |p| p.offset + 1);
    if after >= until {
        return Ok((pubs, until));
    }
    match leader_next(
        leader,
        prefix,
        codec::seq_of(after),
        filter.unwrap_or(all_subjects),
    )
    .await?
    {
        Some(p) if p.offset < until => {
            // The replica lagged: the leader's message is the next one; go on from it.
            let next = p.offset + 1;
            pubs.push(p);
            Ok((pubs, next))
        }
        _ => Ok((pubs, until)),
    }
}
