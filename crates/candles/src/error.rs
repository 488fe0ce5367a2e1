//! The crate's single error type.

/// Everything that can go wrong in this crate: only configuration and parsing, because
/// aggregation itself is total (bad or late ticks are reported in [`crate::Update`], not errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandleError {
    /// A resolution string matched neither a native name nor TradingView notation.
    #[error(
        "unknown resolution {0:?}: expected a native name (1s 5s 15s 1m 5m 15m 30m 1h 4h 1D 1W 1M) \
         or TradingView notation (1S 5S 15S 1 5 15 30 60 240 D 1D W 1W M 1M)"
    )]
    UnknownResolution(String),
    /// An [`crate::AggregatorConfig`] that cannot work, with the reason.
    #[error("invalid aggregator config: {0}")]
    InvalidConfig(&'static str),
}
