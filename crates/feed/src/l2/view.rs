//! A best-N view of a book channel's book: what a subscriber that asked for depth N holds
//! (the `depth` subscribe option, FIX MarketDepth N). The server keeps the channel's whole
//! book ([`L2Book`], fed by the channel's values) and, per such subscriber, the view it last
//! sent; each change of the book is served as the difference between the view held and the
//! view now ([`DepthView::changes`]), so levels that leave the best N are removed and levels
//! that come into it (a better level deleted) are added, whatever the channel's own delta
//! said. Levels are keyed by exact price, as a client keys them.

use std::cmp::Ordering;

use super::{checksum, L2Book, L2Msg, LevelText};
use crate::Price;

/// The best N levels a side of a book (N 0: every level), best first, each with the text it
/// was last sent with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepthView {
    bids: Vec<(Price, LevelText)>,
    asks: Vec<(Price, LevelText)>,
}

/// How one level differs between a view held and the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange<'a> {
    /// Held, and not in the next view: deleted, or pushed below the best N.
    Left(&'a LevelText),
    /// Not held, and in the next view: added, or moved up into the best N.
    Entered(&'a LevelText),
    /// At one price in both with other text: a new size, or the price spelled anew
    /// (`"1.10"` for `"1.1"`).
    Changed {
        old: &'a LevelText,
        new: &'a LevelText,
    },
}

impl LevelChange<'_> {
    /// The level as a book channel delta sets it: its new text, or its old price with size
    /// `"0"` when it left.
    pub fn as_delta(&self) -> LevelText {
        match self {
            LevelChange::Left((p, _)) => (p.clone(), "0".to_string()),
            LevelChange::Entered(l) | LevelChange::Changed { new: l, .. } => (*l).clone(),
        }
    }
}

/// The changes of each side, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewChanges<'a> {
    pub bids: Vec<LevelChange<'a>>,
    pub asks: Vec<LevelChange<'a>>,
}

impl ViewChanges<'_> {
    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }
}

impl DepthView {
    /// The best `depth` levels a side of `book` (0: all of them).
    pub fn of(book: &L2Book, depth: u32) -> DepthView {
        let n = match depth {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let own = |(k, l): (&Price, &LevelText)| (k.clone(), l.clone());
        DepthView {
            bids: book.bids.iter().rev().take(n).map(own).collect(),
            asks: book.asks.iter().take(n).map(own).collect(),
        }
    }

    /// Bids best (highest) first.
    pub fn bids(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.bids.iter().map(|(_, (p, s))| (p.as_str(), s.as_str()))
    }

    /// Asks best (lowest) first.
    pub fn asks(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.asks.iter().map(|(_, (p, s))| (p.as_str(), s.as_str()))
    }

    /// [`checksum`] of the view: what a client holding exactly these levels computes.
    pub fn checksum(&self) -> u32 {
        checksum(self.bids(), self.asks())
    }

    /// The view as a snapshot value at `seq`; `depth` is what its `depth` field says.
    pub fn snapshot(&self, seq: u64, depth: u32) -> L2Msg {
        let own = |(p, s): (&str, &str)| (p.to_string(), s.to_string());
        L2Msg {
            snapshot: true,
            seq,
            prev: 0,
            checksum: self.checksum(),
            depth,
            bids: self.bids().map(own).collect(),
            asks: self.asks().map(own).collect(),
        }
    }

    /// What takes a holder of this view to `next`, per side, best first.
    pub fn changes<'a>(&'a self, next: &'a DepthView) -> ViewChanges<'a> {
        ViewChanges {
            bids: side_changes(&self.bids, &next.bids, |a, b| b.cmp(a)),
            asks: side_changes(&self.asks, &next.asks, Ord::cmp),
        }
    }

    /// The delta from this view (held at `prev`) to `next` (at `seq`), with `next`'s
    /// checksum; `None` when the views are the same, so a change outside the view sends
    /// nothing.
    pub fn delta_to(&self, next: &DepthView, prev: u64, seq: u64) -> Option<L2Msg> {
        let c = self.changes(next);
        if c.is_empty() {
            return None;
        }
        let set = |v: &[LevelChange<'_>]| v.iter().map(LevelChange::as_delta).collect();
        Some(L2Msg {
            snapshot: false,
            seq,
            prev,
            checksum: next.checksum(),
            depth: 0,
            bids: set(&c.bids),
            asks: set(&c.asks),
        })
    }
}

/// Merges two sides sorted best first (`order`: `Less` when the first price is better).
fn side_changes<'a>(
    old: &'a [(Price, LevelText)],
    new: &'a [(Price, LevelText)],
    order: impl Fn(&Price, &Price) -> Ordering,
) -> Vec<LevelChange<'a>> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => return out,
            (Some((_, o)), None) => {
                out.push(LevelChange::Left(o));
                i += 1;
            }
            (None, Some((_, n))) => {
                out.push(LevelChange::Entered(n));
                j += 1;
            }
            (Some((ok, o)), Some((nk, n))) => match order(ok, nk) {
                Ordering::Less => {
                    out.push(LevelChange::Left(o));
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(LevelChange::Entered(n));
                    j += 1;
                }
                Ordering::Equal => {
                    if o != n {
                        out.push(LevelChange::Changed { old: o, new: n });
                    }
                    i += 1;
                    j += 1;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::l2::Applied;

    fn lv(p: &str, s: &str) -> LevelText {
        (p.to_string(), s.to_string())
    }

    fn book(seq: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> L2Book {
        L2Book::from_snapshot(&L2Msg {
            snapshot: true,
            seq,
            bids: bids.iter().map(|(p, s)| lv(p, s)).collect(),
            asks: asks.iter().map(|(p, s)| lv(p, s)).collect(),
            ..L2Msg::default()
        })
    }

    /// The levels a client holds after applying `m` to `held` as docs/books.md says.
    fn client_after(held: &mut L2Book, m: &L2Msg) {
        assert_eq!(held.apply(m), Applied::Ok, "{m:?}");
        assert_eq!(held.checksum(), m.checksum, "the client's book verifies");
    }

    #[test]
    fn a_view_is_the_best_n_levels_of_each_side() {
        let b = book(
            1,
            &[("1.1", "1"), ("1.0", "2"), ("0.9", "3")],
            &[("1.2", "4")],
        );
        let v = DepthView::of(&b, 2);
        assert_eq!(
            v.bids().collect::<Vec<_>>(),
            vec![("1.1", "1"), ("1.0", "2")]
        );
        assert_eq!(v.asks().collect::<Vec<_>>(), vec![("1.2", "4")]);
        assert_eq!(DepthView::of(&b, 0).bids().count(), 3);
        assert_eq!(DepthView::of(&b, 0).checksum(), b.checksum());
        assert_ne!(v.checksum(), b.checksum());
    }

    /// The best bid deleted at depth 2: the third level moves up into the view, the delta
    /// removes the deleted level and adds the one that came in, and a client holding the
    /// 2-level snapshot ends with the book's best two, checksum verified.
    #[test]
    fn a_deleted_top_level_pulls_a_deeper_one_in() {
        let mut server = book(
            5,
            &[("1.1", "1"), ("1.0", "2"), ("0.9", "3")],
            &[("1.2", "4"), ("1.3", "5"), ("1.4", "6")],
        );
        let held = DepthView::of(&server, 2);
        let mut client = L2Book::from_snapshot(&held.snapshot(5, 2));
        assert_eq!(client.checksum(), held.checksum());

        server.set(true, "1.1", "0");
        let next = DepthView::of(&server, 2);
        let c = held.changes(&next);
        assert_eq!(
            c.bids,
            vec![
                LevelChange::Left(&lv("1.1", "1")),
                LevelChange::Entered(&lv("0.9", "3")),
            ]
        );
        assert!(c.asks.is_empty());
        let d = held.delta_to(&next, 5, 6).unwrap();
        assert_eq!((d.prev, d.seq), (5, 6));
        assert_eq!(d.bids, vec![lv("1.1", "0"), lv("0.9", "3")]);
        client_after(&mut client, &d);
        assert_eq!(
            client.levels(),
            (
                vec![lv("1.0", "2"), lv("0.9", "3")],
                vec![lv("1.2", "4"), lv("1.3", "5")]
            )
        );
    }

    /// A change below the best N leaves the view as it is: nothing to send.
    #[test]
    fn a_change_outside_the_view_sends_nothing() {
        let mut server = book(1, &[("1.1", "1"), ("1.0", "2")], &[("1.2", "4")]);
        let held = DepthView::of(&server, 1);
        server.set(true, "1.0", "9");
        server.set(true, "0.8", "1");
        let next = DepthView::of(&server, 1);
        assert_eq!(held, next);
        assert!(held.delta_to(&next, 1, 2).is_none());
    }

    /// A new size is a change; a respelled price is one level with its new text; a better
    /// level pushes the worst out of the view (it is removed with size "0").
    #[test]
    fn changes_are_keyed_by_exact_price() {
        let mut server = book(
            1,
            &[("1.10", "5"), ("1.09", "2")],
            &[("1.12", "3"), ("1.13", "1")],
        );
        let held = DepthView::of(&server, 2);
        let mut client = L2Book::from_snapshot(&held.snapshot(1, 2));
        server.set(true, "1.09", "4");
        server.set(true, "1.11", "7");
        server.set(false, "1.130", "1");
        let next = DepthView::of(&server, 2);
        let c = held.changes(&next);
        assert_eq!(
            c.bids,
            vec![
                LevelChange::Entered(&lv("1.11", "7")),
                LevelChange::Left(&lv("1.09", "2")),
            ]
        );
        assert_eq!(
            c.asks,
            vec![LevelChange::Changed {
                old: &lv("1.13", "1"),
                new: &lv("1.130", "1")
            }]
        );
        let d = held.delta_to(&next, 1, 3).unwrap();
        assert_eq!(d.bids, vec![lv("1.11", "7"), lv("1.09", "0")]);
        assert_eq!(d.asks, vec![lv("1.130", "1")]);
        client_after(&mut client, &d);
        assert_eq!(DepthView::of(&client, 0), next);
    }

    /// Random books and random changes, views of 1 to 4 levels and all: after every change a
    /// client holding the view and applying the deltas holds exactly the server's best N, and
    /// every checksum verifies.
    #[test]
    fn deltas_keep_a_client_at_the_best_n() {
        let mut seed: u64 = 0x5851_f42d_4c95_7f2d;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for depth in [1u32, 2, 4, 0] {
            let mut server = L2Book::default();
            server.apply(&L2Msg {
                snapshot: true,
                ..L2Msg::default()
            });
            for i in 0..6 {
                server.set(true, &format!("1.{}", 50 - i), "1");
                server.set(false, &format!("1.{}", 51 + i), "1");
            }
            let mut held = DepthView::of(&server, depth);
            let mut seq = 1;
            let mut client = L2Book::from_snapshot(&held.snapshot(seq, depth));
            for _ in 0..400 {
                let bid = rnd(2) == 0;
                let px = if bid {
                    format!("1.{}", 40 + rnd(11))
                } else {
                    format!("1.{}", 51 + rnd(11))
                };
                // Some respelled: "1.45" and "1.450" are one level.
                let px = if rnd(4) == 0 { format!("{px}0") } else { px };
                let size = if rnd(3) == 0 {
                    "0".to_string()
                } else {
                    format!("{}", 1 + rnd(5))
                };
                server.set(bid, &px, &size);
                let next = DepthView::of(&server, depth);
                match held.delta_to(&next, seq, seq + 1) {
                    Some(d) => {
                        client_after(&mut client, &d);
                        seq += 1;
                    }
                    None => assert_eq!(held, next),
                }
                assert_eq!(DepthView::of(&client, 0), next, "depth {depth}");
                held = next;
            }
        }
    }
}
