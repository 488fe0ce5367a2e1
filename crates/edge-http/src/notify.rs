//! `POST /v1/notify`: one payload to many users' private channels in one durable request — the
//! back-end's way to tell 10,000 followers that a trader opened a position. Each user gets the
//! message on `<namespace>.<user id>` (`user` by default); a `msg_id` makes a retry return the
//! first offsets instead of notifying twice (the idempotency key is per channel, so the same id
//! fans out to every user once).

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use tickwire_gateway::{Credentials, Refusal};
use tickwire_hub::PublishRequest;
use tickwire_model::Channel;
use tickwire_wire::ErrorCode;

use crate::{problem::Problem, publish::bearer, HttpState};

/// Most users one request notifies.
pub const MAX_USERS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyBody<'a> {
    users: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    msg_id: Option<String>,
    namespace: Option<String>,
}

pub async fn notify(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    match handle(&st, &headers, body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn handle(st: &HttpState, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
    let principal = st
        .gateway
        .server_api(&Credentials::new(bearer(headers)))
        .map_err(Problem::from)?;
    let max = st.config.max_body_bytes;
    let body: Bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("request body is larger than {max} bytes or could not be read: {e}"),
        )
    })?;
    let req: NotifyBody<'_> = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadJson,
            format!("expected {{\"users\":[..],\"data\":..,\"msg_id\"?:..}}: {e}"),
        )
    })?;
    let bad = |m: String| Problem::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m);
    if req.users.is_empty() || req.users.len() > MAX_USERS {
        return Err(bad(format!("`users` must list 1 to {MAX_USERS} user ids")));
    }
    if let Some(id) = &req.msg_id {
        if id.is_empty() || id.len() > tickwire_wire::MAX_MSG_ID_LEN {
            return Err(bad(format!(
                "`msg_id` must be 1 to {} bytes",
                tickwire_wire::MAX_MSG_ID_LEN
            )));
        }
    }
    let ns = req.namespace.as_deref().unwrap_or("user");
    let data = Bytes::copy_from_slice(req.data.get().as_bytes());
    let mut seen = std::collections::HashSet::with_capacity(req.users.len());
    let mut checked = Vec::with_capacity(req.users.len());
    let mut errors = Vec::new();
    for (i, user) in req.users.iter().enumerate() {
        let item = Channel::parse(&format!("{ns}.{user}"))
            .map_err(|e| Refusal::new(ErrorCode::BadChannel, format!("user {user:?}: {e}")))
            .and_then(|channel| {
                if !seen.insert(user.as_str()) {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        format!("user {user:?} is listed twice"),
                    ));
                }
                st.gateway.check_limited(
                    &principal,
                    PublishRequest {
                        channel,
                        msg_id: req.msg_id.clone(),
                        data: data.clone(),
                    },
                )
            });
        match item {
            Ok(c) => checked.push(c),
            Err(r) => errors.push((i, r)),
        }
    }
    // All or nothing, like a publish batch: a bad id fails the request before anyone is told.
    if let Some((_, first)) = errors.first() {
        let mut p = Problem::from(first.clone());
        p.detail = format!(
            "{} of {} users cannot be notified; nobody was: {}",
            errors.len(),
            req.users.len(),
            first.reason
        );
        p.errors = errors
            .iter()
            .map(|(i, r)| json!({"index": i, "code": r.code, "detail": r.reason}))
            .collect();
        return Err(p);
    }
    let results = st.gateway.hub().publish_checked(checked).await;
    let mut out = Vec::with_capacity(results.len());
    for (user, r) in req.users.iter().zip(results) {
        let ack = r.map_err(Problem::from)?;
        out.push(json!({
            "user": user,
            "channel": format!("{ns}.{user}"),
            "offset": ack.offset,
            "duplicate": ack.duplicate,
        }));
    }
    st.gateway
        .metrics()
        .edge(crate::HTTP)
        .published(out.len() as u64);
    Ok(Json(json!({ "results": out })).into_response())
}
