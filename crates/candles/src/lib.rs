//! Pure OHLCV candle aggregation: no sockets, clocks or files.
//! (Driving guide and exact rules are written below once the API settles.)

mod aggregator;
mod batch;
mod calendar;
mod candle;
mod error;
mod resolution;
mod tick;

pub use aggregator::{
    Aggregator, AggregatorConfig, AggregatorStats, BarChange, ChangeKind, TickOutcome, Update,
};
pub use batch::aggregate;
pub use candle::Candle;
pub use error::CandleError;
pub use resolution::Resolution;
pub use rust_decimal::Decimal;
pub use tick::{PriceSource, Tick, TickKind};
