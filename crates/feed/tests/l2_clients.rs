//! Book channel values (`tickwire_feed::l2`) under random delta streams: clients that keep a
//! local book from a snapshot and deltas, some slow (their undelivered deltas conflated per
//! price level with `merge`), some losing a value (a gap they must detect and repair with a
//! fresh snapshot), always end with the server's book, and every value they apply carries the
//! checksum of the book they hold after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tickwire_feed::l2::{merge, Applied, L2Book, L2Msg};

/// Prices with several spellings of one value ("1.1", "1.10") and different precisions, so
/// keying by exact value and the newest text both matter.
const PRICES: &[&str] = &[
    "1.1", "1.10", "1.100", "1.09", "1.0999", "1.11", "1.2", "0.9", "10", "10.0", "1.10001",
];
const SIZES: &[&str] = &["0", "0.00", "1", "2.5", "100", "0.001", "7"];

#[derive(Debug, Clone)]
enum Step {
    /// The server changes levels (bid?, price, size; size zero deletes) and publishes a delta.
    Change(Vec<(bool, usize, usize)>),
    /// Client `c` takes what is waiting for it.
    Take(usize),
    /// The value waiting for client `c` is lost (a dropped connection, a bug upstream).
    Lose(usize),
}

fn step(clients: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((any::<bool>(), 0..PRICES.len(), 0..SIZES.len()), 1..4)
            .prop_map(Step::Change),
        3 => (0..clients).prop_map(Step::Take),
        1 => (0..clients).prop_map(Step::Lose),
    ]
}

struct Client {
    book: L2Book,
    /// The one conflated value waiting for this client (never a backlog).
    waiting: Option<L2Msg>,
    resubscribed: usize,
}

impl Client {
    /// Applies what waits; on a gap, asks the server for a fresh snapshot.
    fn take(&mut self, server: &L2Book) {
        let Some(m) = self.waiting.take() else { return };
        match self.book.apply(&m) {
            Applied::Ok => assert_eq!(
                self.book.checksum(),
                m.checksum,
                "a value's checksum is that of the book after it"
            ),
            Applied::Gap => {
                self.resubscribed += 1;
                self.waiting = server.snapshot();
                self.take(server);
            }
        }
    }

    fn offer(&mut self, m: &L2Msg) {
        self.waiting = Some(match self.waiting.take() {
            Some(w) => merge(&[w, m.clone()]).unwrap(),
            None => m.clone(),
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_client_ends_with_the_servers_book_and_checksum(
        steps in prop::collection::vec(step(3), 1..120),
    ) {
        let mut server = L2Book::default();
        server.apply(&L2Msg { snapshot: true, seq: 1, ..L2Msg::default() });
        let mut clients: Vec<Client> = (0..3)
            .map(|_| Client { book: L2Book::default(), waiting: server.snapshot(), resubscribed: 0 })
            .collect();
        for s in steps {
            match s {
                Step::Change(levels) => {
                    let mut m = L2Msg { prev: server.seq(), seq: server.seq() + 1, ..L2Msg::default() };
                    let mut after = server.clone();
                    for (bid, p, z) in levels {
                        let level = (PRICES[p].to_string(), SIZES[z].to_string());
                        after.set(bid, &level.0, &level.1);
                        if bid { m.bids.push(level) } else { m.asks.push(level) }
                    }
                    m.checksum = after.checksum();
                    prop_assert_eq!(server.apply(&m), Applied::Ok);
                    prop_assert_eq!(server.levels(), after.levels());
                    // The JSON form carries the value exactly.
                    prop_assert_eq!(&L2Msg::parse(m.to_json().as_bytes()).unwrap(), &m);
                    for c in &mut clients {
                        c.offer(&m);
                    }
                }
                Step::Take(c) => clients[c].take(&server),
                Step::Lose(c) => clients[c].waiting = None,
            }
        }
        for c in &mut clients {
            // A client that lost the newest value holds an older book and cannot tell from
            // nothing; the next value (here: the server's next snapshot) repairs it.
            if c.waiting.is_none() && c.book.seq() != server.seq() {
                c.waiting = server.snapshot();
            }
            c.take(&server);
            prop_assert_eq!(c.book.levels(), server.levels());
            prop_assert_eq!(c.book.checksum(), server.checksum());
            prop_assert_eq!(c.book.seq(), server.seq());
        }
    }
}
