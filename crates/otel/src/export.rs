//! The background exporter: batches queued spans into one OTLP/HTTP request each.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use prost::Message;
use tokio::sync::mpsc;

use crate::{
    otlp::{
        ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
        ScopeSpans, Span,
    },
    Cmd, OtelError, TraceStats,
};

/// Most spans in one request: well below collectors' default 4 MiB body limit.
const BATCH_SPANS: usize = 512;
/// How long a span may wait for others to fill a batch: traces show up within this.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// A collector slower than this loses the batch rather than holding up the next ones.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Exporter {
    client: reqwest::Client,
    url: reqwest::Url,
    resource: Resource,
    stats: Arc<TraceStats>,
    /// Failures are logged once per run of failures, not once per batch.
    failing: bool,
}

impl Exporter {
    pub fn new(
        endpoint: &str,
        service_name: &str,
        stats: Arc<TraceStats>,
    ) -> Result<Exporter, OtelError> {
        let url = traces_url(endpoint)?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OtelError::Endpoint {
                endpoint: endpoint.to_string(),
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Exporter {
            client,
            url,
            resource: Resource {
                attributes: vec![KeyValue::str("service.name", service_name)],
            },
            stats,
            failing: false,
        })
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut batch: Vec<Span> = Vec::new();
        loop {
            let cmd = if batch.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(BATCH_DELAY, rx.recv()).await {
                    Ok(c) => c,
                    Err(_) => {
                        self.send(std::mem::take(&mut batch)).await;
                        continue;
                    }
                }
            };
            match cmd {
                Some(Cmd::Spans(spans)) => {
                    batch.extend(spans);
                    if batch.len() >= BATCH_SPANS {
                        self.send(std::mem::take(&mut batch)).await;
                    }
                }
                Some(Cmd::Flush(done)) => {
                    // Everything queued before the flush was received before it (one queue).
                    self.send(std::mem::take(&mut batch)).await;
                    let _ = done.send(());
                }
                None => {
                    self.send(std::mem::take(&mut batch)).await;
                    return;
                }
            }
        }
    }

    async fn send(&mut self, spans: Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        let n = spans.len() as u64;
        let body = encode(&self.resource, spans);
        let result = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await;
        let failure = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the collector answered {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
                if self.failing {
                    tracing::info!(url = %self.url, "exporting traces again");
                }
                self.failing = false;
            }
            Some(reason) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(url = %self.url, error = %reason, spans = n, "could not export traces; dropping them until the collector answers");
                }
                self.failing = true;
            }
        }
    }
}

/// `<endpoint>/v1/traces`, refused unless it is a plain `http://` URL.
pub(crate) fn traces_url(endpoint: &str) -> Result<reqwest::Url, OtelError> {
    let bad = |reason: String| OtelError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let url = reqwest::Url::parse(&format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .map_err(|e| bad(e.to_string()))?;
    // Plain http only: this client has no trust roots, and a collector is normally a local
    // agent or sidecar.
    if url.scheme() != "http" {
        return Err(bad(
            "only http:// is supported (send to a local collector)".into()
        ));
    }
    Ok(url)
}

/// One export request: every span under this server's resource and one scope.
pub(crate) fn encode(resource: &Resource, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tickwire".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The exporter POSTs protobuf to `<endpoint>/v1/traces`, and the body decodes to the spans.
    #[tokio::test]
    async fn spans_are_posted_as_protobuf_to_v1_traces() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then exactly Content-Length bytes of body.
            loop {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    while buf.len() < end + 4 + len {
                        let n = sock.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    return (head, buf[end + 4..end + 4 + len].to_vec());
                }
            }
        });
        let stats = Arc::new(TraceStats::default());
        let mut exporter = Exporter::new(&format!("http://{addr}/"), "svc", stats.clone()).unwrap();
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "publish".into(),
            ..Span::default()
        };
        exporter.send(vec![span.clone()]).await;
        let (head, body) = server.await.unwrap();
        assert!(head.starts_with("post /v1/traces http/1.1"), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            vec![KeyValue::str("service.name", "svc")]
        );
        assert_eq!(rs.scope_spans[0].spans, vec![span]);
        assert_eq!(stats.exported.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_plain_http_endpoints_are_accepted() {
        let s = Arc::new(TraceStats::default());
        assert!(Exporter::new("https://collector:4318", "t", s.clone()).is_err());
        assert!(Exporter::new("not a url", "t", s).is_err());
    }
}
