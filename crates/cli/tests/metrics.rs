//! `/metrics` of a server that published, delivered over WebSocket and MQTT, and ran a FIX
//! initiator session: the text is valid Prometheus exposition format (checked by a strict
//! parser below: HELP/TYPE once per family and before its samples, names and labels well
//! formed, no duplicate series, histogram buckets cumulative and ending in `+Inf` = `_count`),
//! the families an operator alerts on are there with values that follow from what was done,
//! and every metric the Grafana dashboard in `deploy/grafana/` queries is one the server
//! exports. Breaks these catch: a family renamed under the dashboard, a histogram whose
//! buckets are not cumulative, an ack or fsync that is no longer timed, a gauge left behind
//! by a closed connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use common::{get_text, mqtt, publish, quote, FixClient, Server, Ws};
use futures_util::StreamExt;
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// One parsed sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Families by name: their TYPE and samples.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// The family a sample belongs to: histogram and summary samples carry a suffix.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    name
}

/// Parses `{k="v",...}` at the start of `s`; returns the labels and the rest.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((out, s));
    };
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let key = &rest[..eq];
        if !valid_name(key) || key.starts_with("__") {
            return Err(format!("bad label name {key:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key} value not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label {key}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("label {key} value not closed"))?;
        if out.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &rest[end..];
        if !(rest.starts_with(',') || rest.starts_with('}')) {
            return Err(format!("junk after label {key}: {rest:?}"));
        }
    }
}

/// A strict reading of the Prometheus text format (version 0.0.4).
fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut helped = BTreeSet::new();
    let mut seen_samples_of = BTreeSet::new();
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name) || !helped.insert(name.to_string()) {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            if !valid_name(name)
                || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                || it.next().is_some()
            {
                return Err(at("bad TYPE".into()));
            }
            if seen_samples_of.contains(name) {
                return Err(at("TYPE after the family's samples".into()));
            }
            if e.types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(at("TYPE twice".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = labels(&line[name_end..]).map_err(at)?;
        let value = rest.trim_start().split(' ').next().unwrap_or("");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        let family = family_of(name, &e.types).to_string();
        if !e.types.contains_key(&family) {
            return Err(at(format!("sample of {family} before its TYPE")));
        }
        if e.types[&family] == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("negative or NaN counter".into()));
        }
        seen_samples_of.insert(family);
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: per series (labels without `le`), buckets cumulative, `+Inf` = `_count`.
    for (fam, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e
            .samples
            .iter()
            .filter(|s| s.name == format!("{fam}_bucket"))
        {
            let mut l = s.labels.clone();
            let le = l.remove("le").ok_or(format!("{fam}_bucket without le"))?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{fam}: bad le {le}"))?
            };
            groups
                .entry(format!("{l:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (l, buckets) in groups {
            let mut last = (f64::NEG_INFINITY, 0.0);
            for &(le, v) in &buckets {
                if le <= last.0 || v < last.1 {
                    return Err(format!("{fam}{l}: buckets not ascending/cumulative"));
                }
                last = (le, v);
            }
            if last.0 != f64::INFINITY {
                return Err(format!("{fam}{l}: no +Inf bucket"));
            }
            let count = e
                .samples
                .iter()
                .find(|s| s.name == format!("{fam}_count") && format!("{:?}", s.labels) == l)
                .ok_or(format!("{fam}{l}: no _count"))?;
            if count.value != last.1 {
                return Err(format!(
                    "{fam}{l}: +Inf {} != count {}",
                    last.1, count.value
                ));
            }
        }
    }
    Ok(e)
}

#[test]
fn the_strict_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"q\"} 3\n";
    assert!(parse(ok).is_ok());
    for bad in [
        "a_total 3\n",                  // no TYPE
        "# TYPE a counter\na 1\na 2\n", // duplicate series
        "# TYPE a counter\na{k=v} 1\n", // unquoted
        "# TYPE a gauge\na one\n",      // value
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",                          // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n", // +Inf != count
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_and_follow_what_the_server_did() {
    let dir = tempfile::tempdir().unwrap();
    let fix_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fix_port = fix_listener.local_addr().unwrap().port();
    let cfg = dir.path().join("tickwire.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[mqtt]
listen = "127.0.0.1:0"

[[fix.initiators]]
name = "prov"
host = "127.0.0.1"
port = {fix_port}
sender_comp_id = "TW"
target_comp_id = "PROV"
symbols = ["EURUSD"]
reconnect_min_ms = 100
reconnect_max_ms = 500
"#
        ),
    )
    .unwrap();
    let srv = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap(), "--fsync", "always"],
        &[],
    );
    // A FIX provider the initiator logs on to.
    let mut prov = FixClient::acceptor("PROV", "TW");
    prov.accept(&fix_listener, Duration::from_secs(20)).await;
    assert!(
        prov.until(Duration::from_secs(20), |c| c.logged_on).await,
        "{:?}",
        prov.closed
    );
    // A WebSocket subscriber, then live quotes it receives.
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "quotes.EURUSD"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    for bid in 1..=3 {
        let (status, body) = publish(
            &srv,
            &json!({"channel": "quotes.EURUSD", "data": quote(bid)}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let p = ws.push().await;
        assert_eq!(p["ch"], "quotes.EURUSD", "{p}");
    }
    // An MQTT client connected while the metrics are read.
    let mut m = TcpStream::connect(("127.0.0.1", srv.mqtt_port()))
        .await
        .unwrap();
    mqtt_connect(&mut m, b"metrics-test").await;

    // The candle projection counts ticks on its own thread, a moment after the publishes were
    // acknowledged: wait for it (a single read raced it under load, with another test's server
    // running beside this one).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = get_text(&srv, "/metrics").await;
        let ticks = parse(&text)
            .ok()
            .and_then(|e| e.get("tickwire_candles_ticks_total", &[]));
        if ticks.is_some_and(|n| n >= 3.0) || tokio::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    let ns = [("namespace", "quotes")];
    assert!(e.get("tickwire_namespace_published_total", &ns).unwrap() >= 3.0);
    assert!(
        e.get("tickwire_namespace_published_bytes_total", &ns)
            .unwrap()
            > 0.0
    );
    assert!(e.get("tickwire_publish_ack_seconds_count", &ns).unwrap() >= 3.0);
    assert!(
        e.get("tickwire_fsync_seconds_count", &ns).unwrap() >= 1.0,
        "fsync = always: each acknowledged request was fsynced"
    );
    assert!(
        e.get(
            "tickwire_delivery_lag_seconds_count",
            &[("edge", "websocket")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(e.get("tickwire_log_bytes", &ns).unwrap() > 0.0);
    assert!(e.get("tickwire_log_segments", &ns).unwrap() >= 1.0);
    assert!(e
        .get("tickwire_retention_deleted_segments_total", &ns)
        .is_some());
    assert_eq!(
        e.get("tickwire_edge_connections", &[("edge", "websocket")]),
        Some(1.0)
    );
    // The one WebSocket subscription, per edge and per namespace; the three quotes it got,
    // counted per namespace with their payload bytes (and the same bytes on its edge).
    assert_eq!(
        e.get("tickwire_edge_subscriptions", &[("edge", "websocket")]),
        Some(1.0)
    );
    assert_eq!(e.get("tickwire_namespace_subscriptions", &ns), Some(1.0));
    assert_eq!(e.get("tickwire_namespace_delivered_total", &ns), Some(3.0));
    let payload = (1..=3)
        .map(|b| quote(b).to_string().len() as f64)
        .sum::<f64>();
    assert_eq!(
        e.get("tickwire_namespace_delivered_bytes_total", &ns),
        Some(payload)
    );
    assert_eq!(
        e.get(
            "tickwire_edge_delivered_bytes_total",
            &[("edge", "websocket")]
        ),
        Some(payload)
    );
    assert_eq!(e.get("tickwire_mqtt_sessions_connected", &[]), Some(1.0));
    assert!(e.get("tickwire_mqtt_in_flight", &[]).is_some());
    let prov_labels = [("session", "prov"), ("role", "initiator")];
    assert_eq!(
        e.get("tickwire_fix_session_active", &prov_labels),
        Some(1.0)
    );
    assert!(e.get("tickwire_fix_next_sender_seq", &prov_labels).unwrap() >= 2.0);
    assert!(e.get("tickwire_candles_ticks_total", &[]).unwrap() >= 3.0);
    assert!(e.get("tickwire_candles_late_dropped_total", &[]).is_some());
    assert_eq!(
        e.get(
            "tickwire_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(e.get("process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(e.get("process_open_fds", &[]).unwrap() >= 3.0);
    assert!(e.get("process_cpu_seconds_total", &[]).unwrap() > 0.0);

    // The connection gauges come back down when clients leave.
    drop(ws);
    m.write_all(&[0xE0, 0]).await.unwrap(); // DISCONNECT
    drop(m);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = parse(&get_text(&srv, "/metrics").await).unwrap();
        if e.get("tickwire_edge_connections", &[("edge", "websocket")]) == Some(0.0)
            && e.get("tickwire_edge_subscriptions", &[("edge", "websocket")]) == Some(0.0)
            && e.get(
                "tickwire_namespace_subscriptions",
                &[("namespace", "quotes")],
            ) == Some(0.0)
            && e.get("tickwire_mqtt_sessions_connected", &[]) == Some(0.0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection gauges stayed up after the clients left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every metric the dashboard queries is exported.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/grafana/tickwire-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("tickwire_") || word.starts_with("process_") {
                    queried.insert(family_of(word, &e.types).to_string());
                }
            }
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|q| !e.types.contains_key(*q))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the server does not export: {missing:?}"
    );
}

/// A WebSocket client that subscribes and then reads nothing while its quotes keep changing is
/// dropped once its socket has taken nothing for `write_timeout_ms`, and counted in
/// `tickwire_write_timeout_disconnects_total` (before, such a drop left no trace an operator
/// could see); a client that reads the same quotes is not dropped or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_takes_nothing_is_dropped_after_the_write_timeout_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        &dir.path().join("d"),
        &["--fsync", "never"],
        &[("TICKWIRE_WRITE_TIMEOUT_MS", "500")],
    );
    let addr = srv
        .ws_url("")
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stream = connect_small(addr).await;
    let (raw, _) = tokio_tungstenite::client_async(
        srv.ws_url(""),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut stalled = Ws::from_stream(raw);
    let mut reader = Ws::connect(&srv.ws_url("")).await;
    let channels: Vec<String> = (0..50).map(|i| format!("quotes.S{i:02}")).collect();
    for c in &channels {
        for ws in [&mut stalled, &mut reader] {
            let r = ws.cmd(json!({"op": "subscribe", "channel": c})).await;
            assert_eq!(r["ok"], true, "{r}");
        }
    }
    // From here on `stalled` reads nothing; `reader` keeps reading.
    let counted = publish_until_one_write_timeout(&srv, &channels, 400, async || {
        while reader.try_push(Duration::from_millis(1)).await.is_some() {}
    })
    .await;
    assert!(
        counted,
        "the client that took nothing was never dropped and counted"
    );
    let m = parse(&get_text(&srv, "/metrics").await).unwrap();
    assert_eq!(
        m.get("tickwire_slow_consumer_disconnects_total", &[]),
        Some(0.0)
    );
    // The dropped client reads what its buffers held, then the end of the connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = stalled.ws.next().await {
            if m.is_err() || matches!(m, Ok(tokio_tungstenite::tungstenite::Message::Close(_))) {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled client's connection was not closed"
    );
    // The reading client is still served.
    let (status, body) = publish(
        &srv,
        &json!([{"channel": "quotes.S00", "data": quote(99_999)}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut got = false;
    while let Some(p) = reader.try_push(Duration::from_secs(5)).await {
        if p["data"] == quote(99_999) {
            got = true;
            break;
        }
    }
    assert!(got, "the reading client still gets quotes");
}

/// The MQTT edge's write deadline: a subscriber that stops reading while its quotes keep
/// changing is dropped once its socket has taken nothing for `write_timeout_ms`, and counted
/// in `tickwire_write_timeout_disconnects_total`. (The deadline is armed only for a write
/// that waits, bench/results/mqtt.md: this proves it still is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_subscriber_that_takes_nothing_is_dropped_after_the_write_timeout_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        &dir.path().join("d"),
        &["--fsync", "never"],
        &[
            ("TICKWIRE_WRITE_TIMEOUT_MS", "500"),
            ("TICKWIRE_MQTT__LISTEN", "127.0.0.1:0"),
        ],
    );
    let mut m = connect_small(([127, 0, 0, 1], srv.mqtt_port()).into()).await;
    mqtt_connect(&mut m, b"stalled").await;
    let mut sub = vec![0, 1]; // packet id 1
    mqtt::string(&mut sub, b"quotes/#");
    sub.push(0); // QoS 0
    m.write_all(&mqtt::packet(0x82, &sub)).await.unwrap();
    let (first, suback) = mqtt::read_packet(&mut m, Duration::from_secs(10))
        .await
        .expect("SUBACK");
    assert_eq!(
        (first, suback.get(2).copied()),
        (0x90, Some(0)),
        "{suback:?}"
    );

    // From here on the subscriber reads nothing. An MQTT quote is ~33 bytes on the wire, so
    // filling the server's socket buffer (it grows to megabytes) takes many: 500 channels a round.
    let channels: Vec<String> = (0..500).map(|i| format!("quotes.S{i:03}")).collect();
    let counted = publish_until_one_write_timeout(&srv, &channels, 1_000, async || {}).await;
    assert!(
        counted,
        "the MQTT client that took nothing was never dropped and counted"
    );
    // The dropped client reads what its buffers held, then the end of the connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut m, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled client's connection was not closed"
    );
}

/// Publishes a new quote on every channel each round, `between` after each (where a client
/// that keeps up reads), until the server has dropped a client for taking nothing within the
/// write timeout (true) or `rounds` have passed (false). More than one such drop fails.
async fn publish_until_one_write_timeout(
    srv: &Server,
    channels: &[String],
    rounds: u64,
    mut between: impl AsyncFnMut(),
) -> bool {
    for round in 0..rounds {
        let batch: Vec<serde_json::Value> = channels
            .iter()
            .map(|c| json!({"channel": c, "data": quote(round)}))
            .collect();
        let (status, body) = publish(srv, &json!(batch)).await;
        assert_eq!(status, 200, "{body}");
        between().await;
        if round % 20 == 19 {
            let n = parse(&get_text(srv, "/metrics").await)
                .unwrap()
                .get("tickwire_write_timeout_disconnects_total", &[]);
            assert!(
                n.is_some_and(|n| n <= 1.0),
                "only the stalled client: {n:?}"
            );
            if n == Some(1.0) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A TCP connection with a 4 KiB receive buffer, so the server's socket fills after tens of
/// kilobytes that the client does not read.
async fn connect_small(addr: std::net::SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(addr).await.unwrap()
}

/// An MQTT 3.1.1 CONNECT (clean session, keep alive 60 s) as `client_id`, and its CONNACK.
async fn mqtt_connect(m: &mut TcpStream, client_id: &[u8]) {
    let mut body = Vec::new();
    mqtt::string(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    mqtt::string(&mut body, client_id);
    m.write_all(&mqtt::packet(0x10, &body)).await.unwrap();
    let (first, connack) = mqtt::read_packet(m, Duration::from_secs(10))
        .await
        .expect("CONNACK");
    assert_eq!(
        (first, connack.get(1).copied()),
        (0x20, Some(0)),
        "{connack:?}"
    );
}
