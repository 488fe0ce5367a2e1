//! REST for chat: edit and delete a message, search, presence, read markers. Each call says
//! who it is like any read (`Authorization: Bearer`, `?token=`, `?api_key=`) and goes through
//! the gateway, which decides what that principal may see or change.

use axum::{
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use tickwire_gateway::{Change, Credentials, Principal};
use tickwire_model::Channel;
use tickwire_wire::{ErrorCode, SearchQuery};

use crate::{
    problem::Problem,
    publish::credential,
    rest::{parse_query, query_u64},
    HttpState, HTTP,
};

fn who(
    st: &HttpState,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Principal, Problem> {
    st.gateway
        .authenticate(&Credentials::new(credential(params, headers)))
        .map_err(Problem::from)
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

async fn body_json(st: &HttpState, body: Body) -> Result<Bytes, Problem> {
    let max = st.config.max_body_bytes;
    axum::body::to_bytes(body, max).await.map_err(|e| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("request body is larger than {max} bytes or could not be read: {e}"),
        )
    })
}

fn bad_json(e: impl std::fmt::Display, shape: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadJson,
        format!("expected {shape}: {e}"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    msg_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    msg_id: Option<String>,
}

fn msg_id_ok(id: &Option<String>) -> Result<(), Problem> {
    match id {
        Some(i) if i.is_empty() || i.len() > tickwire_wire::MAX_MSG_ID_LEN => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "`msg_id` must be 1 to {} bytes",
                tickwire_wire::MAX_MSG_ID_LEN
            ),
        )),
        _ => Ok(()),
    }
}

/// `PATCH /v1/messages/{channel}/{offset}` `{"data":..}` and `DELETE` of the same: the record
/// goes into the channel like a publish, and the answer is its offset.
async fn amend(
    st: &HttpState,
    headers: &HeaderMap,
    q: Option<&str>,
    name: &str,
    offset: u64,
    change: Option<Bytes>,
) -> Result<Response, Problem> {
    let params = parse_query(q);
    let principal = who(st, headers, &params)?;
    let ch = channel(name)?;
    let (change, msg_id) = match change {
        Some(body) => {
            let b: EditBody<'_> = serde_json::from_slice(&body)
                .map_err(|e| bad_json(e, r#"{"data":..,"msg_id"?:..}"#))?;
            msg_id_ok(&b.msg_id)?;
            (
                Change::Edit(Bytes::copy_from_slice(b.data.get().as_bytes())),
                b.msg_id,
            )
        }
        None => (Change::Delete, None),
    };
    st.gateway.check_limited_amend(&principal, &ch)?;
    let checked = st
        .gateway
        .amend(&principal, &ch, offset, change, msg_id)
        .await?;
    let ack = st.gateway.store(HTTP, checked).await?;
    Ok(
        Json(json!({"channel": ch.as_str(), "offset": ack.offset, "duplicate": ack.duplicate}))
            .into_response(),
    )
}

pub async fn edit(
    State(st): State<HttpState>,
    Path((name, offset)): Path<(String, u64)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let body = body_json(&st, body).await?;
        amend(&st, &headers, q.as_deref(), &name, offset, Some(body)).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn delete(
    State(st): State<HttpState>,
    Path((name, offset)): Path<(String, u64)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let body = body_json(&st, body).await?;
        let b: DeleteBody = if body.iter().all(u8::is_ascii_whitespace) {
            DeleteBody::default()
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| bad_json(e, r#"{"msg_id"?:..} or nothing"#))?
        };
        msg_id_ok(&b.msg_id)?;
        let params = parse_query(q.as_deref());
        let principal = who(&st, &headers, &params)?;
        let ch = channel(&name)?;
        st.gateway.check_limited_amend(&principal, &ch)?;
        let checked = st
            .gateway
            .amend(&principal, &ch, offset, Change::Delete, b.msg_id)
            .await?;
        let ack = st.gateway.store(HTTP, checked).await?;
        Ok::<_, Problem>(
            Json(json!({"channel": ch.as_str(), "offset": ack.offset, "duplicate": ack.duplicate}))
                .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/search?q=..&channel=..&from_user=..&since=..&until=..&limit=..&skip=..&order=..`
pub async fn search(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let params = parse_query(q.as_deref());
        let principal = who(&st, &headers, &params)?;
        st.gateway.read_command(&principal)?;
        let text = |k: &str| {
            params
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let query = SearchQuery {
            q: text("q").ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    "`q` is required: words, \"a phrase\", prefix*, -excluded",
                )
            })?,
            channel: text("channel").map(|c| channel(&c)).transpose()?,
            from_user: text("from_user"),
            since: query_u64(&params, "since")?,
            until: query_u64(&params, "until")?,
            limit: query_u64(&params, "limit")?,
            skip: query_u64(&params, "skip")?,
            order: text("order"),
        };
        let gw = st.gateway.clone();
        let results = tokio::task::spawn_blocking(move || gw.search_for(&principal, &query))
            .await
            .map_err(|e| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    format!("search failed: {e}"),
                )
            })??;
        Ok::<_, Problem>(Json(results).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/presence/{channel}`: who is subscribed to it now.
pub async fn presence(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let params = parse_query(q.as_deref());
        let principal = who(&st, &headers, &params)?;
        st.gateway.read_command(&principal)?;
        let ch = channel(&name)?;
        let members = st.gateway.presence_of(&principal, &ch).await?;
        Ok::<_, Problem>(Json(json!({"channel": ch.as_str(), "members": members})).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/markers`: the user's read markers with unread counts.
pub async fn markers(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = || {
        let params = parse_query(q.as_deref());
        let principal = who(&st, &headers, &params)?;
        st.gateway.read_command(&principal)?;
        let list = st.gateway.markers_of(&principal)?;
        Ok::<_, Problem>(Json(json!({"markers": crate::ws::markers_json(&list)})).into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    channel: String,
    offset: u64,
}

/// `POST /v1/markers` `{"channel":..,"offset":..}`: the user has read the channel up to
/// `offset`; answers the channel's unread count after it.
pub async fn read(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let params = parse_query(q.as_deref());
        let principal = who(&st, &headers, &params)?;
        st.gateway.read_command(&principal)?;
        let body = body_json(&st, body).await?;
        let b: ReadBody = serde_json::from_slice(&body)
            .map_err(|e| bad_json(e, r#"{"channel":..,"offset":..}"#))?;
        let ch = channel(&b.channel)?;
        if let Some(c) = st.gateway.read_marker(&principal, &ch, b.offset)? {
            st.gateway.store(HTTP, c).await?;
            if let (Some(store), Some(u)) = (st.gateway.marker_store(), principal.user()) {
                store.noted(&u.sub, &ch, b.offset);
            }
        }
        let mut v = json!({"channel": ch.as_str()});
        if let (Some(o), Some(u)) = (v.as_object_mut(), st.gateway.unread(&principal, &ch)) {
            if let serde_json::Value::Object(m) = u.json() {
                o.extend(m);
            }
        }
        Ok::<_, Problem>(Json(v).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
