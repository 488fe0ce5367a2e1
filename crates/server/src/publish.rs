//! `POST /v1/publish`: one publication object or an array of them. A batch is validated whole
//! before anything is appended, so a client never has to work out which half of a batch landed.

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use tickwire_hub::{Checked, PublishRequest};
use tickwire_model::Channel;
use tickwire_wire::ErrorCode;

use crate::{
    problem::{classify, Problem},
    AppState,
};

/// Most publications in one HTTP batch.
pub const MAX_BATCH: usize = 10_000;
const MAX_MSG_ID_LEN: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    msg_id: Option<String>,
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

pub async fn publish(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    st.metrics
        .http_publish_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match handle(&st, &headers, body).await {
        Ok(r) => r,
        Err(p) => {
            st.metrics
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            p.into_response()
        }
    }
}

async fn handle(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
    if !st.is_publisher(bearer(headers)) {
        let detail = match bearer(headers) {
            None => "publishing needs `Authorization: Bearer <api key>`",
            Some(_) => "the API key is not valid",
        };
        let mut r =
            Problem::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, detail).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return Ok(r);
    }
    let max = st.config.max_body_bytes;
    let body: Bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("request body is larger than {max} bytes or could not be read: {e}"),
        )
    })?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadJson,
            "request body is not UTF-8",
        )
    })?;
    let bad_json = |e: serde_json::Error| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadJson,
            format!("malformed JSON: {e}"),
        )
    };
    let trimmed = text.trim_start();
    let (single, raw_items): (bool, Vec<&RawValue>) = if trimmed.starts_with('[') {
        (false, serde_json::from_str(text).map_err(bad_json)?)
    } else if trimmed.starts_with('{') {
        (true, vec![serde_json::from_str(text).map_err(bad_json)?])
    } else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadJson,
            "expected a publication object {\"channel\":..,\"data\":..} or an array of them",
        ));
    };
    if raw_items.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the batch is empty",
        ));
    }
    if raw_items.len() > MAX_BATCH {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "a batch holds at most {MAX_BATCH} publications; this one has {}",
                raw_items.len()
            ),
        ));
    }
    let mut requests = Vec::with_capacity(raw_items.len());
    let mut errors = Vec::new();
    let mut first: Option<(StatusCode, ErrorCode, String)> = None;
    for (i, raw) in raw_items.iter().enumerate() {
        match parse_item(st, raw) {
            Ok(r) => requests.push(r),
            Err((status, code, detail)) => {
                errors.push(json!({"index": i, "code": code, "detail": detail}));
                first.get_or_insert((status, code, detail));
            }
        }
    }
    if let Some((status, code, detail)) = first {
        let detail = if single {
            detail
        } else {
            format!(
                "{} of {} publications are invalid; nothing was published",
                errors.len(),
                raw_items.len()
            )
        };
        let mut p = Problem::new(status, code, detail);
        p.errors = errors;
        return Err(p);
    }
    let channels: Vec<Channel> = requests
        .iter()
        .map(|c| c.request().channel.clone())
        .collect();
    let results = st.hub.publish_checked(requests).await;
    let mut out = Vec::with_capacity(results.len());
    for (r, channel) in results.into_iter().zip(&channels) {
        match r {
            Ok(ack) => out.push(json!({"channel": channel.as_str(), "offset": ack.offset, "duplicate": ack.duplicate})),
            // Validation passed above, so what fails here is storage or shutdown.
            Err(e) => return Err(e.into()),
        }
    }
    let body = if single {
        out.remove(0)
    } else {
        json!({ "results": out })
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn parse_item(st: &AppState, raw: &RawValue) -> Result<Checked, (StatusCode, ErrorCode, String)> {
    let item: Item<'_> = serde_json::from_str(raw.get()).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("invalid publication: {e}"),
        )
    })?;
    let channel = Channel::parse(&item.channel).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadChannel,
            e.to_string(),
        )
    })?;
    if let Some(id) = &item.msg_id {
        if id.is_empty() || id.len() > MAX_MSG_ID_LEN {
            return Err((
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("`msg_id` must be 1 to {MAX_MSG_ID_LEN} bytes"),
            ));
        }
    }
    let req = PublishRequest {
        channel,
        msg_id: item.msg_id,
        data: Bytes::copy_from_slice(item.data.get().as_bytes()),
    };
    st.hub.check(req).map_err(|e| {
        let (s, c) = classify(&e);
        (s, c, e.to_string())
    })
}
