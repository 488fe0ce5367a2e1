//! The `[tracing]` section.

use serde::{Deserialize, Serialize};

/// `[tracing]`: OpenTelemetry traces of publishes, sent over OTLP/HTTP. Off while
/// `otlp_endpoint` is absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`); spans are POSTed to
    /// `<otlp_endpoint>/v1/traces`. Absent: tracing is off.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Fraction of new traces kept (0.0 to 1.0). A request whose `traceparent` says its caller
    /// sampled the trace is always traced, one that says it did not is never traced.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> TracingConfig {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "tickwire".to_string(),
            sample_ratio: 1.0,
        }
    }
}
