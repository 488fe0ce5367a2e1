//! TradingView UDF (`/udf/config`, `/udf/symbols`, `/udf/search`, `/udf/history`, `/udf/time`)
//! and the native `GET /v1/candles/{symbol}` over the candle store plus the live bar.
//!
//! UDF prices are JSON numbers, but they are written from the decimal's own text (a raw JSON
//! number such as `1.085425`), never through a binary float, so what the chart receives is
//! exactly what was aggregated. The native API keeps decimal strings.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, value::RawValue, Value};
use tickwire_candles::{Candle, Resolution};
use tickwire_hub::Channel;

use tickwire_feed::{fields, names};

use crate::{CandleService, LiveBar};

/// Most bars one request returns.
const MAX_BARS: usize = 20_000;

/// The UDF and native candle routes, with their own state.
pub fn routes(svc: Arc<CandleService>) -> Router {
    Router::new()
        .route("/udf/config", get(config))
        .route("/udf/symbols", get(symbols))
        .route("/udf/search", get(search))
        .route("/udf/history", get(history))
        .route("/udf/time", get(time))
        .route("/v1/candles", get(list_symbols))
        .route("/v1/candles/{symbol}", get(native))
        .with_state(svc)
}

type Q = Query<HashMap<String, String>>;

fn udf_error(msg: impl Into<String>) -> Response {
    // UDF clients read `s` from the body; the status stays 200 as in the reference adapters.
    Json(json!({"s": "error", "errmsg": msg.into()})).into_response()
}

fn now_secs() -> i64 {
    i64::try_from(tickwire_model::clock::now_secs()).unwrap_or(i64::MAX)
}

async fn config(State(svc): State<Arc<CandleService>>) -> Response {
    let res: Vec<&str> = svc.resolutions.iter().map(|r| r.to_tradingview()).collect();
    Json(json!({
        "supported_resolutions": res,
        "supports_group_request": false,
        "supports_marks": false,
        "supports_search": true,
        "supports_timescale_marks": false,
        "supports_time": true,
        "exchanges": [{"value": "", "name": "All Exchanges", "desc": ""},
                      {"value": svc.config.exchange, "name": svc.config.exchange, "desc": svc.config.exchange}],
        "symbols_types": [{"name": "All types", "value": ""},
                          {"name": svc.config.default_type, "value": svc.config.default_type}],
    }))
    .into_response()
}

async fn time() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain")],
        now_secs().to_string(),
    )
        .into_response()
}

/// `pricescale` = 10^decimals: from config, else from the symbol's newest quote bid.
fn pricescale(svc: &CandleService, symbol: &str) -> u64 {
    if let Some(p) = svc.config.symbols.get(symbol).and_then(|s| s.pricescale) {
        return p;
    }
    let decimals = svc
        .config
        .quote_namespaces
        .iter()
        .filter_map(|ns| Channel::parse(&format!("{ns}.{symbol}")).ok())
        .filter_map(|ch| svc.hub.latest(&ch).ok().flatten())
        .filter_map(|m| {
            let f = fields::read(fields::Kind::Quote, &m.publication.data)?;
            let price = f.bid.or(f.last)?;
            Some(
                price
                    .iter()
                    .position(|&c| c == b'.')
                    .map_or(0, |dot| price.len() - dot - 1),
            )
        })
        .next()
        .unwrap_or(2);
    10u64.saturating_pow(u32::try_from(decimals.min(12)).unwrap_or(2))
}

/// A symbol's description and UDF `type`: its own metadata, else the symbol name and the
/// default type. Config only, so search can filter without [`symbol_info`]'s hub lookups.
fn description_and_type(svc: &CandleService, symbol: &str) -> (String, String) {
    let meta = svc.config.symbols.get(symbol);
    let description = meta
        .and_then(|m| m.description.clone())
        .unwrap_or_else(|| symbol.to_string());
    let kind = meta
        .and_then(|m| m.kind.clone())
        .unwrap_or_else(|| svc.config.default_type.clone());
    (description, kind)
}

fn symbol_info(svc: &CandleService, symbol: &str) -> Value {
    let (description, kind) = description_and_type(svc, symbol);
    let session = svc
        .config
        .symbols
        .get(symbol)
        .and_then(|m| m.session.clone())
        .unwrap_or_else(|| svc.config.default_session.clone());
    let res: Vec<&str> = svc.resolutions.iter().map(|r| r.to_tradingview()).collect();
    let has = |r: Resolution| svc.resolutions.contains(&r);
    json!({
        "name": symbol,
        "ticker": symbol,
        "description": description,
        "type": kind,
        "session": session,
        "exchange": svc.config.exchange,
        "listed_exchange": svc.config.exchange,
        "timezone": "Etc/UTC",
        "format": "price",
        "pricescale": pricescale(svc, symbol),
        "minmov": 1,
        "has_intraday": true,
        "has_seconds": svc.resolutions.iter().any(|r| r.fixed_len_ms().is_some_and(|l| l < 60_000)),
        "has_daily": has(Resolution::Day1),
        "has_weekly_and_monthly": has(Resolution::Week1) || has(Resolution::Month1),
        "supported_resolutions": res,
        "volume_precision": 8,
        "data_status": "streaming",
    })
}

fn known(svc: &CandleService, symbol: &str) -> bool {
    svc.symbols.read().contains_key(symbol) || svc.config.symbols.contains_key(symbol)
}

/// UDF accepts `EXCHANGE:SYMBOL`; the exchange prefix is ours and is dropped.
fn strip_exchange(s: &str) -> &str {
    s.rsplit_once(':').map_or(s, |(_, sym)| sym)
}

async fn symbols(State(svc): State<Arc<CandleService>>, Query(q): Q) -> Response {
    let Some(symbol) = q.get("symbol").map(|s| strip_exchange(s)) else {
        return udf_error("symbol is required");
    };
    if !known(&svc, symbol) {
        return udf_error(format!("unknown_symbol {symbol}"));
    }
    Json(symbol_info(&svc, symbol)).into_response()
}

/// Seen and configured symbols, sorted, each once.
fn all_symbols(svc: &CandleService) -> Vec<String> {
    let mut all: BTreeSet<String> = svc.symbols.read().keys().cloned().collect();
    all.extend(svc.config.symbols.keys().cloned());
    all.into_iter().collect()
}

async fn search(State(svc): State<Arc<CandleService>>, Query(q): Q) -> Response {
    let query = q.get("query").map(|s| s.to_uppercase()).unwrap_or_default();
    let kind = q.get("type").cloned().unwrap_or_default();
    let exchange = q.get("exchange").cloned().unwrap_or_default();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(30)
        .min(1000);
    if !exchange.is_empty() && exchange != svc.config.exchange {
        return Json(json!([])).into_response();
    }
    let mut out = Vec::new();
    for s in all_symbols(&svc) {
        let (description, s_kind) = description_and_type(&svc, &s);
        let matches =
            s.to_uppercase().contains(&query) || description.to_uppercase().contains(&query);
        if !matches || (!kind.is_empty() && s_kind != kind) {
            continue;
        }
        out.push(json!({
            "symbol": s,
            "full_name": format!("{}:{s}", svc.config.exchange),
            "description": description,
            "exchange": svc.config.exchange,
            "ticker": s,
            "type": s_kind,
        }));
        if out.len() >= limit {
            break;
        }
    }
    Json(Value::Array(out)).into_response()
}

/// Stored bars in `[from_ms, to_ms)` plus the live bar when it is newer than the last stored
/// one; the last `limit` of them if given.
async fn load_bars(
    svc: &Arc<CandleService>,
    symbol: &str,
    res: Resolution,
    from_ms: i64,
    to_ms: i64,
    limit: Option<usize>,
) -> Result<Vec<Candle>, String> {
    let live = live_bar(svc, symbol, res);
    let live_start = live.as_ref().map(|c| c.start_ms);
    let s2 = svc.clone();
    let sym = symbol.to_string();
    let (mut bars, imported_at_live) = tokio::task::spawn_blocking(move || {
        let bars = s2.store.bars(&sym, res, from_ms, to_ms, limit)?;
        // An imported bar (from a bar file) stays what the file said even while ticks build a
        // live bar over the same interval (docs/candles.md, "Imported bars").
        let imported = match live_start {
            Some(start) if bars.iter().any(|b| b.start_ms == start) => {
                s2.store.imported_bar(&sym, res, start)?.is_some()
            }
            _ => false,
        };
        Ok::<_, tickwire_store::StoreError>((bars, imported))
    })
    .await
    .map_err(|e| store_failed(symbol, &e))?
    .map_err(|e| store_failed(symbol, &e))?;
    if let Some(live) = live {
        let newer = bars.last().is_none_or(|b| live.start_ms > b.start_ms);
        if newer && live.start_ms >= from_ms && live.start_ms < to_ms {
            bars.push(live);
            if let Some(n) = limit {
                if bars.len() > n {
                    bars.remove(0);
                }
            }
        } else if let Ok(i) = bars.binary_search_by_key(&live.start_ms, |b| b.start_ms) {
            // The stored copy of the current bar may predate the newest live update. It is
            // usually the last stored bar; an older one when bars were imported past it (a
            // bar file whose bar the imported ticks rebuild, not stored until it closes).
            if live.ticks > bars[i].ticks && !imported_at_live {
                bars[i] = live;
            }
        }
    }
    Ok(bars)
}

/// What a chart is told when the candle store fails. The store's error names its file under
/// the data directory: that goes to the server log only.
fn store_failed(symbol: &str, e: &dyn std::fmt::Display) -> String {
    tracing::warn!(symbol, error = %e, "reading candles failed");
    format!("reading the candles of {symbol} failed on the server; the server log has the details")
}

fn live_bar(svc: &CandleService, symbol: &str, res: Resolution) -> Option<Candle> {
    let ch = Channel::parse(&names::candles(symbol, res)).ok()?;
    let m = svc.hub.latest(&ch).ok()??;
    let bar: LiveBar = serde_json::from_slice(&m.publication.data).ok()?;
    Some(bar.candle)
}

/// The decimal as a JSON number written with exactly its own digits (the same text
/// `/v1/candles` gives as a string). A Decimal's Display is plain digits with an optional sign
/// and point (never an exponent): a valid JSON number.
fn raw_number(d: &tickwire_candles::Decimal) -> Box<RawValue> {
    RawValue::from_string(d.to_string()).unwrap_or_default()
}

fn param_i64(q: &HashMap<String, String>, k: &str) -> Result<Option<i64>, String> {
    match q.get(k) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("{k} must be an integer, got {v:?}")),
    }
}

async fn history(State(svc): State<Arc<CandleService>>, Query(q): Q) -> Response {
    let Some(symbol) = q.get("symbol").map(|s| strip_exchange(s).to_string()) else {
        return udf_error("symbol is required");
    };
    let Some(res) = q.get("resolution") else {
        return udf_error("resolution is required");
    };
    let res = match Resolution::parse(res) {
        Ok(r) if svc.resolutions.contains(&r) => r,
        Ok(r) => return udf_error(format!("resolution {r} is not built on this server")),
        Err(e) => return udf_error(e.to_string()),
    };
    let (from, to, countback) = match (
        param_i64(&q, "from"),
        param_i64(&q, "to"),
        param_i64(&q, "countback"),
    ) {
        (Ok(f), Ok(t), Ok(c)) => (f, t, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return udf_error(e),
    };
    if !known(&svc, &symbol) {
        return udf_error(format!("unknown_symbol {symbol}"));
    }
    let to_ms = to.unwrap_or_else(now_secs).saturating_mul(1000);
    let from_ms = from.unwrap_or(0).saturating_mul(1000);
    // countback wins over from (TradingView sends both): the last N bars before `to`.
    let (from_ms, limit) = match countback {
        Some(n) if n > 0 => (
            i64::MIN,
            usize::try_from(n).unwrap_or(MAX_BARS).min(MAX_BARS),
        ),
        _ => (from_ms, MAX_BARS),
    };
    let bars = match load_bars(&svc, &symbol, res, from_ms, to_ms, Some(limit)).await {
        Ok(b) => b,
        Err(e) => return udf_error(e),
    };
    if bars.is_empty() {
        let s2 = svc.clone();
        let sym = symbol.clone();
        let stored = tokio::task::spawn_blocking(move || {
            s2.store
                .last_start_before(&sym, res, from_ms.max(i64::MIN + 1))
        })
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
        // The live bar is not in the store until it closes.
        let live = live_bar(&svc, &symbol, res)
            .map(|c| c.start_ms)
            .filter(|s| *s < from_ms);
        let next = stored.max(live);
        let mut body = json!({"s": "no_data"});
        if let Some(n) = next {
            body["nextTime"] = json!(n / 1000);
        }
        return Json(body).into_response();
    }
    let col = |f: fn(&Candle) -> &tickwire_candles::Decimal| -> Vec<Box<RawValue>> {
        bars.iter().map(|b| raw_number(f(b))).collect()
    };
    // A struct, not `json!`: `json!` turns a `RawValue` into a `Value`, whose numbers are
    // binary floats (123456789.123456789 came back as 123456789.12345679).
    #[derive(serde::Serialize)]
    struct History {
        s: &'static str,
        t: Vec<i64>,
        o: Vec<Box<RawValue>>,
        h: Vec<Box<RawValue>>,
        l: Vec<Box<RawValue>>,
        c: Vec<Box<RawValue>>,
        v: Vec<Box<RawValue>>,
    }
    Json(History {
        s: "ok",
        t: bars.iter().map(|b| b.start_ms / 1000).collect(),
        o: col(|b| &b.open),
        h: col(|b| &b.high),
        l: col(|b| &b.low),
        c: col(|b| &b.close),
        v: col(|b| &b.volume),
    })
    .into_response()
}

async fn list_symbols(State(svc): State<Arc<CandleService>>) -> Response {
    let res: Vec<&str> = svc.resolutions.iter().map(|r| r.as_str()).collect();
    let symbols: Vec<Value> = all_symbols(&svc)
        .iter()
        .map(|s| {
            let info = symbol_info(&svc, s);
            json!({"symbol": s, "description": info["description"], "pricescale": info["pricescale"],
                   "session": info["session"], "type": info["type"]})
        })
        .collect();
    Json(json!({"resolutions": res, "symbols": symbols})).into_response()
}

fn problem(status: StatusCode, detail: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail})),
    )
        .into_response()
}

/// Why a bars query found nothing to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarsError {
    /// A resolution this server does not build, or one that does not parse.
    BadResolution(String),
    /// No candles for this symbol.
    UnknownSymbol(String),
    /// The candle store failed.
    Store(String),
}

impl std::fmt::Display for BarsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BarsError::BadResolution(m) | BarsError::Store(m) => f.write_str(m),
            BarsError::UnknownSymbol(s) => write!(f, "unknown symbol {s}"),
        }
    }
}

/// The native candle query (`/v1/candles/{symbol}` and the gRPC Candles call): the newest
/// `limit` (default 1000, at most 20,000) bars of `[from_ms, to_ms)` at `res` (default
/// `1m`), closed bars and the live one.
pub async fn bars(
    svc: &Arc<CandleService>,
    symbol: &str,
    res: Option<&str>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: Option<usize>,
) -> Result<(Resolution, Vec<Candle>), BarsError> {
    let res = match Resolution::parse(res.unwrap_or("1m")) {
        Ok(r) if svc.resolutions.contains(&r) => r,
        Ok(r) => {
            return Err(BarsError::BadResolution(format!(
                "resolution {r} is not built on this server"
            )))
        }
        Err(e) => return Err(BarsError::BadResolution(e.to_string())),
    };
    if !known(svc, symbol) {
        return Err(BarsError::UnknownSymbol(symbol.to_string()));
    }
    let limit = limit.unwrap_or(1000).clamp(1, MAX_BARS);
    let bars = load_bars(
        svc,
        symbol,
        res,
        from_ms.unwrap_or(i64::MIN),
        to_ms.unwrap_or(i64::MAX),
        Some(limit),
    )
    .await
    .map_err(BarsError::Store)?;
    Ok((res, bars))
}

/// `GET /v1/candles/{symbol}?res=1m&from=<ms>&to=<ms>&limit=N`: bars as decimal strings, times
/// in unix ms, the newest `limit` (default 1000) of the range.
async fn native(
    State(svc): State<Arc<CandleService>>,
    Path(symbol): Path<String>,
    Query(q): Q,
) -> Response {
    let (from, to, limit) = match (
        param_i64(&q, "from"),
        param_i64(&q, "to"),
        param_i64(&q, "limit"),
    ) {
        (Ok(f), Ok(t), Ok(l)) => (f, t, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return problem(StatusCode::BAD_REQUEST, e)
        }
    };
    let limit = limit.map(|l| usize::try_from(l).unwrap_or(1000));
    match bars(
        &svc,
        &symbol,
        q.get("res").map(String::as_str),
        from,
        to,
        limit,
    )
    .await
    {
        Ok((res, bars)) => Json(json!({
            "symbol": symbol,
            "resolution": res,
            "channel": names::candles(&symbol, res),
            "candles": bars,
        }))
        .into_response(),
        Err(e @ BarsError::BadResolution(_)) => problem(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ BarsError::UnknownSymbol(_)) => problem(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ BarsError::Store(_)) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_numbers_are_exact_text() {
        let d = tickwire_candles::Decimal::new(1_085_425, 6);
        assert_eq!(raw_number(&d).get(), "1.085425");
        // Its own digits, trailing zeros too: the same text `/v1/candles` shows as a string.
        let d = tickwire_candles::Decimal::new(15_000, 4);
        assert_eq!(raw_number(&d).get(), "1.5000");
        let d = tickwire_candles::Decimal::new(12, 8);
        assert_eq!(raw_number(&d).get(), "0.00000012");
        assert_eq!(strip_exchange("Tickwire:EURUSD"), "EURUSD");
    }
}
