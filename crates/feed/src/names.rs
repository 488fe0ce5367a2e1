//! Channel names of market data: built here and nowhere else.

/// L1 quotes: state, latest wins.
pub const QUOTES: &str = "quotes";
/// Trades: a stream of every print.
pub const TRADES: &str = "trades";
/// Live candles: state, one channel per symbol and resolution.
pub const CANDLES: &str = "candles";
/// L2 depth views built by the book projection: state.
pub const BOOK: &str = "book";
/// L2 deltas and snapshots as published by feeds (the book projection's input): a stream.
pub const DEPTH: &str = "depth";

/// `quotes.<SYM>`.
pub fn quotes(symbol: &str) -> String {
    format!("{QUOTES}.{symbol}")
}

/// `trades.<SYM>`.
pub fn trades(symbol: &str) -> String {
    format!("{TRADES}.{symbol}")
}

/// `book.<SYM>`.
pub fn book(symbol: &str) -> String {
    format!("{BOOK}.{symbol}")
}

/// `depth.<SYM>`.
pub fn depth(symbol: &str) -> String {
    format!("{DEPTH}.{symbol}")
}

/// `candles.<SYM>.<res>` (`res` as the candle crate prints it: `1m`, `1h`, ...).
pub fn candles(symbol: &str, resolution: impl std::fmt::Display) -> String {
    format!("{CANDLES}.{symbol}.{resolution}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::quotes("EURUSD"), "quotes.EURUSD");
        assert_eq!(super::candles("EURUSD", "1m"), "candles.EURUSD.1m");
        assert_eq!(super::book("X"), "book.X");
        assert_eq!(super::depth("X"), "depth.X");
        assert_eq!(super::trades("X"), "trades.X");
    }
}
