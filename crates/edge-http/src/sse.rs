//! `GET /v1/sse?channel=..&channel=..[&from=N][&depth=N]`: the same pushes as the WebSocket,
//! as Server-Sent Events. Like `from` (stream channels only), `depth` applies to the book
//! channels of the request. Stream-channel events carry `id:` so a reconnecting browser resumes
//! through `Last-Event-ID`:
//! - one stream channel: the id is the event's offset; resume continues after it;
//! - several: the id is `channel:next,channel:next` (next offset per channel), because one
//!   number cannot say where each channel stands when one is still replaying history.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    time::Duration,
};

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures_util::stream;
use tickwire_gateway::{Connection, Credentials, Event as GwEvent};
use tickwire_hub::{Delivery, Recent};
use tickwire_model::{Channel, Class, Offset};
use tickwire_wire::{encode_disconnect, ErrorCode};

use crate::{
    problem::Problem,
    publish::credential,
    rest::{parse_query, query_u64},
    ws::{close_error_code, with_json_push},
    HttpState, SSE,
};

/// One SSE response: the gateway connection (counted and registered for shutdown until the
/// stream ends, however it ends) and the events not yet taken by the HTTP layer.
struct Stream {
    conn: Connection,
    buf: VecDeque<Event>,
    /// Next offset per stream channel, for composite event ids.
    cursors: BTreeMap<String, Offset>,
    done: bool,
}

/// Resume positions from `Last-Event-ID`: the next offset to deliver, per channel or for all.
enum Resume {
    All(Offset),
    Per(BTreeMap<String, Offset>),
}

fn parse_last_event_id(v: &str) -> Result<Resume, String> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Ok(Resume::All(n.saturating_add(1)));
    }
    let mut m = BTreeMap::new();
    for part in v.split(',').filter(|p| !p.is_empty()) {
        let (c, n) = part.rsplit_once(':').ok_or_else(|| {
            format!("Last-Event-ID {v:?} is not an offset or channel:offset list")
        })?;
        let n: u64 = n
            .parse()
            .map_err(|_| format!("Last-Event-ID {v:?}: {n:?} is not an offset"))?;
        m.insert(c.to_string(), n);
    }
    Ok(Resume::Per(m))
}

pub async fn sse(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    peer: Option<axum::Extension<tickwire_gateway::PeerAddr>>,
) -> Response {
    let ip = peer.map(|p| p.0 .0.ip());
    match open(st, q, &headers, ip) {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

fn open(
    st: HttpState,
    q: Option<String>,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<Response, Problem> {
    let params = parse_query(q.as_deref());
    let bad = |m: String| Problem::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m);
    let mut channels = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "channel" => channels.push(Channel::parse(v).map_err(|e| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::BadChannel,
                    e.to_string(),
                )
            })?),
            "from" | "last" | "since" | "depth" | "api_key" | "token" => {}
            other => {
                return Err(bad(format!(
                    "unknown query parameter `{other}`; expected channel, from, last, since, depth, token"
                )))
            }
        }
    }
    if channels.is_empty() {
        return Err(bad("give at least one `channel=` parameter".into()));
    }
    let from = query_u64(&params, "from")?;
    let last = query_u64(&params, "last")?;
    let since = query_u64(&params, "since")?;
    let depth = query_u64(&params, "depth")?
        .map(|d| {
            u32::try_from(d)
                .map_err(|_| bad(format!("`depth` must be at most {} levels", u32::MAX)))
        })
        .transpose()?;
    // Which channels a `depth` applies to; one that applies to none is a mistake to say.
    let mut books = Vec::with_capacity(channels.len());
    for c in &channels {
        books.push(depth.is_some() && st.gateway.hub().is_book(c).map_err(Problem::from)?);
    }
    if depth.is_some() && !books.contains(&true) {
        return Err(bad(
            "`depth` is an option of book channels; none of the channels given is one".into(),
        ));
    }
    let resume = match headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(v) if !v.is_empty() => Some(parse_last_event_id(v).map_err(bad)?),
        _ => None,
    };
    let principal = st
        .gateway
        .authenticate(&Credentials::new(credential(&params, headers)))
        .map_err(Problem::from)?;
    let mut conn = st
        .gateway
        .connect_from(SSE, principal, ip, None)
        .map_err(Problem::from)?;
    let mut cursors = BTreeMap::new();
    let mut first_events = VecDeque::new();
    for (c, book) in channels.iter().zip(books) {
        let class = st.gateway.hub().class_of(c).map_err(Problem::from)?;
        let start = match (class, &resume) {
            (Class::State, _) => None,
            (Class::Stream, Some(Resume::All(n))) => Some(*n),
            (Class::Stream, Some(Resume::Per(m))) => m.get(c.as_str()).copied().or(from),
            (Class::Stream, None) => from,
        };
        // A browser's reconnect (Last-Event-ID) resumes where it was; a first open may ask for
        // the newest messages or those since a time instead of an offset.
        let recent = match (class, &resume, last, since) {
            (Class::Stream, None, Some(n), _) => {
                Some(Recent::Last(usize::try_from(n).unwrap_or(usize::MAX)))
            }
            (Class::Stream, None, None, Some(ms)) => Some(Recent::SinceMs(ms)),
            _ => None,
        };
        let info = match (depth, recent) {
            (Some(d), _) if book => conn.subscribe_book(c, d),
            (_, Some(r)) if from.is_none() => conn.subscribe_recent(c, r),
            _ => conn.subscribe(c, start, None),
        }
        .map_err(Problem::from)?;
        if let Some(o) = info.offset {
            cursors.insert(c.to_string(), o);
            if let Some(asked) = info.retention_gap {
                // The resume point is gone (retention): say so before the first message
                // instead of jumping silently.
                let gap = serde_json::json!({"channel": c.as_str(), "requested": asked, "first_retained": o});
                first_events.push_back(
                    Event::default()
                        .event("retention_gap")
                        .data(gap.to_string()),
                );
            }
        }
    }
    let s = Stream {
        conn,
        buf: first_events,
        cursors,
        done: false,
    };
    let events = stream::unfold(s, |mut s| async move {
        loop {
            if let Some(ev) = s.buf.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), s));
            }
            if s.done {
                return None;
            }
            // SSE cannot refresh a token: at expiry the stream ends with a `disconnect` event
            // (resume points included) and the browser reconnects with a new one.
            let next = match s.conn.token_deadline() {
                Some(at) => {
                    // Only the cancel-safe waits race the clock; the drain runs to completion.
                    tokio::select! {
                        biased;
                        _ = s.conn.closed() => {}
                        _ = s.conn.wait() => {}
                        _ = tokio::time::sleep_until(at) => s.conn.expire(),
                    }
                    s.conn.drain().await
                }
                None => s.conn.next().await,
            };
            match next {
                GwEvent::Deliver(batch) => {
                    s.conn.delivered(batch.len() as u64);
                    for d in batch {
                        let ev = event(&mut s.cursors, &d);
                        s.buf.push_back(ev);
                    }
                }
                GwEvent::Close(reason) => {
                    let frame = encode_disconnect(
                        close_error_code(&reason),
                        &reason.to_string(),
                        &s.conn.resume_points(),
                    );
                    s.buf.push_back(
                        Event::default()
                            .event("disconnect")
                            .data(String::from_utf8_lossy(&frame)),
                    );
                    s.done = true;
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn event(cursors: &mut BTreeMap<String, Offset>, d: &Delivery) -> Event {
    let p = &d.message.publication;
    let ev = with_json_push(d, |t| Event::default().data(t.as_str()));
    match cursors.get_mut(p.channel.as_str()) {
        Some(next) => {
            *next = p.offset + 1;
            if cursors.len() == 1 {
                ev.id(p.offset.to_string())
            } else {
                let id: Vec<String> = cursors.iter().map(|(c, n)| format!("{c}:{n}")).collect();
                ev.id(id.join(","))
            }
        }
        None => ev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_forms() {
        assert!(matches!(parse_last_event_id("41"), Ok(Resume::All(42))));
        match parse_last_event_id("chat.a:5,chat.b:9").unwrap() {
            Resume::Per(m) => {
                assert_eq!(m["chat.a"], 5);
                assert_eq!(m["chat.b"], 9);
            }
            Resume::All(_) => panic!("expected per-channel"),
        }
        assert!(parse_last_event_id("chat.a").is_err());
        assert!(parse_last_event_id("chat.a:x").is_err());
    }
}
