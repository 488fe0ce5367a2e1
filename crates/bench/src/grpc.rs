//! Tickwire's gRPC calls through the server's own generated client, over tonic's HTTP/2
//! channel:
//!
//! - subscribers (`--sub-encoding grpc`): one `Subscribe` call, on its own HTTP/2 connection,
//!   per client, like one WebSocket per client. The bench quote (its `t` and `s` fields have no
//!   typed form) arrives as a `Push` whose payload is the published JSON, byte for byte. Each
//!   answer is taken as its raw `ServerMessage` bytes, in which those fields are found, as the
//!   binary WebSocket rows read their frames: every encoding is timed and counted alike;
//! - the ws-publish publisher (`--target tickwire-grpc`): ONE `PublishStream` call, one
//!   `PublishRequest` of one item per quote (the same JSON as the WebSocket `publish` command's
//!   `data`, as a `json` payload, to the same `quotes.S0042` channels), up to `--window`
//!   unanswered. The server answers each request once durable, in the order sent, echoing its
//!   id (docs/grpc.md): an answer is matched to the oldest request in flight and must carry its
//!   id, or the count of requests in flight can no longer be trusted and the run stops.
//!
//! Both also run over the h2 crate's client without tonic (`--grpc-client h2`, h2c.rs), which
//! leaves the server more of the cores the generator shares with it.

use std::{
    collections::VecDeque,
    future::poll_fn,
    net::SocketAddr,
    pin::Pin,
    sync::atomic::Ordering,
    task::Poll,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tickwire_edge_grpc::client::tickwire_client::TickwireClient;
use tickwire_proto::v1::{
    payload::Kind as PayloadKind, Payload, PublishItem, PublishRequest, PublishResponse,
    SubscribeRequest, Subscription,
};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{transport::Channel, Streaming};

use crate::{
    error::{BenchError, Result},
    msg::{now_micros, quote},
    open_loop::first_seq,
    proto::{channel, CLIENT_CREDENTIAL, PUBLISHER_CREDENTIAL},
    publish::{due, pacer, stamp, AckStats, MeasuredCpu, DRAIN_ACKS},
    scenario::{Phase, PubOutcome},
    RunArgs, Target,
};

pub(crate) mod h2c;

const NAME: &str = "tickwire-grpc";

/// Opens an HTTP/2 connection to the gRPC listener at `addr`, advertising `window` bytes of
/// receive window for each stream and for the connection (`None`: tonic's defaults).
async fn open(addr: SocketAddr, window: Option<u32>) -> Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| BenchError::proto(NAME, e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .map_err(|e| BenchError::proto(NAME, format!("connect {addr}: {e}")))
}

/// `Bearer <the first of `vars` that is set>`, if one is.
fn bearer(vars: &[&str]) -> Option<String> {
    vars.iter()
        .find_map(|v| std::env::var(v).ok().filter(|t| !t.is_empty()))
        .map(|token| format!("Bearer {token}"))
}

/// The credential a publishing call presents: the publisher's API key when set (the `publish`
/// scope), as the HTTP publishers present; else the client token, as the WebSocket
/// publisher's upgrade does.
const PUBLISH_CREDENTIALS: [&str; 2] = [PUBLISHER_CREDENTIAL, CLIENT_CREDENTIAL];

/// Adds `authorization: Bearer <the first of `vars` that is set>`, if one is.
fn authorize<T>(req: &mut tonic::Request<T>, vars: &[&str]) -> Result<()> {
    if let Some(b) = bearer(vars) {
        let v = b
            .parse()
            .map_err(|_| BenchError::Usage(format!("{vars:?}: not a header value")))?;
        req.metadata_mut().insert("authorization", v);
    }
    Ok(())
}

/// `ServerMessage` field tags (field number << 3 | length-delimited) of the two kinds a
/// subscriber looks at: `push = 1`, `subscribed = 2` (proto/tickwire/v1/tickwire.proto).
const TAG_PUSH: u8 = (1 << 3) | 2;
const TAG_SUBSCRIBED: u8 = (2 << 3) | 2;

/// The Subscribe call's codec as the subscribers use it: the request encoded by prost (tonic's
/// own encoder), each answer handed over as its raw `ServerMessage` bytes. The binary
/// WebSocket subscribers do not decode their frames either: the bench quote's JSON sits byte
/// for byte in a push's `json` payload, where its fields are found (msg.rs), so both encodings
/// are read alike and the gRPC rows do not spend the generator's CPU on a prost decode and two
/// allocations per push.
#[derive(Debug, Clone, Copy, Default)]
struct RawAnswers;

impl tonic::codec::Codec for RawAnswers {
    type Encode = SubscribeRequest;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<SubscribeRequest>;
    type Decoder = RawAnswers;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> RawAnswers {
        RawAnswers
    }
}

impl tonic::codec::Decoder for RawAnswers {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> std::result::Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The Subscribe request of a client on `symbols`' quote channels.
fn subscribe_request(symbols: &[usize]) -> SubscribeRequest {
    SubscribeRequest {
        subscriptions: symbols
            .iter()
            .map(|&s| Subscription {
                channel: channel(Target::TickwireWs, s),
                ..Default::default()
            })
            .collect(),
    }
}

/// One client's Subscribe call.
pub struct GrpcSub {
    stream: Streaming<Bytes>,
}

impl GrpcSub {
    /// Connects to the gRPC listener at `addr` and subscribes to `symbols`' quote channels;
    /// returns once the server confirmed every subscription.
    pub async fn subscribe(
        addr: SocketAddr,
        window: Option<u32>,
        symbols: &[usize],
    ) -> Result<GrpcSub> {
        let mut grpc = tonic::client::Grpc::new(open(addr, window).await?);
        let mut req = tonic::Request::new(subscribe_request(symbols));
        authorize(&mut req, &[CLIENT_CREDENTIAL])?;
        grpc.ready()
            .await
            .map_err(|e| BenchError::proto(NAME, format!("not ready: {e}")))?;
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/tickwire.v1.Tickwire/Subscribe");
        let mut stream = grpc
            .server_streaming(req, path, RawAnswers)
            .await
            .map_err(|s| BenchError::proto(NAME, format!("subscribe refused: {s}")))?
            .into_inner();
        let mut confirmed = 0;
        while confirmed < symbols.len() {
            match stream.message().await {
                Ok(Some(m)) if m.first() == Some(&TAG_SUBSCRIBED) => confirmed += 1,
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(BenchError::proto(NAME, "the call ended while subscribing"))
                }
                Err(s) => return Err(BenchError::proto(NAME, s.to_string())),
            }
        }
        Ok(GrpcSub { stream })
    }

    /// Waits for the next message and hands a push's raw `ServerMessage` bytes to `f` (its
    /// JSON payload is in them byte for byte); false when the call ended.
    pub async fn read_some(&mut self, f: &mut impl FnMut(&[u8])) -> Result<bool> {
        match self.stream.message().await {
            Ok(Some(m)) => {
                if m.first() == Some(&TAG_PUSH) {
                    f(&m);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(s) => Err(BenchError::proto(NAME, s.to_string())),
        }
    }
}

/// What a PublishStream answer holds that the publisher checks: the id it echoes, how many
/// results it carries, and the first result's error (`code: message`), if it has one. Built
/// from tonic's decoded answer, or read straight from the answer's bytes (`h2c::read_reply`).
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    id: u64,
    results: usize,
    error: Option<String>,
}

impl From<&PublishResponse> for Reply {
    fn from(r: &PublishResponse) -> Reply {
        Reply {
            id: r.id,
            results: r.results.len(),
            error: r
                .results
                .first()
                .and_then(|r| r.error.as_ref())
                .map(|e| format!("{}: {}", e.code, e.message)),
        }
    }
}

/// What one PublishStream answer says about the request it answers.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Stored: the request's send time (Unix µs).
    Stored(u64),
    /// Its item was refused: the send time and the item's error (`code: message`).
    Refused(u64, String),
}

/// Matches `resp` to the oldest request in flight (`(id, sent_us)`, in the order sent) and takes
/// that request out of the window. PublishStream answers in the order sent and echoes each id,
/// so the answer must carry the oldest request's id; each request holds one item, so it must
/// hold one result. Anything else is an `Err`: from then on the window's count (and every
/// latency matched through it) would be wrong.
fn match_answer(
    inflight: &mut VecDeque<(u64, u64)>,
    resp: &Reply,
) -> std::result::Result<Answer, String> {
    let Some(&(id, sent_us)) = inflight.front() else {
        return Err(format!(
            "an answer (id {}) with no request in flight",
            resp.id
        ));
    };
    if resp.id != id {
        return Err(format!(
            "an answer for id {} while the oldest request in flight is {id} (PublishStream \
             answers in the order sent)",
            resp.id
        ));
    }
    if resp.results != 1 {
        return Err(format!(
            "{} results in the answer to request {id}, which holds one item",
            resp.results
        ));
    }
    let answer = match &resp.error {
        None => Answer::Stored(sent_us),
        Some(e) => Answer::Refused(sent_us, e.clone()),
    };
    inflight.pop_front();
    Ok(answer)
}

/// One request of one item: `data` (the quote JSON) as a `json` payload, stored as is, as the
/// WebSocket `publish` command's `data` is.
fn request(id: u64, channel: &str, data: &[u8]) -> PublishRequest {
    PublishRequest {
        id,
        items: vec![PublishItem {
            channel: channel.to_string(),
            msg_id: String::new(),
            payload: Some(Payload {
                kind: Some(PayloadKind::Json(Bytes::copy_from_slice(data))),
            }),
        }],
    }
}

/// What both PublishStream publishers (tonic's client below, h2's in h2c.rs) keep: the
/// schedule, the requests in flight (`(id, sent_us)`, oldest first) and the counts. Counts
/// exactly as the WebSocket publisher does (publish.rs): sent and acked while the phase is
/// measuring, refused items as errors over the whole run.
struct Window<'a> {
    a: &'a RunArgs,
    total: Duration,
    /// Built once, one per symbol: a request's channel is one of these.
    channels: Vec<String>,
    first: u64,
    last: Vec<u64>,
    seq: u64,
    /// 0 is proto3's "unset": an answer that lost its id can never match a request.
    next_id: u64,
    inflight: VecDeque<(u64, u64)>,
    payload: Vec<u8>,
    st: AckStats,
    cpu: MeasuredCpu,
    first_error: Option<String>,
    start: Instant,
    /// `start` in Unix µs, for [`stamp`].
    start_us: u64,
    /// Fixed rate: how late each request went out after its stamp, while measuring.
    lag: Histogram<u64>,
    drain_until: Option<Instant>,
    measuring: bool,
}

impl<'a> Window<'a> {
    fn new(a: &'a RunArgs, total: Duration) -> Window<'a> {
        let nsym = a.symbols.max(1) as u64;
        Window {
            a,
            total,
            channels: (0..nsym as usize)
                .map(|i| channel(Target::TickwireWs, i))
                .collect(),
            first: first_seq(nsym),
            last: vec![0u64; nsym as usize],
            seq: 0,
            next_id: 1,
            inflight: VecDeque::with_capacity(a.window.max(1)),
            payload: Vec::with_capacity(a.size + 64),
            st: AckStats::new(),
            cpu: MeasuredCpu::default(),
            first_error: None,
            start: Instant::now(),
            start_us: now_micros(),
            lag: crate::stats::histogram(),
            drain_until: None,
            measuring: false,
        }
    }

    /// Starts a turn (reads the phase, accounts the CPU); true while still publishing.
    fn turn(&mut self, phase: &Phase) -> bool {
        self.measuring = phase.measuring.load(Ordering::Relaxed);
        self.cpu.turn(self.measuring, &mut self.st.cpu_s);
        self.start.elapsed() < self.total && self.seq < self.a.max_messages
    }

    /// Once publishing stopped: true when every request is answered, an error when some are
    /// not within [`DRAIN_ACKS`].
    fn drained(&mut self) -> Result<bool> {
        let until = *self
            .drain_until
            .get_or_insert_with(|| Instant::now() + DRAIN_ACKS);
        if self.inflight.is_empty() {
            return Ok(true);
        }
        if Instant::now() > until {
            return Err(BenchError::Timeout(format!(
                "{NAME}: {} publishes unanswered {}s after publishing stopped",
                self.inflight.len(),
                DRAIN_ACKS.as_secs()
            )));
        }
        Ok(false)
    }

    /// Tops the window up as answers free room, as the WebSocket publisher does: `send(id,
    /// channel, quote)` for each request due, until it says there is no room (false).
    fn top_up(&mut self, mut send: impl FnMut(u64, &str, &[u8]) -> Result<bool>) -> Result<()> {
        let due = due(self.a.rate, self.start.elapsed(), self.seq);
        let (window, per_write) = (self.a.window.max(1), self.a.batch.max(1) as u64);
        let nsym = self.channels.len() as u64;
        let mut n = due.min(per_write).min(self.a.max_messages - self.seq);
        while n > 0 && self.inflight.len() < window {
            let s = self.first + self.seq;
            let sym = (s % nsym) as usize;
            let t = stamp(self.a.rate, self.start_us, self.seq);
            self.payload.clear();
            quote(&mut self.payload, t, s, sym, self.a.size);
            if !send(self.next_id, &self.channels[sym], &self.payload)? {
                break;
            }
            self.inflight.push_back((self.next_id, t));
            self.next_id += 1;
            self.last[sym] = s;
            self.seq += 1;
            n -= 1;
            if self.measuring {
                self.st.sent += 1;
                if self.a.rate > 0 {
                    let _ = self.lag.record(now_micros().saturating_sub(t).max(1));
                }
            }
        }
        Ok(())
    }

    /// Counts one answer, received at `now` (Unix µs).
    fn answer(&mut self, reply: &Reply, now: u64) -> Result<()> {
        match match_answer(&mut self.inflight, reply).map_err(|e| BenchError::proto(NAME, e))? {
            Answer::Stored(t) => {
                if self.measuring {
                    self.st.acked += 1;
                    let _ = self.st.hist.record(now.saturating_sub(t).max(1));
                }
            }
            Answer::Refused(_, e) => {
                self.st.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
        Ok(())
    }

    fn unanswered(&self) -> usize {
        self.inflight.len()
    }

    fn finish(mut self) -> PubOutcome {
        self.cpu.end(&mut self.st.cpu_s);
        if let Some(e) = self.first_error {
            eprintln!(
                "tickwire bench: {} of the publishes were refused; the first error: {e}",
                self.st.errors
            );
        }
        PubOutcome {
            published: self.st.sent,
            last: self.last,
            acks: Some(self.st),
            lag: (self.a.rate > 0).then_some(self.lag),
        }
    }
}

/// The ws-publish publisher over one PublishStream call through tonic's client: publishes at
/// `--rate` (0: as fast as the window allows) until the time or count bound, then ends its
/// side of the call and waits for the outstanding answers. Runs on the publisher's own
/// thread, with tonic's connection tasks on the same runtime, so `cpu_s` includes HTTP/2
/// framing and protobuf coding.
pub(crate) async fn stream_publisher(
    a: &RunArgs,
    phase: &Phase,
    total: Duration,
) -> Result<PubOutcome> {
    let mut client = TickwireClient::new(open(a.addr, None).await?);
    // Requests wait here for tonic's encoder. They count as in flight, and at most `window`
    // are, so `try_send` always finds room.
    let (tx, rx) = mpsc::channel::<PublishRequest>(a.window.max(1));
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    authorize(&mut req, &PUBLISH_CREDENTIALS)?;
    let call = tokio::time::timeout(Duration::from_secs(10), client.publish_stream(req))
        .await
        .map_err(|_| BenchError::Timeout(format!("{NAME}: PublishStream call not answered")))?;
    let mut answers = call
        .map_err(|s| BenchError::proto(NAME, format!("PublishStream refused: {s}")))?
        .into_inner();
    let mut tx = Some(tx);
    let mut w = Window::new(a, total);
    let mut tick = pacer(a.rate);
    'turns: loop {
        if !w.turn(phase) {
            // Ends the request stream: the server answers what it has read, then ends the call.
            tx = None;
            if w.drained()? {
                break;
            }
        }
        if let Some(tx) = tx.as_ref() {
            w.top_up(
                |id, channel, quote| match tx.try_send(request(id, channel, quote)) {
                    Ok(()) => Ok(true),
                    Err(TrySendError::Full(_)) => Ok(false),
                    Err(TrySendError::Closed(_)) => {
                        Err(BenchError::proto(NAME, "the call ended while publishing"))
                    }
                },
            )?;
        }
        let got = tokio::select! {
            m = answers.message() => m,
            _ = tick.tick() => continue,
        };
        // One clock read per turn, as the socket publishers take one per read.
        let now = now_micros();
        let mut next = Some(got);
        while let Some(m) = next.take() {
            let resp = match m {
                Ok(Some(resp)) => resp,
                Ok(None) if w.unanswered() == 0 && tx.is_none() => break 'turns,
                Ok(None) => {
                    return Err(BenchError::proto(
                        NAME,
                        format!(
                            "the call ended with {} publishes unanswered",
                            w.unanswered()
                        ),
                    ))
                }
                Err(s) => return Err(BenchError::proto(NAME, format!("the call failed: {s}"))),
            };
            w.answer(&Reply::from(&resp), now)?;
            // Takes every answer already decoded in this turn rather than one per turn (and one
            // timer poll per answer): Pending registers the waker, harmless if unused.
            next = poll_fn(|cx| match Pin::new(&mut answers).poll_next(cx) {
                Poll::Ready(m) => Poll::Ready(Some(m.transpose())),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
        }
    }
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use tickwire_proto::v1::{Error, PublishResult};

    use super::*;

    fn answer(id: u64, results: Vec<PublishResult>) -> Reply {
        Reply::from(&PublishResponse { id, results })
    }

    fn stored() -> PublishResult {
        PublishResult {
            offset: 7,
            ..PublishResult::default()
        }
    }

    #[test]
    fn answers_match_the_requests_in_the_order_sent() {
        let mut w: VecDeque<(u64, u64)> = [(1, 100), (2, 200), (3, 300)].into();
        assert_eq!(
            match_answer(&mut w, &answer(1, vec![stored()])),
            Ok(Answer::Stored(100))
        );
        let refused = PublishResult {
            error: Some(Error {
                code: "bad_data".into(),
                message: "`bid` is not a decimal".into(),
            }),
            ..PublishResult::default()
        };
        assert_eq!(
            match_answer(&mut w, &answer(2, vec![refused])),
            Ok(Answer::Refused(
                200,
                "bad_data: `bid` is not a decimal".into()
            ))
        );
        assert_eq!(w, VecDeque::from([(3, 300)]));
    }

    #[test]
    fn an_answer_out_of_order_or_to_nothing_stops_the_count() {
        let mut w: VecDeque<(u64, u64)> = [(5, 1), (6, 2)].into();
        // Another id than the oldest's (an answer skipped, or reordered): nothing is taken.
        let e = match_answer(&mut w, &answer(6, vec![stored()])).unwrap_err();
        assert!(e.contains("id 6") && e.contains("is 5"), "{e}");
        assert_eq!(w.len(), 2);
        // An answer without its id (proto3's 0): requests start at 1, so it never matches.
        assert!(match_answer(&mut w, &answer(0, vec![stored()])).is_err());
        // No request in flight at all.
        let mut empty = VecDeque::new();
        let e = match_answer(&mut empty, &answer(5, vec![stored()])).unwrap_err();
        assert!(e.contains("no request in flight"), "{e}");
    }

    #[test]
    fn a_one_item_request_gets_exactly_one_result() {
        let mut w: VecDeque<(u64, u64)> = [(1, 1)].into();
        for results in [vec![], vec![stored(), stored()]] {
            let n = results.len();
            let e = match_answer(&mut w, &answer(1, results)).unwrap_err();
            assert!(e.starts_with(&format!("{n} results")), "{e}");
            assert_eq!(w.len(), 1, "the request stays in flight");
        }
    }

    #[test]
    fn a_request_carries_the_websocket_rows_channel_and_quote() {
        let mut data = Vec::new();
        quote(&mut data, 1_700_000_000_000_000, 42_042, 42, 100);
        let ch = channel(Target::TickwireWs, 42);
        let r = request(9, &ch, &data);
        assert_eq!(r.id, 9);
        let [item] = r.items.as_slice() else {
            panic!("one item: {r:?}")
        };
        assert_eq!(item.channel, "quotes.S0042");
        assert!(
            item.msg_id.is_empty(),
            "no idempotency key, as the WebSocket rows"
        );
        match item.payload.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(PayloadKind::Json(b)) => assert_eq!(&b[..], &data[..]),
            other => panic!("a json payload, not {other:?}"),
        }
    }
}
