//! The gRPC edge end to end, with the generated Rust client against the real binary on
//! `[grpc] listen`: Publish and PublishStream (acks in order), Subscribe (snapshot then
//! updates, stream channels from an offset in an epoch, resume after a disconnect with no gap
//! and no duplicate), History, Latest, refusals as statuses with the protocol code in the
//! `tickwire-code` trailer, identity from metadata, `grpc.health.v1` (Check and Watch), server
//! reflection, and the `Disconnect` a shutdown sends. The Python grpcio client does the same
//! from the proto file (tests/interop/grpc, scripts/test-grpc.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Server;
use tickwire_edge_grpc::client::tickwire_client::TickwireClient;
use tickwire_proto::v1::{
    payload, server_message::Kind, BookLevel, BookUpdate, CandlesRequest, ChannelClass,
    HistoryRequest, LatestRequest, Payload, PublishItem, PublishRequest, Quote, ServerMessage,
    SubscribeRequest, Subscription,
};
use tokio_stream::StreamExt;
use tonic::{transport::Channel, Code, Request, Status, Streaming};

const WAIT: Duration = Duration::from_secs(20);

fn start(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> (Server, String) {
    let mut env = vec![("TICKWIRE_GRPC__LISTEN", "127.0.0.1:0")];
    env.extend_from_slice(extra_env);
    let srv = Server::start(&dir.join("d"), &[], &env);
    let url = format!("http://{}", srv.grpc_addr());
    (srv, url)
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(WAIT)
        .connect()
        .await
        .expect("connect to the gRPC listener")
}

async fn client(url: &str) -> TickwireClient<Channel> {
    TickwireClient::new(channel(url).await)
}

fn json(channel: &str, data: &str, msg_id: &str) -> PublishItem {
    PublishItem {
        channel: channel.into(),
        msg_id: msg_id.into(),
        payload: Some(Payload {
            kind: Some(payload::Kind::Json(data.to_string().into())),
        }),
    }
}

fn quote(channel: &str, q: Quote) -> PublishItem {
    PublishItem {
        channel: channel.into(),
        msg_id: String::new(),
        payload: Some(Payload {
            kind: Some(payload::Kind::Quote(q)),
        }),
    }
}

fn sub(channel: &str, from: Option<u64>, epoch: &str) -> Subscription {
    Subscription {
        channel: channel.into(),
        from,
        epoch: epoch.into(),
        ..Subscription::default()
    }
}

fn subscribe_request(subs: Vec<Subscription>) -> SubscribeRequest {
    SubscribeRequest {
        subscriptions: subs,
    }
}

async fn next(s: &mut Streaming<ServerMessage>) -> Kind {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("a message within the timeout")
        .expect("the call goes on")
        .expect("the stream has not ended")
        .kind
        .expect("a message kind")
}

/// The protocol code a refusal carries in its `tickwire-code` trailer.
fn code_of(s: &Status) -> String {
    s.metadata()
        .get("tickwire-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Pushes (offset, JSON data) until `n` have arrived.
async fn take(s: &mut Streaming<ServerMessage>, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        match next(s).await {
            Kind::Push(p) => match p.payload.and_then(|p| p.kind) {
                Some(payload::Kind::Json(b)) => {
                    got.push((p.offset, String::from_utf8(b.to_vec()).unwrap()))
                }
                other => panic!("a JSON payload, not {other:?}"),
            },
            other => panic!("a push, not {other:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_subscribe_resume_history_latest_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, url) = start(dir.path(), &[]);
    let mut c = client(&url).await;

    // Publish (unary): a typed quote; its decimals come back with every digit.
    let bid = "1.084120000000000000000000001";
    let r = c
        .publish(PublishRequest {
            id: 0,
            items: vec![quote(
                "quotes.EURUSD",
                Quote {
                    bid: bid.into(),
                    ask: "1.0843".into(),
                    ..Quote::default()
                },
            )],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 1);
    assert!(r.results[0].error.is_none());

    // Subscribe: a state channel (snapshot) and a stream channel from 0.
    let mut s = c
        .subscribe(subscribe_request(vec![
            sub("quotes.EURUSD", None, ""),
            sub("chat.g", Some(0), ""),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Kind::Subscribed(a) = next(&mut s).await else {
        panic!("Subscribed first")
    };
    assert_eq!(
        (a.channel.as_str(), a.class),
        ("quotes.EURUSD", ChannelClass::State as i32)
    );
    assert!(a.snapshot);
    let Kind::Subscribed(b) = next(&mut s).await else {
        panic!("Subscribed second")
    };
    assert_eq!(
        (b.channel.as_str(), b.class),
        ("chat.g", ChannelClass::Stream as i32)
    );
    assert_eq!(b.offset, Some(0));
    let epoch = b.epoch.clone();
    assert_eq!(epoch.len(), 16, "{epoch:?}");
    let Kind::Push(snap) = next(&mut s).await else {
        panic!("the snapshot")
    };
    assert!(snap.snapshot);
    match snap.payload.and_then(|p| p.kind) {
        Some(payload::Kind::Quote(q)) => {
            assert_eq!((q.bid.as_str(), q.ask.as_str()), (bid, "1.0843"))
        }
        other => panic!("a typed quote, not {other:?}"),
    }

    // PublishStream: three batches sent without waiting, answered in order, echoing ids.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for id in 1..=3u64 {
        let items = (0..2)
            .map(|k| json("chat.g", &format!("{{\"n\":{}}}", (id - 1) * 2 + k), ""))
            .collect();
        tx.send(PublishRequest { id, items }).await.unwrap();
    }
    let mut answers = c
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    for id in 1..=3u64 {
        let a = tokio::time::timeout(WAIT, answers.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(a.id, id, "answers come in the order sent");
        offsets.extend(a.results.iter().map(|r| {
            assert!(r.error.is_none(), "{r:?}");
            r.offset
        }));
    }
    assert_eq!(offsets, (0..6).collect::<Vec<u64>>());
    // A refused item gets its error in its result; the others in its batch are stored.
    tx.send(PublishRequest {
        id: 4,
        items: vec![
            json("chat.g", "{\"n\":6}", "m6"),
            json("no spaces allowed", "{}", ""),
        ],
    })
    .await
    .unwrap();
    let a = tokio::time::timeout(WAIT, answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(a.id, 4);
    assert_eq!(a.results[0].offset, 6);
    assert!(a.results[0].error.is_none());
    assert_eq!(a.results[1].error.as_ref().unwrap().code, "bad_channel");
    drop(tx);
    assert!(
        tokio::time::timeout(WAIT, answers.message())
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "the call ends once every batch is answered"
    );

    // The subscriber sees the stream in order; then it disconnects after four.
    let first = take(&mut s, 4).await;
    assert_eq!(
        first,
        (0..4)
            .map(|n| (n, format!("{{\"n\":{n}}}")))
            .collect::<Vec<_>>()
    );
    drop(s);
    // More arrive while it is away.
    let r = c
        .publish(PublishRequest {
            id: 0,
            items: (7..10)
                .map(|n| json("chat.g", &format!("{{\"n\":{n}}}"), ""))
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.results.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    // Resume from the next offset in the same epoch: no gap, no duplicate.
    let mut s = c
        .subscribe(subscribe_request(vec![sub("chat.g", Some(4), &epoch)]))
        .await
        .unwrap()
        .into_inner();
    let Kind::Subscribed(b) = next(&mut s).await else {
        panic!("Subscribed")
    };
    assert_eq!(b.offset, Some(4));
    let rest = take(&mut s, 6).await;
    assert_eq!(
        rest,
        (4..10)
            .map(|n| (n, format!("{{\"n\":{n}}}")))
            .collect::<Vec<_>>()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.message())
            .await
            .is_err(),
        "nothing after the last message"
    );

    // Recent history instead of `from`, as on the WebSocket: the newest two, then live.
    let mut recent = c
        .subscribe(subscribe_request(vec![Subscription {
            last: Some(2),
            ..sub("chat.g", None, "")
        }]))
        .await
        .unwrap()
        .into_inner();
    let Kind::Subscribed(b) = next(&mut recent).await else {
        panic!("Subscribed")
    };
    assert_eq!(b.offset, Some(8));
    assert_eq!(
        take(&mut recent, 2).await,
        vec![(8, "{\"n\":8}".to_string()), (9, "{\"n\":9}".to_string())]
    );
    drop(recent);
    let e = c
        .subscribe(subscribe_request(vec![Subscription {
            last: Some(2),
            ..sub("chat.g", Some(0), "")
        }]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (Code::InvalidArgument, "bad_request")
    );

    // History: the stored messages with their ids; Latest: the newest value, typed.
    let h = c
        .history(HistoryRequest {
            channel: "chat.g".into(),
            from: 5,
            limit: 3,
            epoch: epoch.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.messages.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(h.messages[1].msg_id, "m6");
    assert_eq!((h.next, h.epoch.as_str()), (8, epoch.as_str()));
    let l = c
        .latest(LatestRequest {
            channel: "quotes.EURUSD".into(),
        })
        .await
        .unwrap()
        .into_inner();
    match l.message.and_then(|m| m.payload).and_then(|p| p.kind) {
        Some(payload::Kind::Quote(q)) => assert_eq!(q.bid, bid),
        other => panic!("a typed quote, not {other:?}"),
    }

    // Refusals: the status from the one table, the protocol code in the trailer.
    let e = c
        .subscribe(subscribe_request(vec![sub("no spaces allowed", None, "")]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (Code::InvalidArgument, "bad_channel")
    );
    let e = c
        .subscribe(subscribe_request(vec![sub(
            "chat.g",
            Some(0),
            "00000000000000ff",
        )]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (Code::FailedPrecondition, "epoch_mismatch"),
        "{e:?}"
    );
    let e = c
        .subscribe(subscribe_request(vec![sub("chat.g", Some(1_000), "")]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (Code::OutOfRange, "offset_out_of_range"),
        "{e:?}"
    );
    let e = c
        .publish(PublishRequest {
            id: 0,
            items: vec![quote(
                "quotes.X",
                Quote {
                    bid: "1e5".into(),
                    ..Quote::default()
                },
            )],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (Code::InvalidArgument, "bad_data"),
        "{e:?}"
    );
    let e = c
        .latest(LatestRequest {
            channel: "quotes.NOPE".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (Code::NotFound, "not_found"),
        "{e:?}"
    );

    // Candles: the projection's bars of the quote published above (the mid), decimals as
    // strings; a resolution that is not built and an unknown symbol are refused.
    let req = |symbol: &str, resolution: &str| CandlesRequest {
        symbol: symbol.into(),
        resolution: resolution.into(),
        ..CandlesRequest::default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let bars = loop {
        let r = c.candles(req("EURUSD", "1m")).await;
        if let Ok(r) = r {
            if !r.get_ref().candles.is_empty() {
                break r.into_inner();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no candle bars");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(bars.channel, "candles.EURUSD.1m");
    assert_eq!(bars.candles[0].open, "1.0842100000000000000000000005");
    // Final once its minute has passed (the test may cross a minute boundary).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let bar = &bars.candles[0];
    if bar.start_ms + 60_000 > now_ms + 1_000 {
        assert!(!bar.r#final, "the live bar is not final: {bar:?}");
    } else if bar.start_ms + 60_000 < now_ms - 1_000 {
        assert!(bar.r#final, "a bar whose minute passed is final: {bar:?}");
    }
    let e = c.candles(req("EURUSD", "7m")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c.candles(req("NOPE", "1m")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

/// One item per request, sent without waiting: the server takes what has arrived together (one
/// hub hand-off), yet answers each request on its own, in order, a refused one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_stream_answers_each_pipelined_request_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, url) = start(dir.path(), &[]);
    let mut c = client(&url).await;
    let bad = |id: u64| id % 17 == 5;
    let reqs = (0..200u64).map(move |id| PublishRequest {
        id,
        items: vec![if bad(id) {
            json("no spaces allowed", "{}", "")
        } else {
            json("chat.p", &format!("{{\"n\":{id}}}"), "")
        }],
    });
    let mut answers = c
        .publish_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut next_offset = 0;
    for id in 0..200u64 {
        let a = tokio::time::timeout(WAIT, answers.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.id, a.results.len()),
            (id, 1),
            "answers come in the order sent"
        );
        match &a.results[0].error {
            Some(e) => assert!(bad(id) && e.code == "bad_channel", "{a:?}"),
            None => {
                assert!(!bad(id), "{a:?}");
                assert_eq!(a.results[0].offset, next_offset);
                next_offset += 1;
            }
        }
    }
    assert!(tokio::time::timeout(WAIT, answers.message())
        .await
        .unwrap()
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_larger_than_max_message_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, url) = start(dir.path(), &[("TICKWIRE_GRPC__MAX_MESSAGE_BYTES", "65536")]);
    let mut c = client(&url).await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
    let e = c
        .publish(PublishRequest {
            id: 0,
            items: vec![json("chat.big", &big, "")],
        })
        .await
        .unwrap_err();
    // tonic refuses an oversized message with OUT_OF_RANGE (grpc-go says RESOURCE_EXHAUSTED).
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    assert!(e.message().contains("too large"), "{e:?}");
    let small = format!("{{\"pad\":\"{}\"}}", "x".repeat(60_000));
    assert!(c
        .publish(PublishRequest {
            id: 0,
            items: vec![json("chat.big", &small, "")],
        })
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_identity_comes_from_metadata_with_the_same_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, url) = start(dir.path(), &[("TICKWIRE_API_KEYS", "[\"k-grpc-1\"]")]);
    let mut c = client(&url).await;
    let batch = || PublishRequest {
        id: 0,
        items: vec![json("chat.p", "{\"n\":1}", "")],
    };

    // No credential: publishing is refused, a signed-in-only channel too; market data is open.
    let e = c.publish(batch()).await.unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (Code::Unauthenticated, "unauthorized")
    );
    let e = c
        .subscribe(subscribe_request(vec![sub("chat.p", None, "")]))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::Unauthenticated | Code::PermissionDenied),
        "{e:?}"
    );
    assert!(c
        .subscribe(subscribe_request(vec![sub("quotes.EURUSD", None, "")]))
        .await
        .is_ok());

    // A wrong key is refused, not taken as anonymous.
    let mut req = Request::new(batch());
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let e = c.publish(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // The key as a bearer token, or as x-api-key.
    let mut req = Request::new(batch());
    req.metadata_mut()
        .insert("authorization", "Bearer k-grpc-1".parse().unwrap());
    assert!(c.publish(req).await.is_ok());
    let mut req = Request::new(subscribe_request(vec![sub("chat.p", Some(0), "")]));
    req.metadata_mut()
        .insert("x-api-key", "k-grpc-1".parse().unwrap());
    let mut s = c.subscribe(req).await.unwrap().into_inner();
    assert!(matches!(next(&mut s).await, Kind::Subscribed(_)));
    assert_eq!(take(&mut s, 1).await[0].1, "{\"n\":1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reflection_and_the_disconnect_a_shutdown_sends() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };

    let dir = tempfile::tempdir().unwrap();
    let (mut srv, url) = start(dir.path(), &[]);
    let ch = channel(&url).await;

    let mut health = HealthClient::new(ch.clone());
    for service in ["", "tickwire.v1.Tickwire"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let e = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Reflection lists the service, so grpcurl needs no proto file.
    let mut refl = ServerReflectionClient::new(ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    })
    .await
    .unwrap();
    let mut answers = refl
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(l)) = r.message_response else {
        panic!("a service list: {r:?}")
    };
    let names: Vec<&str> = l.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["tickwire.v1.Tickwire", "grpc.health.v1.Health"] {
        assert!(names.contains(&want), "{names:?}");
    }
    drop(tx);

    // A subscriber on a stream channel; then the server shuts down: the call gets a
    // Disconnect (code `unavailable`, the resume offset) before it ends.
    let mut c = TickwireClient::new(ch.clone());
    c.publish(PublishRequest {
        id: 0,
        items: (0..3)
            .map(|n| json("chat.s", &format!("{{\"n\":{n}}}"), ""))
            .collect(),
    })
    .await
    .unwrap();
    let mut s = c
        .subscribe(subscribe_request(vec![sub("chat.s", Some(0), "")]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut s).await, Kind::Subscribed(_)));
    assert_eq!(take(&mut s, 3).await.len(), 3);
    let st = tokio::task::spawn_blocking(move || srv.terminate())
        .await
        .unwrap();
    assert!(st.success(), "{st:?}");
    let Kind::Disconnect(d) = next(&mut s).await else {
        panic!("a Disconnect")
    };
    assert_eq!(d.code, "unavailable");
    assert_eq!(d.resume.get("chat.s"), Some(&3), "{d:?}");
    let end = tokio::time::timeout(WAIT, s.message()).await.unwrap();
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    // Watch saw the drain (NOT_SERVING) or the connection end; either way not SERVING.
    if let Ok(Some(m)) = tokio::time::timeout(WAIT, watch.message()).await.unwrap() {
        assert_eq!(m.status, ServingStatus::NotServing as i32);
    }
}

fn levels(v: &[(&str, &str)]) -> Vec<BookLevel> {
    v.iter()
        .map(|(p, s)| BookLevel {
            price: p.to_string(),
            size: s.to_string(),
        })
        .collect()
}

fn depth(snapshot: bool, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> PublishItem {
    PublishItem {
        channel: "depth.GBPUSD".into(),
        msg_id: String::new(),
        payload: Some(Payload {
            kind: Some(payload::Kind::Book(BookUpdate {
                snapshot,
                bids: levels(bids),
                asks: levels(asks),
                ..BookUpdate::default()
            })),
        }),
    }
}

/// Depth published over gRPC (typed levels) is built into `book.<SYM>` by the book
/// projection; a gRPC subscriber gets the book as a typed snapshot with its sequence number and
/// checksum, then typed deltas that follow it (size "0" deletes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_depth_publishers_feed_books_served_as_snapshot_then_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, url) = start(dir.path(), &[]);
    let mut c = client(&url).await;
    c.publish(PublishRequest {
        id: 0,
        items: vec![depth(
            true,
            &[("1.25", "5"), ("1.24", "2")],
            &[("1.26", "7")],
        )],
    })
    .await
    .unwrap();
    // The projection publishes within its flush interval.
    let deadline = tokio::time::Instant::now() + WAIT;
    while c
        .latest(LatestRequest {
            channel: "book.GBPUSD".into(),
        })
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "no book");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = c
        .subscribe(subscribe_request(vec![sub("book.GBPUSD", None, "")]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut s).await, Kind::Subscribed(x) if x.snapshot));
    let book = |k: Kind| match k {
        Kind::Push(p) => match p.payload.and_then(|p| p.kind) {
            Some(payload::Kind::Book(b)) => b,
            other => panic!("a typed book value, not {other:?}"),
        },
        other => panic!("a push, not {other:?}"),
    };
    let snap = book(next(&mut s).await);
    assert!(snap.snapshot);
    assert_eq!(snap.bids, levels(&[("1.25", "5"), ("1.24", "2")]));
    assert_eq!(snap.asks, levels(&[("1.26", "7")]));
    assert_ne!(snap.checksum, 0);

    c.publish(PublishRequest {
        id: 0,
        items: vec![depth(false, &[("1.25", "0"), ("1.245", "3")], &[])],
    })
    .await
    .unwrap();
    let d = book(next(&mut s).await);
    assert!(!d.snapshot);
    assert_eq!((d.prev_seq, d.seq), (snap.seq, snap.seq + 1));
    let mut bids = d.bids.clone();
    bids.sort_by(|a, b| a.price.cmp(&b.price));
    assert_eq!(bids, levels(&[("1.245", "3"), ("1.25", "0")]));
    assert_ne!(d.checksum, snap.checksum);
}

/// With `drain_delay_ms`, SIGTERM first turns health NOT_SERVING (as /readyz fails) while calls
/// are still served; then subscribers get their Disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_turns_not_serving_during_the_drain_delay_while_calls_are_served() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, url) = start(dir.path(), &[("TICKWIRE_DRAIN_DELAY_MS", "3000")]);
    let ch = channel(&url).await;
    let mut health = HealthClient::new(ch.clone());
    let check = |mut h: HealthClient<Channel>| async move {
        h.check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
    };
    assert_eq!(check(health.clone()).await, ServingStatus::Serving as i32);
    let pid = srv.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while check(health.clone()).await != ServingStatus::NotServing as i32 {
        assert!(tokio::time::Instant::now() < deadline, "still SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Draining, not gone: a publish is still taken.
    let mut c = TickwireClient::new(ch);
    assert!(c
        .publish(PublishRequest {
            id: 0,
            items: vec![json("chat.d", "{}", "")],
        })
        .await
        .is_ok());
    let _ = health.check(HealthCheckRequest::default()).await;
    assert!(
        tokio::task::spawn_blocking(move || srv.terminate().success())
            .await
            .unwrap()
    );
}
