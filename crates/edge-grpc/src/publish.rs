//! Publish (a batch, all or nothing, like `POST /v1/publish`) and PublishStream (pipelined
//! batches answered in order, like WebSocket publishes).

use std::{future::Future, net::IpAddr, pin::Pin, task::Poll};

use futures_util::{stream::FuturesOrdered, FutureExt, StreamExt};
use tickwire_gateway::{
    close_code,
    deadline::sleep_until,
    proto::{error_of, request_of},
    trace::PublishTiming,
    Connection, ErrorCode, Principal, Refusal,
};
use tickwire_hub::{Ack, CloseReason};
use tickwire_proto::v1::{self, PublishResponse, PublishResult};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::{
    send_within,
    service::Service,
    status::{refused, status},
    Sent, GRPC,
};

/// Most items in one Publish call, as over HTTP.
const MAX_BATCH: usize = 10_000;
/// Items waiting for their acknowledgements before a PublishStream stops reading (as the
/// WebSocket's window).
const MAX_IN_FLIGHT: usize = 16 * 1024;
/// Answers waiting to be taken by the client.
const ANSWERS: usize = 64;

/// Publish: every item checked, one bad item refuses the batch, then stored as one.
pub(crate) async fn unary(
    svc: &Service,
    principal: &Principal,
    request: v1::PublishRequest,
    mut timing: Option<&mut PublishTiming>,
) -> Result<PublishResponse, Status> {
    let gw = &svc.gateway;
    PublishTiming::validating(&mut timing);
    let total = request.items.len();
    let refuse = |r: Refusal| {
        gw.metrics().edge(GRPC).rejected();
        refused(&r)
    };
    if total == 0 {
        return Err(refuse(Refusal::new(ErrorCode::BadRequest, "no items")));
    }
    if total > MAX_BATCH {
        return Err(refuse(Refusal::new(
            ErrorCode::TooLarge,
            format!("a batch holds at most {MAX_BATCH} items; this one has {total}"),
        )));
    }
    let mut checked = Vec::with_capacity(total);
    let mut bad: Vec<(usize, Refusal)> = Vec::new();
    for (i, item) in request.items.into_iter().enumerate() {
        match request_of(gw, item).and_then(|r| gw.check_limited(principal, r)) {
            Ok(c) => checked.push(c),
            Err(r) => bad.push((i, r)),
        }
    }
    if let Some((i, first)) = bad.first() {
        let reason = if total == 1 {
            first.reason.clone()
        } else {
            format!(
                "{} of {total} items are invalid; nothing was published. Item {i}: {}",
                bad.len(),
                first.reason
            )
        };
        return Err(refuse(Refusal::new(first.code, reason)));
    }
    let n = checked.len() as u64;
    let acks = gw.publish_timed(checked, timing).await;
    gw.metrics().edge(GRPC).published(n);
    let mut results = Vec::with_capacity(acks.len());
    for a in acks {
        // Validation passed: what fails now is storage or shutdown.
        let a = a.map_err(|e| refuse(e.into()))?;
        results.push(PublishResult {
            offset: a.offset,
            duplicate: a.duplicate,
            error: None,
        });
    }
    Ok(PublishResponse {
        id: request.id,
        results,
    })
}

type Answer = Result<PublishResponse, Status>;

/// The PublishStream call's answers.
pub struct ResponseStream {
    rx: mpsc::Receiver<Answer>,
}

impl tokio_stream::Stream for ResponseStream {
    type Item = Answer;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// PublishStream: a connection (limits, shutdown) and one task that reads batches, hands
/// them to the hub at once and answers them in order as they become durable.
pub(crate) fn stream(
    svc: &Service,
    principal: Principal,
    ip: Option<IpAddr>,
    traceparent: Option<Vec<u8>>,
    inbound: Streaming<v1::PublishRequest>,
) -> Result<ResponseStream, Status> {
    let mut conn = svc
        .gateway
        .connect_from(GRPC, principal, ip, None)
        .map_err(|r| {
            svc.gateway.metrics().edge(GRPC).rejected();
            refused(&r)
        })?;
    if let Some(t) = traceparent {
        conn.set_traceparent(t);
    }
    let (tx, rx) = mpsc::channel(ANSWERS);
    tokio::spawn(run(conn, inbound, tx));
    Ok(ResponseStream { rx })
}

type Pending = Pin<Box<dyn Future<Output = Vec<PublishResponse>> + Send>>;

/// Requests already decoded and waiting are taken together, up to this many, so one hub
/// hand-off carries them all (a client sending one item per request otherwise pays a hub
/// round trip per message).
const READ_AHEAD: usize = 256;

/// Checks the items of the requests read in one turn (a refused item gets its error, the
/// others go on), hands the good ones to the hub at once, and returns their answers, one per
/// request in order, as a future.
async fn batch(conn: &Connection, requests: Vec<v1::PublishRequest>) -> Pending {
    let gw = conn.gateway().clone();
    // Per request: its id and how many items it had; the items' slots in one flat list (one
    // allocation per turn, not one per request: most publishers send one item per request).
    let mut answers: Vec<(u64, usize)> = Vec::with_capacity(requests.len());
    let mut slots: Vec<Result<usize, v1::Error>> = Vec::with_capacity(requests.len());
    let mut checked = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push((request.id, request.items.len()));
        for item in request.items {
            match request_of(&gw, item).and_then(|r| conn.check(r)) {
                Ok(c) => {
                    slots.push(Ok(checked.len()));
                    checked.push(c);
                }
                Err(r) => {
                    conn.refused();
                    slots.push(Err(error_of(&r)));
                }
            }
        }
    }
    let acks = if checked.is_empty() {
        None
    } else {
        Some(conn.enqueue(checked).await)
    };
    Box::pin(async move {
        let acks = match acks {
            Some(f) => f.await,
            None => Vec::new(),
        };
        let mut slots = slots.into_iter();
        answers
            .into_iter()
            .map(|(id, n)| PublishResponse {
                id,
                results: slots
                    .by_ref()
                    .take(n)
                    .map(|s| result_of(s, &acks))
                    .collect(),
            })
            .collect()
    })
}

/// One item's result: its refusal, or what the hub said of it.
fn result_of(slot: Result<usize, v1::Error>, acks: &[Result<Ack, Refusal>]) -> PublishResult {
    match slot.map(|i| acks.get(i)) {
        Ok(Some(Ok(a))) => PublishResult {
            offset: a.offset,
            duplicate: a.duplicate,
            error: None,
        },
        Ok(Some(Err(r))) => PublishResult {
            error: Some(error_of(r)),
            ..PublishResult::default()
        },
        Ok(None) => PublishResult {
            error: Some(v1::Error {
                code: ErrorCode::Internal.as_str().into(),
                message: "no result from the hub".into(),
            }),
            ..PublishResult::default()
        },
        Err(e) => PublishResult {
            error: Some(e),
            ..PublishResult::default()
        },
    }
}

async fn run(
    conn: Connection,
    mut inbound: Streaming<v1::PublishRequest>,
    tx: mpsc::Sender<Answer>,
) {
    let timeout = conn.gateway().write_timeout();
    let mut window: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut in_flight = 0usize;
    let mut reading = true;
    let mut token_at = conn.token_deadline();
    loop {
        if !reading && window.is_empty() {
            // Every batch the client sent is answered: the call ends.
            return;
        }
        tokio::select! {
            biased;
            _ = conn.closed() => {
                let reason = conn.close_reason().unwrap_or(CloseReason::Shutdown);
                let _ = tokio::time::timeout(
                    timeout,
                    tx.send(Err(status(close_code(&reason), reason.to_string()))),
                )
                .await;
                return;
            }
            answers = window.next(), if !window.is_empty() => {
                for a in answers.into_iter().flatten() {
                    in_flight = in_flight.saturating_sub(a.results.len());
                    // No timer while the queue has room (a timer per answer was a few per
                    // cent of a one-item-per-request publisher's CPU).
                    if send_within(&tx, Ok(a), timeout).await != Sent::Yes {
                        return;
                    }
                }
            }
            msg = inbound.message(), if reading && in_flight < MAX_IN_FLIGHT => match msg {
                Ok(Some(request)) => {
                    in_flight += request.items.len();
                    let mut requests = vec![request];
                    // What else has arrived is taken now (`message` is cancel-safe: a
                    // request not ready stays in the stream for the next turn).
                    while requests.len() < READ_AHEAD && in_flight < MAX_IN_FLIGHT {
                        match inbound.message().now_or_never() {
                            Some(Ok(Some(r))) => {
                                in_flight += r.items.len();
                                requests.push(r);
                            }
                            // The end of the client's stream, or a broken one: the requests
                            // read before it are still answered, then the call ends.
                            Some(Ok(None) | Err(_)) => {
                                reading = false;
                                break;
                            }
                            None => break,
                        }
                    }
                    window.push_back(batch(&conn, requests).await);
                }
                Ok(None) => reading = false,
                // The client cancelled or sent something undecodable: nobody to answer.
                Err(_) => return,
            },
            _ = tx.closed() => return,
            _ = sleep_until(token_at), if token_at.is_some() => {
                token_at = None;
                conn.expire();
            }
        }
    }
}
