//! The `[candles]` section of the configuration (see docs/candles.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tickwire_candles::{PriceSource, Resolution};

use crate::CandlesError;

/// The `[candles]` section of the server configuration (see docs/candles.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandlesConfig {
    /// Build candles at all.
    pub enabled: bool,
    /// Resolutions to build, native (`1m`) or TradingView (`1`) names. Default: all 12.
    pub resolutions: Vec<String>,
    /// Price of quote-built bars: `bid`, `ask`, `mid` or `last` (trades only). Trades always
    /// win inside a bar that has any.
    pub price_source: PriceSource,
    /// Per-namespace override of `price_source`, keyed by the namespace a symbol's first tick
    /// came from.
    pub namespace_price_source: BTreeMap<String, PriceSource>,
    /// Namespaces whose messages are quotes (`bid`/`ask`, or `last` only).
    pub quote_namespaces: Vec<String>,
    /// Namespaces whose messages are trades (`price`, optional `size`).
    pub trade_namespaces: Vec<String>,
    /// A tick up to this much older than the newest one still corrects its bar.
    pub late_tolerance_ms: i64,
    /// How often changed live bars are published (one hub batch per flush).
    pub flush_interval_ms: u64,
    /// How often closed bars, snapshots and positions are committed to the store.
    pub commit_interval_ms: u64,
    /// Quiet symbols' bars close when the wall clock minus this passes their end.
    pub close_delay_ms: i64,
    /// No longer used: the projection reads the streams behind the writers and never holds
    /// one up. Accepted so configuration files that set it still load.
    pub tap_capacity: usize,
    /// Exchange name shown by the UDF endpoints.
    pub exchange: String,
    /// Defaults for symbols without their own metadata.
    pub default_session: String,
    /// UDF `type` of symbols without their own (`forex`, `crypto`, `stock`, ...).
    pub default_type: String,
    /// Per-symbol metadata and overrides.
    pub symbols: BTreeMap<String, SymbolConfig>,
}

/// Metadata and overrides for one symbol.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SymbolConfig {
    pub description: Option<String>,
    /// TradingView `pricescale` (10^decimals). Default: from the symbol's quotes.
    pub pricescale: Option<u64>,
    /// TradingView session, e.g. `24x7` or `0930-1600`.
    pub session: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub price_source: Option<PriceSource>,
}

impl Default for CandlesConfig {
    fn default() -> Self {
        CandlesConfig {
            enabled: true,
            resolutions: Resolution::ALL
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            price_source: PriceSource::Mid,
            namespace_price_source: BTreeMap::new(),
            quote_namespaces: vec!["quotes".into()],
            trade_namespaces: vec!["trades".into()],
            late_tolerance_ms: 5_000,
            // Every live bar of every symbol is republished each flush, through the log: at 200 ms
            // that was 60,000 writes/s per 1,000 symbols and the p99 tail of quote fan-out on 2
            // cores (bench/results/fanout.md). Once a second is what exchange kline streams
            // offer (Binance: 1-2 s); a chart's price line still follows the quotes live.
            flush_interval_ms: 1_000,
            commit_interval_ms: 1_000,
            close_delay_ms: 1_000,
            tap_capacity: 8_192,
            exchange: "Tickwire".into(),
            default_session: "24x7".into(),
            default_type: "forex".into(),
            symbols: BTreeMap::new(),
        }
    }
}

impl CandlesConfig {
    /// The configured resolutions, parsed.
    pub fn parsed_resolutions(&self) -> Result<Vec<Resolution>, CandlesError> {
        let mut out = Vec::new();
        for r in &self.resolutions {
            let r = Resolution::parse(r)
                .map_err(|e| CandlesError::Config(format!("candles.resolutions: {e}")))?;
            if !out.contains(&r) {
                out.push(r);
            }
        }
        if out.is_empty() {
            return Err(CandlesError::Config(
                "candles.resolutions must name at least one resolution".into(),
            ));
        }
        Ok(out)
    }

    pub(crate) fn source_for(&self, symbol: &str, namespace: &str) -> PriceSource {
        self.symbols
            .get(symbol)
            .and_then(|s| s.price_source)
            .or_else(|| self.namespace_price_source.get(namespace).copied())
            .unwrap_or(self.price_source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_overrides() {
        let mut c = CandlesConfig::default();
        assert_eq!(c.parsed_resolutions().unwrap().len(), 12);
        c.namespace_price_source
            .insert("quotes".into(), PriceSource::Bid);
        c.symbols.insert(
            "BTCUSD".into(),
            SymbolConfig {
                price_source: Some(PriceSource::Last),
                ..Default::default()
            },
        );
        assert_eq!(c.source_for("EURUSD", "quotes"), PriceSource::Bid);
        assert_eq!(c.source_for("BTCUSD", "quotes"), PriceSource::Last);
        assert_eq!(c.source_for("EURUSD", "other"), PriceSource::Mid);
        c.resolutions = vec!["7m".into()];
        assert!(c.parsed_resolutions().is_err());
    }
}
