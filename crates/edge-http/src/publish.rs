//! `POST /v1/publish`: one publication object or an array of them. A batch is validated whole
//! before anything is appended, so a client never has to work out which half of a batch landed.

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use bytes::Bytes;
use serde_json::{json, value::RawValue};
use tickwire_hub::{Checked, PublishRequest};
use tickwire_model::Channel;
use tickwire_wire::{
    decode_batch, encode_acks_header, push_ack, scan_json_batch, BatchError, BatchItem, ErrorCode,
    JsonItem, ScannedItem, ACKS_CONTENT_TYPE, BATCH_CONTENT_TYPE,
};

use tickwire_gateway::{trace::PublishTiming, Credentials, Principal, Refusal};

use crate::{problem::Problem, HttpState, HTTP};

/// Most publications in one HTTP batch.
pub const MAX_BATCH: usize = 10_000;
const MAX_MSG_ID_LEN: usize = 128;

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

/// The credential a request presents: `?token=` or `?api_key=` (browsers cannot set headers on
/// EventSource or WebSocket), else `Authorization: Bearer`.
pub fn credential<'a>(params: &'a [(String, String)], headers: &'a HeaderMap) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == "token" || k == "api_key")
        .map(|(_, v)| v.as_str())
        .or_else(|| bearer(headers))
}

pub async fn publish(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let metrics = st.gateway.metrics();
    metrics
        .http_publish_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // One branch when tracing is off (or this request is not sampled).
    let trace = st
        .gateway
        .trace_publish(|| headers.get(TRACEPARENT).map(|v| v.as_bytes()));
    let mut timed = trace.as_ref().map(|_| PublishTiming::default());
    let response = match handle(&st, &headers, body, timed.as_mut()).await {
        Ok(r) => r,
        Err(p) => {
            metrics.edge(HTTP).rejected();
            p.into_response()
        }
    };
    if let (Some(trace), Some(t)) = (trace, timed) {
        let status = response.status();
        let error = (!status.is_success()).then(|| status.to_string());
        st.gateway.finish_publish_trace(trace, HTTP.0, t, error);
    }
    response
}

/// The W3C Trace Context header a traced publish takes its parent from.
const TRACEPARENT: &str = "traceparent";

async fn handle(
    st: &HttpState,
    headers: &HeaderMap,
    body: Body,
    mut timed: Option<&mut PublishTiming>,
) -> Result<Response, Problem> {
    let creds = Credentials::new(bearer(headers));
    let principal = match st.gateway.server_api(&creds) {
        Ok(p) => p,
        Err(refusal) => {
            st.gateway.metrics().edge(HTTP).rejected();
            let mut r = Problem::from(refusal).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return Ok(r);
        }
    };
    let principal = &principal;
    let max = st.config.max_body_bytes;
    let body: Bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("request body is larger than {max} bytes or could not be read: {e}"),
        )
    })?;
    PublishTiming::validating(&mut timed);
    if is_binary(headers) {
        return binary(st, principal, &body, timed).await;
    }
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
    let single = if trimmed.starts_with('[') {
        false
    } else if trimmed.starts_with('{') {
        true
    } else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadJson,
            "expected a publication object {\"channel\":..,\"data\":..} or an array of them",
        ));
    };
    // One pass over the body when it has the common shape (the hot path, read by hand).
    // Anything else is read by serde item by item, which also names every bad index.
    let checked = if let Some(items) = scan_json_batch(text, single) {
        check_batch_size(items.len())?;
        check_all(
            st,
            principal,
            &body,
            items.into_iter().map(Ok),
            single,
            false,
        )?
    } else {
        let raw_items: Vec<&RawValue> = if single {
            vec![serde_json::from_str(text).map_err(bad_json)?]
        } else {
            serde_json::from_str(text).map_err(bad_json)?
        };
        check_batch_size(raw_items.len())?;
        let items: Vec<Result<JsonItem<'_>, ItemError>> = raw_items
            .iter()
            .map(|raw| {
                serde_json::from_str::<JsonItem<'_>>(raw.get()).map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        ErrorCode::BadRequest,
                        format!("invalid publication: {e}"),
                    )
                })
            })
            .collect();
        let items = items.iter().map(|r| match r {
            Ok(i) => Ok(unscanned(i.borrowed())),
            Err(e) => Err(e.clone()),
        });
        check_all(st, principal, &body, items, single, false)?
    };
    let channels: Vec<Channel> = checked
        .iter()
        .map(|c| c.request().channel.clone())
        .collect();
    let n = checked.len() as u64;
    let results = st.gateway.publish_timed(checked, timed).await;
    st.gateway.metrics().edge(HTTP).published(n);
    // Written by hand: a `json!` tree per result cost more than the append. Channel names are
    // plain ASCII without quotes or backslashes (see `Channel::parse`), so need no escaping.
    // Each result is its channel's name and at most 64 bytes more (20 digits of offset):
    // reserved whole, the ~330 KB answer to a 5,000-item batch is not copied as it grows.
    let names: usize = channels.iter().map(|c| c.as_str().len()).sum();
    let mut body = String::with_capacity(16 + names + channels.len() * 64);
    let mut offset_text = itoa::Buffer::new();
    if !single {
        body.push_str("{\"results\":[");
    }
    for (i, (r, channel)) in results.into_iter().zip(&channels).enumerate() {
        // Validation passed above, so what fails here is storage or shutdown.
        let ack = r.map_err(Problem::from)?;
        if i > 0 {
            body.push(',');
        }
        // Pieces and itoa, not `write!`: core::fmt was ~2 % of server CPU under ingest.
        body.push_str("{\"channel\":\"");
        body.push_str(channel.as_str());
        body.push_str("\",\"offset\":");
        body.push_str(offset_text.format(ack.offset));
        body.push_str(if ack.duplicate {
            ",\"duplicate\":true}"
        } else {
            ",\"duplicate\":false}"
        });
    }
    if !single {
        body.push_str("]}");
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// True when the body is a binary batch (`Content-Type: application/vnd.tickwire.batch`,
/// parameters ignored); anything else is read as JSON, as before the binary form existed.
fn is_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(BATCH_CONTENT_TYPE))
}

/// The binary batch: the same checks and the same all-or-nothing rule as JSON, answered with
/// one (offset, duplicate) per item in a binary body (docs/protocol.md).
async fn binary(
    st: &HttpState,
    principal: &Principal,
    body: &Bytes,
    timed: Option<&mut PublishTiming>,
) -> Result<Response, Problem> {
    let items = decode_batch(body, MAX_BATCH).map_err(|e| {
        let (status, code) = match e {
            BatchError::TooMany { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
            _ => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
        };
        Problem::new(status, code, format!("malformed binary batch: {e}"))
    })?;
    let checked = check_all(
        st,
        principal,
        body,
        items.into_iter().map(|i| Ok(unscanned(i))),
        false,
        true,
    )?;
    let n = checked.len();
    let results = st.gateway.publish_timed(checked, timed).await;
    st.gateway.metrics().edge(HTTP).published(n as u64);
    let mut out = Vec::new();
    // `decode_batch` stops at MAX_BATCH items, far below u32::MAX.
    encode_acks_header(&mut out, u32::try_from(n).unwrap_or(u32::MAX));
    for r in results {
        let ack = r.map_err(Problem::from)?;
        push_ack(&mut out, ack.offset, ack.duplicate);
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, ACKS_CONTENT_TYPE)],
        out,
    )
        .into_response())
}

/// `data` as a view of the request body it was read from: a reference count, not an
/// allocation and a copy per item (which the writer thread then had to free, a cross-thread
/// free, once the value was replaced). The writer copies the few values it keeps (a state
/// channel's newest, a stream's ring), so a kept value never pins a whole body. Data that is
/// not inside `body` is copied.
fn share(body: &Bytes, data: &[u8]) -> Bytes {
    let inside = body.as_ptr_range();
    let range = data.as_ptr_range();
    if inside.start <= range.start && range.end <= inside.end {
        body.slice_ref(data)
    } else {
        Bytes::copy_from_slice(data)
    }
}

fn check_batch_size(n: usize) -> Result<(), Problem> {
    if n == 0 {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the batch is empty",
        ));
    }
    if n > MAX_BATCH {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("a batch holds at most {MAX_BATCH} publications; this one has {n}"),
        ));
    }
    Ok(())
}

type ItemError = (StatusCode, ErrorCode, String);

/// An item whose data no reader has scanned for schema fields (binary batches, serde's path).
fn unscanned(item: BatchItem<'_>) -> ScannedItem<'_> {
    ScannedItem { item, fields: None }
}

/// Checks every item; any bad one refuses the whole batch with every bad index listed.
/// `unparsed`: the items' data has not been through a JSON parser yet (binary batches).
fn check_all<'a>(
    st: &HttpState,
    principal: &Principal,
    body: &Bytes,
    items: impl ExactSizeIterator<Item = Result<ScannedItem<'a>, ItemError>>,
    single: bool,
    unparsed: bool,
) -> Result<Vec<Checked>, Problem> {
    let total = items.len();
    let mut checked = Vec::with_capacity(total);
    let mut errors = Vec::new();
    let mut first: Option<ItemError> = None;
    let mut retry_after = None;
    for (i, item) in items.enumerate() {
        match item.and_then(|s| check_item(st, principal, body, s, unparsed, &mut retry_after)) {
            Ok(c) => checked.push(c),
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
                "{} of {total} publications are invalid; nothing was published",
                errors.len()
            )
        };
        let mut p = Problem::new(status, code, detail);
        p.errors = errors;
        p.retry_after = retry_after;
        return Err(p);
    }
    Ok(checked)
}
fn check_item(
    st: &HttpState,
    principal: &Principal,
    body: &Bytes,
    ScannedItem { item, fields }: ScannedItem<'_>,
    unparsed: bool,
    retry_after: &mut Option<std::time::Duration>,
) -> Result<Checked, ItemError> {
    let channel = Channel::parse_cached(item.channel).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadChannel,
            e.to_string(),
        )
    })?;
    if let Some(id) = item.msg_id {
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
        msg_id: item.msg_id.map(str::to_owned),
        data: share(body, item.data),
    };
    let mut refused = |r: Refusal| {
        if r.retry_after.is_some() {
            *retry_after = r.retry_after;
        }
        let status =
            StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, r.code, r.reason)
    };
    // The server API (a key with the `publish` scope) may publish anywhere as it is: the hot
    // path. Anyone else goes through the gateway's per-channel permission and sender stamp.
    if !principal.is_publisher() {
        return st.gateway.check_limited(principal, req).map_err(refused);
    }
    let hub = st.gateway.hub();
    let checked = match (fields, unparsed) {
        (Some(f), _) => hub.check_scanned(req, &f),
        (None, true) => hub.check_unparsed(req),
        (None, false) => hub.check(req),
    };
    checked.map_err(|e| refused(Refusal::from_hub(&e)))
}
