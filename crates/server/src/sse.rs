//! `GET /v1/sse?channel=..&channel=..[&from=N]`: the same pushes as the WebSocket, as
//! Server-Sent Events. Stream-channel events carry `id:` so a reconnecting browser resumes
//! through `Last-Event-ID`:
//! - one stream channel: the id is the event's offset; resume continues after it;
//! - several: the id is `channel:next,channel:next` (next offset per channel), because one
//!   number cannot say where each channel stands when one is still replaying history.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::atomic::Ordering,
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
use tickwire_hub::{Delivery, Session};
use tickwire_model::{Channel, Class, Offset};
use tickwire_wire::{encode_disconnect, ErrorCode};
use tokio::sync::OwnedSemaphorePermit;

use crate::{
    problem::Problem,
    rest::{parse_query, query_u64},
    state::SessionGuard,
    ws::{close_error_code, json_push},
    AppState,
};

struct Stream {
    st: AppState,
    session: Session,
    buf: VecDeque<Event>,
    /// Next offset per stream channel, for composite event ids.
    cursors: BTreeMap<String, Offset>,
    done: bool,
    _gauge: Gauge,
    _permit: OwnedSemaphorePermit,
    _guard: SessionGuard,
}

/// Counts the connection down however the stream ends (client gone or server close).
struct Gauge(AppState);

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0
            .metrics
            .sse_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
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
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    match open(st, q, &headers) {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

fn open(st: AppState, q: Option<String>, headers: &HeaderMap) -> Result<Response, Problem> {
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
            "from" | "api_key" => {}
            other => {
                return Err(bad(format!(
                    "unknown query parameter `{other}`; expected channel, from"
                )))
            }
        }
    }
    if channels.is_empty() {
        return Err(bad("give at least one `channel=` parameter".into()));
    }
    let from = query_u64(&params, "from")?;
    let resume = match headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(v) if !v.is_empty() => Some(parse_last_event_id(v).map_err(bad)?),
        _ => None,
    };
    let permit = st.connections.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "connection limit reached",
        )
    })?;
    let mut session = st.hub.session();
    let mut cursors = BTreeMap::new();
    for c in &channels {
        let class = st.hub.class_of(c).map_err(Problem::from)?;
        let start = match (class, &resume) {
            (Class::State, _) => None,
            (Class::Stream, Some(Resume::All(n))) => Some(*n),
            (Class::Stream, Some(Resume::Per(m))) => m.get(c.as_str()).copied().or(from),
            (Class::Stream, None) => from,
        };
        let info = session.subscribe(c, start).map_err(Problem::from)?;
        if let Some(o) = info.offset {
            cursors.insert(c.to_string(), o);
        }
    }
    let guard = st.track(session.closer());
    st.metrics.sse_connections.fetch_add(1, Ordering::Relaxed);
    let s = Stream {
        st: st.clone(),
        session,
        buf: VecDeque::new(),
        cursors,
        done: false,
        _gauge: Gauge(st.clone()),
        _permit: permit,
        _guard: guard,
    };
    let events = stream::unfold(s, |mut s| async move {
        loop {
            if let Some(ev) = s.buf.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), s));
            }
            if s.done {
                return None;
            }
            tokio::select! {
                biased;
                _ = s.session.closed() => {}
                _ = s.session.wait() => {}
            }
            match s.session.drain().await {
                Ok(batch) => {
                    s.st.metrics
                        .delivered
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for d in batch {
                        let ev = event(&mut s.cursors, &d);
                        s.buf.push_back(ev);
                    }
                }
                Err(reason) => {
                    s.st.metrics.note_close(&reason);
                    let frame = encode_disconnect(
                        close_error_code(&reason),
                        &reason.to_string(),
                        &s.session.resume_points(),
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
    let ev = Event::default().data(json_push(d).as_str());
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
