//! Market-data feed types, pure (no I/O):
//!
//! - [`names`]: the channel names the server derives (`quotes.<SYM>`, `candles.<SYM>.<res>`,
//!   `book.<SYM>`, `depth.<SYM>`, `trades.<SYM>`): the one place that spells them;
//! - [`fields`]: reading quote and trade fields out of a publication's JSON data, fast for the
//!   flat objects feeds send and exactly as serde reads them otherwise;
//! - [`book`]: an instrument's L2 order book from snapshots and deltas, ordered by exact
//!   decimal value (any number of digits), never a float; and [`depth`], the JSON form of
//!   those deltas on the `depth` namespace, which any edge can publish.

pub mod book;
pub mod depth;
pub mod fields;
pub mod l2;
pub mod names;
pub mod price;

pub use book::{Book, BookState, Side, Trade};
pub use price::Price;
