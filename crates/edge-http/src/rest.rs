//! REST reads: history, latest value, namespaces, channels, health, readiness, metrics.

use axum::{
    extract::{Path, RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, value::RawValue};
use tickwire_hub::Message;
use tickwire_model::Channel;
use tickwire_wire::ErrorCode;

use tickwire_gateway::{Credentials, Principal, Refusal};

use crate::{problem::Problem, publish::credential, HttpState};

/// Decodes `a=1&b=x%2Ey` into pairs, keeping repeats and order.
pub fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An optional non-negative integer parameter, with a clear error when it is not one.
pub fn query_u64(params: &[(String, String)], name: &str) -> Result<Option<u64>, Problem> {
    match params.iter().rev().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse::<u64>().map(Some).map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("`{name}` must be a non-negative integer, got {v:?}"),
            )
        }),
    }
}

fn channel(name: &str) -> Result<Channel, Problem> {
    Channel::parse(name).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadChannel,
            e.to_string(),
        )
    })
}

/// A stored message as JSON, with `data` embedded verbatim: going through `serde_json::Value`
/// would reorder keys and push numbers through binary floating point.
#[derive(serde::Serialize)]
struct MessageJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    offset: u64,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
    /// Absent for a deleted message.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    /// The message was edited: `data` is its newest version, from the record at this offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    edited: Option<AmendJson>,
    /// The message was deleted by the record at this offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<AmendJson>,
}

#[derive(serde::Serialize)]
struct AmendJson {
    offset: u64,
    ts: u64,
}

fn message_json<'a>(m: &'a Message, channel: Option<&'a str>) -> Result<MessageJson<'a>, Problem> {
    let p = &m.publication;
    let text = std::str::from_utf8(&p.data).map_err(|_| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "stored data is not UTF-8",
        )
    })?;
    let data: &RawValue = serde_json::from_str(text).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("stored data: {e}"),
        )
    })?;
    Ok(MessageJson {
        channel,
        offset: p.offset,
        ts: p.timestamp / 1_000_000,
        msg_id: p.msg_id.as_deref(),
        data: Some(data),
        edited: None,
        deleted: None,
    })
}

/// Raw JSON text as a `RawValue` to embed, or an internal error.
fn raw(text: &[u8]) -> Result<&RawValue, Problem> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "an edit's stored data is not JSON",
            )
        })
}

/// Most messages in one history page.
pub const MAX_PAGE: u64 = 1000;

/// Who a REST read comes from: `Authorization: Bearer`, `?token=` or `?api_key=`; a
/// credential that is given but not valid is refused.
fn reader(
    st: &HttpState,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Principal, Problem> {
    st.gateway
        .authenticate(&Credentials::new(credential(params, headers)))
        .map_err(Problem::from)
}

/// The operator endpoints (`/metrics`, listings), one layer in front of them: the caller
/// must hold the `admin` scope (see [`tickwire_gateway::Gateway::require_admin`]).
pub async fn admin_guard(
    State(st): State<HttpState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let params = parse_query(req.uri().query());
    let allowed = reader(&st, req.headers(), &params)
        .and_then(|p| st.gateway.require_admin(&p).map_err(Problem::from));
    match allowed {
        Ok(()) => next.run(req).await,
        Err(p) => p.into_response(),
    }
}

pub async fn history(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let ch = channel(&name)?;
        let params = parse_query(q.as_deref());
        let principal = reader(&st, &headers, &params)?;
        st.gateway.read_command(&principal)?;
        st.gateway.can_subscribe(&principal, &ch)?;
        let hub = st.gateway.hub();
        let epoch = hub.epoch(ch.namespace()).map_err(Problem::from)?;
        if let Some((_, given)) = params.iter().rev().find(|(k, _)| k == "epoch") {
            let given = tickwire_model::Epoch::parse(given).ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    "`epoch` must be the 16 hex digits a history page or subscribe reply gave",
                )
            })?;
            if given != epoch {
                return Err(Problem::from(Refusal::new(
                    ErrorCode::EpochMismatch,
                    format!(
                        "namespace `{}` was recreated: its stream is epoch {epoch}, not {given}; offsets started again at 0",
                        ch.namespace()
                    ),
                )));
            }
        }
        let from = query_u64(&params, "from")?.unwrap_or(0);
        let limit = query_u64(&params, "limit")?.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("`limit` must be 1 to {MAX_PAGE}"),
            ));
        }
        let page = hub
            .history(&ch, from, limit as usize)
            .await
            .map_err(Problem::from)?;
        // Edits and deletes applied: each message as it is now (the records themselves stay
        // in the page, in order, for clients that apply them as they come).
        let amended: Vec<Option<tickwire_gateway::Amended>> = page
            .messages
            .iter()
            .map(|m| {
                st.gateway
                    .amendments()
                    .and_then(|a| a.get(&ch, m.publication.offset))
            })
            .collect();
        let mut messages = Vec::with_capacity(page.messages.len());
        for (m, a) in page.messages.iter().zip(&amended) {
            let mut j = message_json(m, None)?;
            if let Some(a) = a {
                let at = AmendJson {
                    offset: a.at,
                    ts: a.ts_ms,
                };
                match &a.change {
                    tickwire_gateway::AmendedChange::Edited(d) => {
                        j.data = Some(raw(d)?);
                        j.edited = Some(at);
                    }
                    tickwire_gateway::AmendedChange::Deleted => {
                        j.data = None;
                        j.deleted = Some(at);
                    }
                }
            }
            messages.push(j);
        }
        #[derive(serde::Serialize)]
        struct Page<'a> {
            channel: &'a str,
            messages: Vec<MessageJson<'a>>,
            next: u64,
            /// The stream incarnation `next` belongs to.
            epoch: String,
            /// Present when retention removed `from`: what was asked and where the page starts.
            #[serde(skip_serializing_if = "Option::is_none")]
            retention_gap: Option<Gap>,
        }
        #[derive(serde::Serialize)]
        struct Gap {
            requested: u64,
            first_retained: u64,
        }
        Ok::<_, Problem>(
            Json(Page {
                channel: ch.as_str(),
                messages,
                next: page.next,
                epoch: epoch.to_string(),
                retention_gap: page.retention_gap.map(|(requested, first_retained)| Gap {
                    requested,
                    first_retained,
                }),
            })
            .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn latest(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = || {
        let ch = channel(&name)?;
        let params = parse_query(q.as_deref());
        let principal = reader(&st, &headers, &params)?;
        st.gateway.read_command(&principal)?;
        st.gateway.can_subscribe(&principal, &ch)?;
        match st.gateway.hub().latest(&ch).map_err(Problem::from)? {
            Some(m) => Ok(Json(message_json(&m, Some(ch.as_str()))?).into_response()),
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BadChannel,
                format!("`{ch}` has no value yet"),
            )),
        }
    };
    run().unwrap_or_else(|p: Problem| p.into_response())
}

pub async fn namespaces(State(st): State<HttpState>) -> Response {
    let hub = st.gateway.hub();
    let list: Vec<serde_json::Value> = hub
        .namespaces()
        .into_iter()
        .map(|n| {
            // What the operator console shows beside the configuration: how far the stream
            // has gone (the next offset and its epoch) and how many channels the hub holds.
            let next_offset = hub.next_offset(&n.name).ok();
            let epoch = hub.epoch(&n.name).ok().map(|e| e.to_string());
            let channels = hub.channels(&n.name).len();
            json!({
                "name": n.name, "class": n.class, "schema": n.schema,
                "max_message_bytes": n.max_message_bytes, "retention_bytes": n.retention_bytes,
                "retention_age_s": n.retention_age.map(|d| d.as_secs()), "client_publish": n.client_publish,
                "subscribe": n.subscribe.as_str(), "publish": n.publish.as_str(),
                "next_offset": next_offset, "epoch": epoch, "channels": channels,
            })
        })
        .collect();
    Json(json!({ "namespaces": list })).into_response()
}

/// `GET /v1/channels/{namespace}` (admin): the channels this node holds, by name, and per
/// channel its subscribers, values published since it was loaded, and newest message (the
/// console derives rates from two reads).
pub async fn channels(State(st): State<HttpState>, Path(ns): Path<String>) -> Response {
    let hub = st.gateway.hub();
    if hub.namespace_spec(&ns).is_none() {
        return Problem::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownNamespace,
            format!("unknown namespace `{ns}`"),
        )
        .into_response();
    }
    let stats = hub.channel_stats(&ns);
    let list: Vec<&str> = stats.iter().map(|c| c.channel.as_str()).collect();
    let details: Vec<serde_json::Value> = stats
        .iter()
        .map(|c| {
            json!({
                "channel": c.channel.as_str(),
                "subscribers": c.subscribers,
                "published": c.published,
                "offset": c.newest.map(|(o, _)| o),
                "ts": c.newest.map(|(_, t)| t / 1_000_000),
            })
        })
        .collect();
    Json(json!({ "namespace": ns, "channels": list, "stats": details })).into_response()
}

/// `GET /v1/connections[?edge=mqtt]` (admin): every live connection on this node, oldest
/// first, with its edge, identity, address, client id and subscription count.
pub async fn connections(State(st): State<HttpState>, RawQuery(q): RawQuery) -> Response {
    let q = parse_query(q.as_deref());
    let edge = q.iter().find(|(k, _)| k == "edge").map(|(_, v)| v.as_str());
    let list = st.gateway.connections(edge);
    let mut by_edge = serde_json::Map::new();
    for (edge, n) in st.gateway.connections_by_edge() {
        by_edge.insert(edge.0.to_owned(), json!(n));
    }
    Json(json!({ "connections": list, "by_edge": by_edge })).into_response()
}

/// `DELETE /v1/connections/{id}` (admin): closes one connection. The client gets the close
/// every server-side disconnect sends (code `forbidden`, the reason, its resume points where its
/// protocol has them) and may reconnect: to keep a client out, revoke its credential.
pub async fn kick(State(st): State<HttpState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("`{id}` is not a connection id"),
        )
        .into_response();
    };
    if st.gateway.kick(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Problem::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no open connection {id}"),
        )
        .into_response()
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(st): State<HttpState>) -> Response {
    match st.gateway.not_ready() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

pub async fn metrics(State(st): State<HttpState>) -> Response {
    let body = st.gateway.render_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("channel=chat.a&channel=quotes%2EX&from=4&x=%zz&y=%4"));
        assert_eq!(q[0], ("channel".into(), "chat.a".into()));
        assert_eq!(q[1], ("channel".into(), "quotes.X".into()));
        assert_eq!(q[3].1, "%zz");
        assert_eq!(q[4].1, "%4");
        assert_eq!(query_u64(&q, "from").unwrap(), Some(4));
        assert!(query_u64(&q, "x").is_err());
        assert_eq!(query_u64(&q, "nope").unwrap(), None);
    }
}
