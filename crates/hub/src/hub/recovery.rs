//! A namespace's channel state rebuilt from its stream when the hub opens.

use super::*;

pub(super) type Recovered =
    HashMap<Channel, (Option<Arc<Message>>, VecDeque<Arc<Message>>, Offset)>;

/// Replays a namespace's stream into per-channel state.
pub(super) fn recover(
    stream: &dyn Stream,
    class: Class,
    ring_cap: usize,
    dedup: &mut Dedup,
    from: Offset,
) -> Result<Recovered, HubError> {
    // Publications while replaying, messages only for what survives: most records are
    // replaced by later ones of their channel.
    type Replayed = (Option<Publication>, VecDeque<Publication>, Offset);
    let mut out: HashMap<Channel, Replayed> = HashMap::new();
    let mut cursor = from.max(stream.start_offset());
    let end = stream.next_offset();
    let mut skipped = 0u64;
    let mut lost = 0u64;
    while cursor < end {
        let batch = stream.read(cursor, 8192, 8 << 20)?;
        if batch.next <= cursor {
            break;
        }
        cursor = batch.next;
        skipped += batch.skipped;
        lost += batch.lost;
        for p in batch.publications {
            if let Some(id) = &p.msg_id {
                dedup.insert(p.channel.clone(), id.clone(), p.offset);
            }
            let channel = p.channel.clone();
            let offset = p.offset;
            let e = out
                .entry(channel)
                .or_insert_with(|| (None, VecDeque::new(), offset));
            match class {
                Class::State => e.0 = Some(p),
                Class::Stream => {
                    e.1.push_back(p);
                    if e.1.len() > ring_cap {
                        if let Some(old) = e.1.pop_front() {
                            e.2 = old.offset + 1;
                        }
                    }
                }
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(
            namespace = stream.namespace(),
            skipped,
            "log records this version cannot read were skipped during recovery"
        );
    }
    if lost > 0 {
        // Placeholders stay until retention removes them; say so on every start, not only on
        // the one that found the damage.
        tracing::warn!(
            namespace = stream.namespace(),
            lost,
            "the log holds records lost to corruption (found by an earlier recovery, bytes in \
             its quarantine directory); they are passed over"
        );
    }
    // The values that stay in memory are slices of the stream's read chunks: give each its
    // own bytes, or every kept value would pin its chunk (with many channels, most of the log).
    let keep = |mut p: Publication| {
        p.data = Bytes::copy_from_slice(&p.data);
        Arc::new(Message::new(p))
    };
    Ok(out
        .into_iter()
        .map(|(ch, (latest, ring, from))| {
            (
                ch,
                (latest.map(keep), ring.into_iter().map(keep).collect(), from),
            )
        })
        .collect())
}

/// State channels' newest values as [`Stream::latest_values`] gave them.
pub(super) fn latest_only(values: Vec<Publication>) -> Recovered {
    values
        .into_iter()
        .map(|mut p| {
            p.data = Bytes::copy_from_slice(&p.data);
            let offset = p.offset;
            (
                p.channel.clone(),
                (Some(Arc::new(Message::new(p))), VecDeque::new(), offset),
            )
        })
        .collect()
}
