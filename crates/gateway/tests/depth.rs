#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A connection subscribed to a book channel at a depth of its own, on a real hub: it gets a
//! snapshot of the best N levels a side, then deltas that keep exactly those levels (a deleted
//! best level pulls the next one in), every checksum that of what it holds; a slow connection
//! gets one conflated delta; a change outside its view sends nothing; a channel that loses its
//! book and gets a new one is still served as a delta from what the client holds.

use std::sync::Arc;

use bytes::Bytes;
use tickwire_feed::l2::{Applied, L2Book, L2Msg, LevelText};
use tickwire_gateway::{Connection, Edge, ErrorCode, Event, Gateway, GatewayConfig, Principal};
use tickwire_hub::{Channel, Hub, HubConfig, PublishRequest};

fn ch(s: &str) -> Channel {
    Channel::parse(s).unwrap()
}

async fn publish(hub: &Hub, channel: &str, m: &L2Msg) {
    let r = hub
        .publish(vec![PublishRequest {
            channel: ch(channel),
            msg_id: None,
            data: Bytes::from(m.to_json()),
        }])
        .await
        .remove(0);
    r.unwrap();
}

/// The channel's producer: its whole book and the values that build it.
struct Producer {
    book: L2Book,
}

impl Producer {
    fn snapshot(seq: u64, depth: u32, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> L2Msg {
        let own = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(p, s)| (p.to_string(), s.to_string()))
                .collect::<Vec<LevelText>>()
        };
        let mut m = L2Msg {
            snapshot: true,
            seq,
            depth,
            bids: own(bids),
            asks: own(asks),
            ..L2Msg::default()
        };
        m.checksum = L2Book::from_snapshot(&m).checksum();
        m
    }

    /// The next delta, setting (bid?, price, size) levels.
    fn delta(&mut self, levels: &[(bool, &str, &str)]) -> L2Msg {
        let mut m = L2Msg {
            seq: self.book.seq() + 1,
            prev: self.book.seq(),
            ..L2Msg::default()
        };
        for &(bid, p, s) in levels {
            let side = if bid { &mut m.bids } else { &mut m.asks };
            side.push((p.to_string(), s.to_string()));
        }
        assert_eq!(self.book.apply(&m), Applied::Ok);
        m.checksum = self.book.checksum();
        m
    }

    /// The best `n` levels a side.
    fn best(&self, n: usize) -> (Vec<LevelText>, Vec<LevelText>) {
        let (b, a) = self.book.levels();
        (
            b.into_iter().take(n).collect(),
            a.into_iter().take(n).collect(),
        )
    }
}

/// The book values of one drain (waits for the session to have something).
async fn values(conn: &mut Connection) -> Vec<L2Msg> {
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), conn.next())
        .await
        .expect("a drain");
    match got {
        Event::Deliver(ds) => ds
            .iter()
            .map(|d| L2Msg::parse(&d.message.publication.data).unwrap())
            .collect(),
        Event::Close(r) => panic!("closed: {r:?}"),
    }
}

/// Applies a value as docs/books.md says and checks its checksum against what is held.
fn apply(client: &mut L2Book, m: &L2Msg) {
    assert_eq!(client.apply(m), Applied::Ok, "{m:?}");
    assert_eq!(
        client.checksum(),
        m.checksum,
        "the held book verifies: {m:?}"
    );
}

fn setup() -> (tempfile::TempDir, Arc<Hub>, Arc<Gateway>) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(Hub::open(HubConfig::new(dir.path())).unwrap());
    let gw = Gateway::new(hub.clone(), GatewayConfig::default()).unwrap();
    (dir, hub, gw)
}

#[tokio::test]
async fn a_depth_subscriber_holds_the_best_n_levels_through_conflation_and_a_lost_book() {
    let (_dir, hub, gw) = setup();
    let c = "book.DEP";
    let snap = Producer::snapshot(
        7,
        0,
        &[
            ("1.10", "1"),
            ("1.09", "2"),
            ("1.08", "3"),
            ("1.07", "4"),
            ("1.06", "5"),
        ],
        &[("1.11", "1"), ("1.12", "2"), ("1.13", "3")],
    );
    let mut producer = Producer {
        book: L2Book::from_snapshot(&snap),
    };
    publish(&hub, c, &snap).await;

    let mut conn = gw.connect(Edge("test"), Principal::Open).unwrap();
    let r = conn.subscribe_book(&ch("quotes.DEP"), 2).unwrap_err();
    assert_eq!(r.code, ErrorCode::BadRequest, "{r:?}");
    assert!(conn.subscribe_book(&ch(c), 2).unwrap().snapshot);
    let mut client = L2Book::default();

    let first = values(&mut conn).await;
    assert_eq!(first.len(), 1);
    let s = &first[0];
    assert!(s.snapshot);
    assert_eq!((s.seq, s.depth), (7, 2));
    apply(&mut client, s);
    assert_eq!(client.levels(), producer.best(2));

    // Slow: several deltas before the connection drains. The best bid and the next go (two
    // deeper levels come in), a better ask arrives (the worst of the view leaves), and a level
    // outside the view changes.
    let steps: Vec<Vec<(bool, &str, &str)>> = vec![
        vec![(true, "1.10", "0")],
        vec![(true, "1.09", "9"), (true, "1.06", "7")],
        vec![(true, "1.09", "0"), (false, "1.105", "6")],
        vec![(false, "1.13", "8")],
    ];
    for levels in &steps {
        publish(&hub, c, &producer.delta(levels)).await;
    }
    let got = values(&mut conn).await;
    assert_eq!(got.len(), 1, "one conflated value: {got:?}");
    let d = &got[0];
    assert!(!d.snapshot);
    assert_eq!((d.prev, d.seq), (7, producer.book.seq()));
    apply(&mut client, d);
    assert_eq!(client.levels(), producer.best(2));
    assert_eq!(
        client.levels(),
        (
            vec![("1.08".into(), "3".into()), ("1.07".into(), "4".into())],
            vec![("1.105".into(), "6".into()), ("1.11".into(), "1".into())],
        )
    );

    // A change below the view: the value is dropped, nothing reaches the client.
    publish(&hub, c, &producer.delta(&[(true, "1.06", "1")])).await;
    assert!(values(&mut conn).await.is_empty());
    // The next change in view says `prev` is the last value the client got.
    let held = client.seq();
    publish(&hub, c, &producer.delta(&[(true, "1.07", "5")])).await;
    let got = values(&mut conn).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].prev, got[0].seq), (held, producer.book.seq()));
    apply(&mut client, &got[0]);
    assert_eq!(client.levels(), producer.best(2));

    // The channel loses its book (a delta that does not follow): nothing can be served until
    // it has one again; then the client gets a delta from what it holds, never a gap.
    let lost = L2Msg {
        seq: producer.book.seq() + 6,
        prev: producer.book.seq() + 5,
        bids: vec![("1.01".into(), "1".into())],
        ..L2Msg::default()
    };
    publish(&hub, c, &lost).await;
    assert!(values(&mut conn).await.is_empty());
    let fresh = Producer::snapshot(
        lost.seq + 1,
        0,
        &[("1.08", "3"), ("1.04", "1")],
        &[("1.105", "6"), ("1.2", "1")],
    );
    producer.book = L2Book::from_snapshot(&fresh);
    let held = client.seq();
    publish(&hub, c, &fresh).await;
    let got = values(&mut conn).await;
    assert_eq!(got.len(), 1);
    assert!(!got[0].snapshot);
    assert_eq!((got[0].prev, got[0].seq), (held, fresh.seq));
    apply(&mut client, &got[0]);
    assert_eq!(client.levels(), producer.best(2));

    // Without a depth, the same connection gets the channel's values as they are.
    conn.unsubscribe(&ch(c)).unwrap();
    assert!(conn.subscribe(&ch(c), None, None).unwrap().snapshot);
    let got = values(&mut conn).await;
    assert_eq!(L2Book::from_snapshot(&got[0]).levels(), producer.best(10));
}

/// A depth above what the channel keeps serves the channel's levels, and the snapshot says
/// the depth served; depth 0 is a plain subscription.
#[tokio::test]
async fn a_depth_beyond_the_channels_is_served_at_the_channels() {
    let (_dir, hub, gw) = setup();
    let snap = Producer::snapshot(1, 3, &[("5", "1"), ("4", "1"), ("3", "1")], &[("6", "1")]);
    publish(&hub, "book.CLAMP", &snap).await;
    let mut conn = gw.connect(Edge("test"), Principal::Open).unwrap();
    conn.subscribe_book(&ch("book.CLAMP"), 5).unwrap();
    let got = values(&mut conn).await;
    assert_eq!((got[0].depth, got[0].bids.len()), (3, 3));
    let mut plain = gw.connect(Edge("test"), Principal::Open).unwrap();
    plain.subscribe_book(&ch("book.CLAMP"), 0).unwrap();
    let got = values(&mut plain).await;
    assert_eq!(got[0], snap);
}
