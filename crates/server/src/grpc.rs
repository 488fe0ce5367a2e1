//! Wiring for the gRPC edge: its Candles call reads the candle projection's store (the edge
//! does not depend on the projection; this adapter joins them).

use std::{future::Future, pin::Pin, sync::Arc};

use tickwire_edge_grpc::{CandleError, CandleSource};
use tickwire_proj_candles::{BarsError, CandleService};
use tickwire_proto::v1::{Candle, CandlesRequest, CandlesResponse};

/// The candle store, as the gRPC edge asks it.
pub(crate) struct Candles(pub Arc<CandleService>);

impl CandleSource for Candles {
    fn candles(
        &self,
        r: CandlesRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CandlesResponse, CandleError>> + Send + 'static>> {
        let svc = self.0.clone();
        Box::pin(async move {
            let res = (!r.resolution.is_empty()).then_some(r.resolution.as_str());
            let limit = (r.limit > 0).then_some(r.limit as usize);
            let (res, bars) =
                tickwire_proj_candles::bars(&svc, &r.symbol, res, r.from_ms, r.to_ms, limit)
                    .await
                    .map_err(|e| match e {
                        BarsError::BadResolution(_) => CandleError::BadRequest(e.to_string()),
                        BarsError::UnknownSymbol(_) => CandleError::NotFound(e.to_string()),
                        BarsError::Store(_) => CandleError::Unavailable(e.to_string()),
                    })?;
            // A bar whose interval has passed is closed: its content is final (the live bar
            // is the one still open).
            let now = tickwire_model::clock::now_millis_i64();
            Ok(CandlesResponse {
                channel: tickwire_feed::names::candles(&r.symbol, res),
                resolution: res.to_string(),
                candles: bars
                    .into_iter()
                    .map(|b| Candle {
                        symbol: r.symbol.clone(),
                        resolution: res.to_string(),
                        start_ms: b.start_ms,
                        // A decimal's own digits (rust_decimal's Display), as /v1/candles.
                        open: b.open.to_string(),
                        high: b.high.to_string(),
                        low: b.low.to_string(),
                        close: b.close.to_string(),
                        volume: b.volume.to_string(),
                        ticks: b.ticks,
                        r#final: res.next_bucket_start(b.start_ms) <= now,
                        corrected: false,
                    })
                    .collect(),
                symbol: r.symbol,
            })
        })
    }
}
