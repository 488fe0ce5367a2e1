//! The load generator (`tickwire bench run`) against a real server: the figures the benchmark
//! reports are only as good as its counting, so it is checked on shapes whose answer is known.
//! Breaks these catch: a delivery counted twice or a snapshot counted as a live update
//! (delivered per published above the fan-out factor), a subscriber that misses the newest
//! value of a symbol and is still reported converged, a chat resume counted as loss or the
//! duplicate detector blind to replays, a book subscriber whose book is not the server's
//! reported converged, a one-connection publisher (gRPC stream, MQTT QoS 0 and 1, JetStream
//! async and atomic batches) that counts acks the server never gave. Fan-out counting is
//! checked for every subscriber protocol a ratio rests on: Tickwire's WebSocket, gRPC and
//! MQTT, and core NATS. The parsers themselves are unit-tested in `crates/bench/src/proto.rs`
//! and `publish.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nats_cluster;

use std::process::Command;

use common::Server;
use serde_json::Value;

/// Runs `tickwire bench run ARGS --json FILE` against `srv` and returns the JSON result.
fn bench(srv: &Server, dir: &std::path::Path, name: &str, args: &[&str]) -> Value {
    bench_at(&srv.addr, srv.pid(), dir, name, args)
}

/// The same against `addr` (a listener other than the server's HTTP one), with `pid` the
/// server process whose CPU and memory the run reports.
fn bench_at(addr: &str, pid: u32, dir: &std::path::Path, name: &str, args: &[&str]) -> Value {
    let json = dir.join(format!("{name}.json"));
    let bin = std::env::var_os("TICKWIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into());
    let out = Command::new(bin)
        .args(["bench", "run", "--addr", addr, "--label", name])
        .args(["--server-pid", &pid.to_string()])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run tickwire bench");
    assert!(
        out.status.success(),
        "bench {name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).expect("read the bench JSON")).expect("bench JSON")
}

fn extra(r: &Value, key: &str) -> f64 {
    r["extra"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no extra.{key} in {r}"))
}

/// A server for the fan-out shaped tests (`fsync` every 100 ms, as `bench/run.sh` runs
/// them) on a fresh data directory, with one environment setting; the directory goes with it.
fn fanout_server(env: (&str, &str)) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        &dir.path().join("data"),
        &["--fsync", "interval:100ms"],
        &[env],
    );
    (dir, srv)
}

/// The small fan-out shape every counting test uses: 20 clients on 10 of 50 symbols each, so
/// every quote has exactly 20 * 10 / 50 = 4 subscribers, at 1,000 quotes/s (far below what any
/// server here sustains) for 2 s after 1 s, then 2 s for the last values to arrive. Followed
/// by `more`.
fn small_fanout<'a>(target: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    run_args("fanout", target, "20", "50", more)
}

/// `--scenario scenario --target target`, `clients` clients on 10 of `symbols` symbols each,
/// 100-byte quotes at 1,000/s for 2 s after 1 s of warm-up and 2 s of drain, then `more`.
fn run_args<'a>(
    scenario: &'a str,
    target: &'a str,
    clients: &'a str,
    symbols: &'a str,
    more: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--scenario",
        scenario,
        "--target",
        target,
        "--clients",
        clients,
        "--subs",
        "10",
        "--symbols",
        symbols,
        "--size",
        "100",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--drain",
        "2",
    ];
    args.extend_from_slice(more);
    args
}

/// What every run of [`small_fanout`] must show: the offered rate published, `per` deliveries
/// per quote (4 subscribers each: a server that queues delivers all 4, one that conflates
/// next to nothing at this rate, so just under 4; above 4 is a delivery counted twice), and
/// every subscriber ending with each symbol's newest value.
fn check_small_fanout(what: &str, r: &Value, per: std::ops::RangeInclusive<f64>) {
    let published = r["published_per_s"].as_f64().unwrap();
    assert!(
        (500.0..=1100.0).contains(&published),
        "{what}: published {published}/s for 1,000/s offered"
    );
    let got = extra(r, "delivered_per_published");
    assert!(
        per.contains(&got),
        "{what}: each quote has 4 subscribers, the generator counted {got} deliveries per quote"
    );
    assert_eq!(
        extra(r, "converged"),
        1.0,
        "{what}: every subscriber ends with each symbol's newest value"
    );
}

#[test]
fn fanout_counts_each_delivery_once_and_checks_convergence() {
    // The same check for each way subscribers read: JSON and binary WebSocket, gRPC calls;
    // and for each way the publisher sends: HTTP requests, WebSocket commands.
    // gRPC subscribers through both HTTP/2 clients: tonic's and the h2 crate's.
    for (encoding, wire, client) in [
        ("json", "http", "tonic"),
        ("proto", "http", "tonic"),
        ("grpc", "http", "tonic"),
        ("grpc", "http", "h2"),
        ("json", "ws", "tonic"),
    ] {
        fanout_counts(encoding, wire, client);
    }
}

fn fanout_counts(encoding: &str, wire: &str, client: &str) {
    let (dir, srv) = fanout_server(("TICKWIRE_GRPC__LISTEN", "127.0.0.1:0"));
    let grpc = srv.grpc_addr();
    let more = [
        "--sub-encoding",
        encoding,
        "--grpc-addr",
        &grpc,
        "--publish-wire",
        wire,
        "--grpc-client",
        client,
    ];
    let r = bench(
        &srv,
        dir.path(),
        "fanout",
        &small_fanout("tickwire-ws", &more),
    );
    let encoding = format!("{encoding} ({client}), published over {wire}");
    check_small_fanout(&encoding, &r, 3.0..=4.1);
    // Payload bytes: 100 per delivery, whatever the envelope.
    let mb = r["mb_per_s"].as_f64().unwrap();
    let delivered = r["delivered_per_s"].as_f64().unwrap();
    assert!(
        (mb - delivered * 100.0 / 1e6).abs() < 1e-6,
        "{mb} MB/s for {delivered} deliveries/s"
    );
    // Staleness is sampled through the run and can never be below zero or above the run.
    let p99 = extra(&r, "staleness_p99_us");
    assert!((0.0..=3_000_000.0).contains(&p99), "staleness p99 {p99} us");
    // So is how late the publisher sent each message (at least 1 us: recorded, not zero).
    let lag = extra(&r, "publisher_lag_p99_us");
    assert!(
        (1.0..=3_000_000.0).contains(&lag),
        "{encoding}: publisher lag p99 {lag} us"
    );
}

#[test]
fn chat_resume_reports_no_loss_and_no_duplicate_on_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &["--fsync", "always"], &[]);
    // Clients drop their connection every ~0.5 s and resume by offset: the server loses
    // nothing, so any loss, duplicate or reordering reported would be the generator's.
    let r = bench(
        &srv,
        dir.path(),
        "chat",
        &[
            "--scenario",
            "chat",
            "--target",
            "tickwire-ws",
            "--clients",
            "10",
            "--rooms",
            "2",
            "--rate",
            "200",
            "--disconnect-ms",
            "500",
            "--duration",
            "2",
            "--warmup",
            "1",
        ],
    );
    assert!(extra(&r, "reconnects") > 0.0, "no reconnect happened: {r}");
    for k in ["lost", "duplicated", "out_of_order"] {
        assert_eq!(extra(&r, k), 0.0, "{k}: {r}");
    }
    let published = r["published_per_s"].as_f64().unwrap();
    assert!(
        (100.0..=220.0).contains(&published),
        "chat published {published}/s for 200/s offered (counted over the measured window)"
    );
    assert!(r["delivered_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn book_subscribers_end_with_the_servers_books_at_depth_10_and_full_depth() {
    for depth in ["10", "0"] {
        let (dir, srv) = fanout_server(("TICKWIRE_BOOKS__DEPTH", depth));
        // 4 books of 20 levels a side, 3 clients on 2 books each, 300 level changes/s: far
        // below what the server sustains, so every subscriber must end with the server's book
        // (same seq, same levels), with no gap and every checksum matching its own book.
        let r = bench(
            &srv,
            dir.path(),
            &format!("book-{depth}"),
            &[
                "--scenario",
                "book",
                "--target",
                "tickwire-ws",
                "--symbols",
                "4",
                "--levels",
                "20",
                "--clients",
                "3",
                "--subs",
                "2",
                "--rate",
                "300",
                "--duration",
                "2",
                "--warmup",
                "1",
                "--drain",
                "1",
            ],
        );
        assert_eq!(extra(&r, "converged"), 1.0, "depth {depth}: {r}");
        assert_eq!(extra(&r, "gaps"), 0.0, "depth {depth}: {r}");
        assert_eq!(extra(&r, "checksum_mismatches"), 0.0, "depth {depth}: {r}");
        assert_eq!(
            extra(&r, "server_depth"),
            depth.parse::<f64>().unwrap(),
            "the snapshots carry the server's depth: {r}"
        );
        // One snapshot per subscription, none counted as a delta.
        assert_eq!(extra(&r, "snapshots"), 6.0, "depth {depth}: {r}");
        let published = r["published_per_s"].as_f64().unwrap();
        assert!(
            (150.0..=330.0).contains(&published),
            "depth {depth}: published {published}/s for 300/s offered"
        );
        let delivered = r["delivered_per_s"].as_f64().unwrap();
        // Each book is on 1.5 subscribers and gets at most one delta per 20 ms flush: 6
        // subscriptions x 50/s bound what can arrive.
        assert!(
            delivered > 0.0 && delivered <= 6.0 * 55.0,
            "depth {depth}: {delivered} deltas/s"
        );
        assert!(extra(&r, "levels_per_delta") >= 1.0, "{r}");
        assert!(r["latency"]["count"].as_u64().unwrap() > 0, "{r}");
    }
}

/// The one-connection shape the counting tests use: one publisher at 1,000 quotes/s over 10
/// symbols for 2 s after 1 s, 5 WebSocket subscribers on all of them at `http` (where the
/// server's own count is read too), then 2 s for the last values. Followed by `more`.
fn one_connection<'a>(target: &'a str, http: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = run_args("ws-publish", target, "5", "10", &["--http-addr", http]);
    args.extend_from_slice(more);
    args
}

/// What a one-connection run at 1,000 quotes/s offered must show: no refusals, the offered
/// rate acknowledged, and only quotes the server published by its own count (which also holds
/// the live candle bars it publishes itself, at most one per symbol and resolution a second);
/// every subscriber converged; and, stamped when due (open loop), how late each message went
/// out recorded beside.
fn check_one_connection(what: &str, r: &Value) {
    assert_eq!(extra(r, "errors"), 0.0, "{what}: {r}");
    let published = r["published_per_s"].as_f64().unwrap();
    assert!(
        (500.0..=1100.0).contains(&published),
        "{what}: {published} acked/s for 1,000/s offered"
    );
    let server = extra(r, "server_published_per_s");
    assert!(
        server >= published * 0.9 && server <= published + 200.0,
        "{what}: server published {server}/s, the generator counted {published} acked/s"
    );
    assert_eq!(extra(r, "converged"), 1.0, "{what}: {r}");
    let lag = extra(r, "publisher_lag_p99_us");
    assert!(
        (1.0..=3_000_000.0).contains(&lag),
        "{what}: publisher lag p99 {lag} us"
    );
}

#[test]
fn ws_publish_over_one_grpc_stream_counts_only_what_the_server_published() {
    // Both HTTP/2 clients of the publisher: tonic's and the h2 crate's without tonic.
    for client in ["tonic", "h2"] {
        ws_publish_over_grpc(client);
    }
}

fn ws_publish_over_grpc(client: &str) {
    let (dir, srv) = fanout_server(("TICKWIRE_GRPC__LISTEN", "127.0.0.1:0"));
    let grpc = srv.grpc_addr();
    // One PublishStream call, 1,000 quotes/s offered, 5 WebSocket subscribers on all 10
    // symbols: the acks the generator counts must be quotes the server published (its own
    // count, read over HTTP), and every subscriber must end with each symbol's newest value.
    let r = bench_at(
        &grpc,
        srv.pid(),
        dir.path(),
        "ws-publish-grpc",
        &one_connection(
            "tickwire-grpc",
            &srv.addr,
            &["--grpc-client", client, "--window", "100"],
        ),
    );
    check_one_connection(&format!("gRPC stream ({client})"), &r);
}

#[test]
fn mqtt_fanout_counts_each_delivery_once_and_checks_convergence() {
    // The MQTT target's subscribers and publisher (the same client mosquitto's rows use),
    // against Tickwire's own MQTT edge.
    let (dir, srv) = fanout_server(("TICKWIRE_MQTT__LISTEN", "127.0.0.1:0"));
    let mqtt = format!("127.0.0.1:{}", srv.mqtt_port());
    let args = small_fanout("mqtt", &[]);
    let r = bench_at(&mqtt, srv.pid(), dir.path(), "fanout-mqtt", &args);
    check_small_fanout("MQTT", &r, 3.0..=4.1);
}

#[test]
fn ws_publish_over_mqtt_counts_only_what_the_server_published() {
    // One MQTT connection publishing at QoS 0 (acked counted between the PINGREQ barriers sent
    // as the measured window opens and closes) and at QoS 1 (counted by PUBACK), 1,000
    // quotes/s offered: what the generator counts as acked must be quotes the server
    // published, by the server's own count.
    for qos in ["0", "1"] {
        let (dir, srv) = fanout_server(("TICKWIRE_MQTT__LISTEN", "127.0.0.1:0"));
        let mqtt = format!("127.0.0.1:{}", srv.mqtt_port());
        let r = bench_at(
            &mqtt,
            srv.pid(),
            dir.path(),
            "ws-publish-mqtt",
            &one_connection("mqtt", &srv.addr, &["--qos", qos, "--window", "64"]),
        );
        check_one_connection(&format!("MQTT QoS {qos}"), &r);
    }
}

/// A nats-server with JetStream (file storage) and its monitoring port, stopped on drop.
struct Nats {
    child: std::process::Child,
    addr: String,
    monitor: String,
}

impl Nats {
    /// Client and monitoring ports are the server's own choice (`-1`), read from the ports
    /// file it writes once it listens: ports picked beforehand could be taken by a test
    /// running in parallel before nats-server binds them.
    fn start(store: &std::path::Path) -> Nats {
        let ports_dir = store.with_extension("ports");
        std::fs::create_dir_all(&ports_dir).unwrap();
        let mut child = Command::new(nats_cluster::nats_bin())
            .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-js", "-sd"])
            .arg(store)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        let file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // {"nats":["nats://127.0.0.1:P"],"monitoring":["http://127.0.0.1:M"]}; retried while
        // it is missing or half written.
        let (addr, monitor) = loop {
            let ports: Option<Value> = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let first = |key: &str| {
                let url = ports.as_ref()?[key][0].as_str()?;
                Some(url.split_once("://")?.1.to_string())
            };
            if let (Some(a), Some(m)) = (first("nats"), first("monitoring")) {
                break (a, m);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server did not write its ports to {}", file.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // Killed on drop from here on, should it never take connections.
        let nats = Nats {
            child,
            addr,
            monitor,
        };
        while std::net::TcpStream::connect(&nats.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        nats
    }

    /// Messages in stream `name`, from the monitoring endpoint (/jsz).
    fn stream_messages(&self, name: &str) -> u64 {
        let url = format!("http://{}/jsz?streams=true", self.monitor);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let v: Value = rt.block_on(async {
            common::http()
                .get(&url)
                .send()
                .await
                .expect("GET /jsz")
                .json()
                .await
                .expect("/jsz JSON")
        });
        let streams = v["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten());
        for s in streams {
            if s["name"] == name {
                return s["state"]["messages"].as_u64().expect("stream messages");
            }
        }
        panic!("no stream {name} in {v}");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run of the generator (`line`: its arguments) against a fresh JetStream nats-server, kept
/// running for the checks after it.
fn bench_jetstream(name: &str, line: &str) -> (Value, Nats, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("js"));
    let args: Vec<&str> = line.split_whitespace().collect();
    let r = bench_at(&nats.addr, nats.child.id(), dir.path(), name, &args);
    (r, nats, dir)
}

#[test]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
fn jetstream_async_publisher_counts_only_stored_messages() {
    // One connection, one PUB per quote with its own reply inbox, up to 100 acks outstanding,
    // as fast as the acks come (the only rate this row runs at), 1 s of warm-up and 2 s
    // measured: every ack counted must be a message the stream stored.
    let (r, nats, _dir) = bench_jetstream(
        "ws-publish-jetstream",
        "--scenario ws-publish --target jetstream --clients 0 --symbols 10 --size 100 \
         --rate 0 --window 100 --duration 2 --warmup 1",
    );
    assert_eq!(extra(&r, "errors"), 0.0, "{r}");
    let published = r["published_per_s"].as_f64().unwrap();
    assert!(published > 100.0, "JetStream async: {published} acked/s");
    // The stream holds warm-up, measured and drained messages: at least the acks counted in
    // the 2 measured seconds, and not more than the run (about 3 s) could have sent at that
    // rate several times over.
    let stored = nats.stream_messages("QUOTES") as f64;
    assert!(
        stored >= published * 2.0 * 0.99 && stored <= published * 10.0,
        "stream QUOTES holds {stored} messages; the generator counted {published} acked/s over 2 s"
    );
}

#[test]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
fn jetstream_tail_reads_back_what_the_ingest_publishers_store() {
    // One push consumer reads the stream while one publisher fills it (the cluster table's
    // `-tail` rows): what it counts per second can be neither nothing nor more than stored.
    let (r, nats, _dir) = bench_jetstream(
        "ingest-jetstream-tail",
        "--scenario ingest --target jetstream --publishers 1 --window 256 --batch 64 \
         --symbols 10 --size 100 --js-tail --duration 2 --warmup 1",
    );
    assert_eq!(extra(&r, "errors"), 0.0, "{r}");
    let published = r["published_per_s"].as_f64().unwrap();
    let tail = extra(&r, "tail_per_s");
    let stored = nats.stream_messages("QUOTES") as f64;
    assert!(published > 100.0, "{r}");
    assert!(
        tail > published * 0.5,
        "the tail read {tail}/s while {published}/s were stored"
    );
    assert!(
        tail * 2.0 <= stored,
        "the tail read {tail}/s over 2 s; the stream holds {stored}"
    );
}

#[test]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
fn nats_fanout_counts_each_delivery_once_and_checks_convergence() {
    // The denominator of every fan-out ratio: nats-server's core pub/sub read by the NATS
    // target's subscribers. It queues every message, so at a rate far below its limit each
    // quote reaches exactly its 4 subscribers: not fewer, and never counted twice.
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("js"));
    let args = small_fanout("nats", &[]);
    let r = bench_at(
        &nats.addr,
        nats.child.id(),
        dir.path(),
        "fanout-nats",
        &args,
    );
    check_small_fanout("nats", &r, 3.9..=4.05);
}

#[test]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
fn jetstream_atomic_batch_publisher_counts_only_stored_messages() {
    // The ingest table's atomic-batch row: batches of 100, committed as one, with up to 400
    // messages outstanding. Every message counted must be one the stream stored.
    let (r, nats, _dir) = bench_jetstream(
        "ingest-jetstream-atomic",
        "--scenario ingest --target jetstream --publishers 1 --window 400 --js-atomic-batch 100 \
         --symbols 10 --size 100 --rate 0 --duration 2 --warmup 1",
    );
    assert_eq!(extra(&r, "errors"), 0.0, "{r}");
    let published = r["published_per_s"].as_f64().unwrap();
    assert!(published > 100.0, "JetStream atomic batches: {published}/s");
    let stored = nats.stream_messages("QUOTES") as f64;
    assert!(
        stored >= published * 2.0 * 0.99 && stored <= published * 10.0,
        "stream QUOTES holds {stored} messages; the generator counted {published}/s over 2 s"
    );
}
