//! `tickwire bench`: one load generator for Tickwire and the servers teams pick instead
//! (nats-server, mosquitto), so every target sees the same message shapes, the same rates and
//! the same measurement. Scenarios and reporting rules: docs/benchmarks.md.
//!
//! Targets are protocols, not products: `mqtt` drives any MQTT 3.1.1 broker (mosquitto, and
//! Tickwire's MQTT edge), `nats` any NATS server, `tickwire-ws` Tickwire's WebSocket JSON edge
//! (publishing through its HTTP batch API, or in ws-publish one WebSocket command per message),
//! `tickwire-grpc` Tickwire's gRPC `PublishStream` (ws-publish only). `--label` names the
//! product.

mod batch;
mod book;
mod chat;
mod error;
mod grpc;
mod ingest;
mod jetstream;
mod msg;
mod open_loop;
mod proto;
mod publish;
mod report;
mod scenario;
mod sink;
mod stats;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

pub use error::BenchError;
pub use report::RunResult;
pub use stats::rss_kb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Tickwire: WebSocket JSON subscribers, HTTP batch publisher (ws-publish: WebSocket
    /// `publish` commands, one message each).
    TickwireWs,
    /// NATS core pub/sub (text protocol).
    Nats,
    /// NATS JetStream, file storage, async publish with acks (ingest; ws-publish: one
    /// connection, as fast as acks allow, no subscribers).
    #[value(name = "jetstream")]
    JetStream,
    /// MQTT 3.1.1: subscribers and publisher at QoS 0 (ws-publish: the publisher at `--qos`).
    Mqtt,
    /// Tickwire's gRPC listener (ws-publish only): one `PublishStream` call, one
    /// `PublishRequest` per message; subscribers, if any, on the WebSocket at `--http-addr`.
    TickwireGrpc,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::TickwireWs => "tickwire-ws",
            Target::Nats => "nats",
            Target::JetStream => "jetstream",
            Target::Mqtt => "mqtt",
            Target::TickwireGrpc => "tickwire-grpc",
        }
    }
}

/// How a Tickwire WebSocket subscriber reads pushes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubEncoding {
    #[default]
    Json,
    Proto,
    /// Not a WebSocket: each client is a gRPC `Subscribe` call on `--grpc-addr`.
    Grpc,
}

/// How a tickwire-ws fan-out publisher sends its quotes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishWire {
    /// Batches as `POST /v1/publish` requests, one unanswered at a time.
    #[default]
    Http,
    /// One WebSocket `publish` command per quote, acknowledgements read as they come.
    Ws,
}

/// The HTTP/2 client the tickwire-grpc ws-publish publisher goes through (grpc.rs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcClient {
    /// The server's generated tonic client: one owned, prost-encoded request per quote.
    #[default]
    Tonic,
    /// The `h2` crate's client without tonic: requests encoded into one buffer per turn,
    /// answers and pushes read in place (grpc/h2c.rs says why).
    H2,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    #[default]
    Json,
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Ingest,
    Fanout,
    Idle,
    Slow,
    Chat,
    /// One connection publishing one message per command, acknowledgements pipelined.
    WsPublish,
    /// Order-book deltas through to subscribers: depth updates in, `book.<SYM>` deltas out.
    Book,
}

impl Scenario {
    /// The name used in results files and JSON (`ws-publish`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Ingest => "ingest",
            Scenario::Fanout => "fanout",
            Scenario::Idle => "idle",
            Scenario::Slow => "slow",
            Scenario::Chat => "chat",
            Scenario::WsPublish => "ws-publish",
            Scenario::Book => "book",
        }
    }
}

/// `tickwire bench …`
#[derive(Debug, Args)]
pub struct BenchCli {
    #[command(subcommand)]
    cmd: BenchCmd,
}

// Parsed once per process: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Run one scenario against one target and print (and optionally save) its JSON result.
    Run(RunArgs),
    /// Turn JSON results into a markdown table: medians and spread per target and parameters.
    Report {
        /// Heading level-3 title above the table.
        #[arg(long, default_value = "results")]
        title: String,
        files: Vec<PathBuf>,
    },
    /// A trivial server that acknowledges every publish at once, without storing or forwarding
    /// anything: what one ws-publish connection reaches when the server costs nothing, i.e. the
    /// load generator's own limit.
    Sink(sink::SinkArgs),
}

/// Parameters of one run. Every run is bounded by `--duration` (plus warm-up and drain) and by
/// `--max-messages`; all traffic goes to `--addr`, which must be a loopback address.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    #[arg(long, value_enum)]
    pub target: Target,
    /// Server address (loopback only).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Product name for the tables (default: the target's protocol name).
    #[arg(long)]
    pub label: Option<String>,
    /// Server process to sample CPU and RSS from (/proc/<pid>).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Subscribing (fanout, slow, idle, chat) connections.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Distinct symbols (channels).
    #[arg(long, default_value_t = 1000)]
    pub symbols: usize,
    /// Symbols each subscriber subscribes to.
    #[arg(long, default_value_t = 10)]
    pub subs: usize,
    /// Idle: each connection first subscribes to `--subs` of the `--symbols` channels (a
    /// client that subscribed and then went quiet), instead of only connecting.
    #[arg(long)]
    pub idle_subscribe: bool,
    /// Published messages per second, all publishers together (0: as fast as acks allow).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Message size in bytes (the quote JSON, padded).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Stop publishing after this many messages.
    #[arg(long, default_value_t = u64::MAX)]
    pub max_messages: u64,
    /// Publishing connections (ingest).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per publish request (HTTP batch) or per write.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Publishes in flight per connection: JetStream acks; ws-publish commands sent but not yet
    /// acknowledged (MQTT QoS 1: keep it at or below the server's Receive Maximum, 64 for
    /// Tickwire's MQTT edge by default, which closes a connection that sends more).
    #[arg(long, default_value_t = 4096)]
    pub window: usize,
    /// ws-publish over MQTT: the publisher's QoS (0: no acknowledgement, the accepted rate is
    /// read through a PINGREQ barrier; 1: PUBACK per message).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    #[serde(default)]
    pub qos: u8,
    /// Tickwire's HTTP address, when `--addr` is another of its listeners (the MQTT one): its
    /// /metrics is read before and after the window (`server_published_per_s`), and ws-publish
    /// subscribers connect there over WebSocket instead of speaking the publisher's protocol.
    #[arg(long)]
    #[serde(default)]
    pub http_addr: Option<SocketAddr>,
    /// slow: percent of clients that read slowly.
    #[arg(long, default_value_t = 10)]
    pub slow_pct: u32,
    /// slow: how many times slower than the expected per-client rate they read.
    #[arg(long, default_value_t = 10)]
    pub slow_factor: u32,
    /// chat: rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// chat: mean milliseconds between a client's random disconnects.
    #[arg(long, default_value_t = 3000)]
    pub disconnect_ms: u64,
    /// fanout, slow: seconds to wait after publishing stops before checking that every client
    /// holds the newest value of each of its symbols (the `converged` column).
    #[arg(long, default_value_t = 2.0)]
    #[serde(default = "default_drain")]
    pub drain: f64,
    /// Load-generator runtime threads (the server shares the machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Body encoding of Tickwire's HTTP publishers: the JSON array, or the binary batch
    /// (`application/vnd.tickwire.batch`, docs/protocol.md).
    #[arg(long, value_enum, default_value_t = Encoding::Json)]
    #[serde(default)]
    pub encoding: Encoding,
    /// Encoding of Tickwire's WebSocket subscribers: JSON text frames, or the binary protobuf
    /// frames of the `tickwire.v1.proto` subprotocol (docs/protocol.md, "Binary encoding").
    /// The same quote reaches both: its JSON travels as a `Push`'s `json` payload.
    #[arg(long, value_enum, default_value_t = SubEncoding::Json)]
    #[serde(default)]
    pub sub_encoding: SubEncoding,
    /// tickwire-ws fan-out and slow: `http` publishes batches as `POST /v1/publish` requests,
    /// one unanswered at a time (the server answers a connection's HTTP/1.1 requests in turn,
    /// so what falls due during an answer waits for the next request); `ws` sends one
    /// WebSocket `publish` command per quote when it is due, with up to `--window`
    /// unacknowledged, as the NATS and MQTT QoS 0 publishers never wait for an answer.
    #[arg(long, value_enum, default_value_t = PublishWire::Http)]
    #[serde(default)]
    pub publish_wire: PublishWire,
    /// Tickwire's gRPC listener, where `--sub-encoding grpc` subscribers connect (the
    /// publishers stay on `--addr`).
    #[arg(long)]
    #[serde(default)]
    pub grpc_addr: Option<SocketAddr>,
    /// The HTTP/2 client of the gRPC calls: the tickwire-grpc ws-publish publisher's and the
    /// `--sub-encoding grpc` subscribers'. `tonic` (the server's generated client) or `h2` (the
    /// same calls and checks over the h2 crate, with less of the generator's CPU per message:
    /// it shares the cores with the server).
    #[arg(long, value_enum, default_value_t = GrpcClient::Tonic)]
    #[serde(default)]
    pub grpc_client: GrpcClient,
    /// `--sub-encoding grpc`: the HTTP/2 receive window, in bytes, each subscriber's
    /// connection advertises for its stream and for the connection (default: tonic's, 2 MiB a
    /// stream and 5 MiB a connection). A reader that falls behind holds up to a stream window
    /// of pushes sent but not yet read: the server keeps newer prices back (conflated) only
    /// once that window is full.
    #[arg(long)]
    #[serde(default)]
    pub grpc_window: Option<u32>,
    /// book: levels a side of each book's snapshot (updates change the sizes of these).
    #[arg(long, default_value_t = 50)]
    #[serde(default = "default_levels")]
    pub levels: usize,
    /// The server's fsync policy, recorded in the result (ingest).
    #[arg(long)]
    pub fsync: Option<String>,
    /// jetstream target: replicas of the stream the run creates (a clustered nats-server).
    #[arg(long, default_value_t = 1)]
    #[serde(default = "default_js_replicas")]
    pub js_replicas: usize,
    /// jetstream target: publish in atomic batches of this many messages (nats-server 2.12+,
    /// `allow_atomic` on the stream; at most 1000), one acknowledgement per batch, with up to
    /// `window / N` batches in flight per connection. 0: one acknowledgement per message.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub js_atomic_batch: usize,
    /// jetstream ingest: one push consumer (no acks) reads the stream back while it is
    /// written, as every Tickwire cluster node tails each namespace it serves; the row then
    /// also reports `tail_per_s`. The raw rows leave that read-back out.
    #[arg(long)]
    #[serde(default)]
    pub js_tail: bool,
    /// Subscribers connect to these addresses in turn instead of `--addr` (the publishers
    /// stay on `--addr`): fan-out through several cluster nodes. Repeat the flag per address.
    #[arg(long)]
    #[serde(default)]
    pub sub_addr: Vec<SocketAddr>,
    /// Write the JSON result here as well as to stdout.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The drain of results written before `--drain` existed.
fn default_drain() -> f64 {
    2.0
}

/// The book levels of results written before `--levels` existed.
fn default_levels() -> usize {
    50
}

/// The stream replicas of results written before `--js-replicas` existed.
fn default_js_replicas() -> usize {
    1
}

impl RunArgs {
    pub fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.target.name().to_string())
    }

    /// Where Tickwire's HTTP API (/metrics, WebSocket) is, if known: `--http-addr`, or `--addr`
    /// for the tickwire-ws target (the MQTT and gRPC targets' `--addr` is another listener).
    pub fn tickwire_http(&self) -> Option<SocketAddr> {
        self.http_addr
            .or((self.target == Target::TickwireWs).then_some(self.addr))
    }
}

/// Entry point for the CLI's `bench` subcommand.
pub fn main(cli: BenchCli) -> ExitCode {
    match cli.cmd {
        BenchCmd::Report { title, files } => match report::markdown(&title, &files) {
            Ok(md) => {
                println!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tickwire bench: {e}");
                ExitCode::FAILURE
            }
        },
        BenchCmd::Sink(args) => match sink::main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tickwire bench sink: {e}");
                ExitCode::FAILURE
            }
        },
        BenchCmd::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.threads.max(1))
                .enable_all()
                .build();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tickwire bench: runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(args)) {
                Ok(r) => {
                    println!("{}", r.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tickwire bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Refuses what the load generator cannot measure as asked, before any connection is made:
/// a usage error names the flag to change instead of a protocol error half way through.
fn validate(args: &RunArgs) -> Result<(), BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.into()));
    for addr in std::iter::once(args.addr)
        .chain(args.http_addr)
        .chain(args.grpc_addr)
        .chain(args.sub_addr.iter().copied())
    {
        if !addr.ip().is_loopback() {
            return Err(BenchError::Usage(format!(
                "{addr} is not a loopback address: the load generator only targets this machine"
            )));
        }
    }
    if let Some(w) = args.grpc_window {
        if args.sub_encoding != SubEncoding::Grpc {
            return usage("--grpc-window is the --sub-encoding grpc subscribers' receive window");
        }
        // HTTP/2 (RFC 9113, 6.9.1): a window is at most 2^31 - 1 bytes; below one frame of
        // the server's largest push a subscriber could stall.
        if !(16_384..=(1 << 31) - 1).contains(&w) {
            return usage("--grpc-window: 16384 to 2147483647 bytes");
        }
    }
    if args.grpc_client != GrpcClient::Tonic
        && args.target != Target::TickwireGrpc
        && args.sub_encoding != SubEncoding::Grpc
    {
        return usage(
            "--grpc-client is for gRPC calls: the tickwire-grpc publisher's or the \
             --sub-encoding grpc subscribers'",
        );
    }
    if args.publish_wire == PublishWire::Ws
        && (args.target != Target::TickwireWs
            || !matches!(args.scenario, Scenario::Fanout | Scenario::Slow))
    {
        return usage("--publish-wire ws is the tickwire-ws fan-out and slow publisher's");
    }
    if args.js_tail && (args.target, args.scenario) != (Target::JetStream, Scenario::Ingest) {
        return usage(
            "--js-tail reads back a jetstream ingest run's stream: jetstream ingest only",
        );
    }
    match (args.target, args.scenario) {
        (Target::JetStream, Scenario::Ingest | Scenario::WsPublish) => {}
        (Target::JetStream, _) => {
            return usage("the jetstream target is for the ingest and ws-publish scenarios")
        }
        (Target::TickwireGrpc, Scenario::WsPublish) => {}
        (Target::TickwireGrpc, _) => {
            return usage(
                "the tickwire-grpc target publishes over one PublishStream call: ws-publish only \
                 (gRPC subscribers: --target tickwire-ws --sub-encoding grpc --grpc-addr)",
            )
        }
        (t, Scenario::Chat) if t != Target::TickwireWs => {
            return usage("chat needs resume by offset: tickwire-ws only")
        }
        _ => {}
    }
    if args.scenario == Scenario::WsPublish {
        match args.target {
            Target::Nats => {
                return usage(
                    "ws-publish publishes over WebSocket (tickwire-ws), MQTT (mqtt), gRPC \
                     (tickwire-grpc) or JetStream (jetstream)",
                )
            }
            // The JetStream publisher is the ingest scenario's, which publishes as fast as its
            // acks allow and knows no schedule; its acks carry no message to check subscribers
            // against either. What it is here for is the one-connection throughput row.
            Target::JetStream if args.rate != 0 || args.clients != 0 => {
                return usage("ws-publish on jetstream runs --rate 0 --clients 0 only")
            }
            // An atomic batch is one ack per batch, not one per message.
            Target::JetStream if args.js_atomic_batch != 0 => {
                return usage("ws-publish publishes one message per publish: no --js-atomic-batch")
            }
            // Subscribers speak a subscribing protocol: the gRPC publisher's go to Tickwire's
            // WebSocket, as an MQTT publisher's do (or to --grpc-addr with --sub-encoding grpc).
            Target::TickwireGrpc
                if args.clients > 0
                    && args.http_addr.is_none()
                    && args.sub_encoding != SubEncoding::Grpc =>
            {
                return usage(
                    "ws-publish on tickwire-grpc with --clients > 0 needs --http-addr (the \
                     subscribers' WebSocket)",
                )
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs one scenario and returns (and saves, with `--json`) its result.
pub async fn run(args: RunArgs) -> Result<RunResult, BenchError> {
    validate(&args)?;
    let r = match args.scenario {
        Scenario::Ingest => ingest::ingest(&args).await?,
        Scenario::Fanout => scenario::fanout_run(&args).await?,
        Scenario::Slow => scenario::slow(&args).await?,
        Scenario::Idle => scenario::idle(&args).await?,
        Scenario::Chat => chat::chat(&args).await?,
        Scenario::WsPublish => scenario::ws_publish(&args).await?,
        Scenario::Book => book::book(&args).await?,
    };
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&r)?;
        std::fs::write(p, text).map_err(BenchError::io(p.display().to_string()))?;
    }
    Ok(r)
}

/// The run arguments of a command line (without the program name), for the crate's tests.
#[cfg(test)]
pub(crate) fn test_args(line: &str) -> RunArgs {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    match Cli::try_parse_from(std::iter::once("run").chain(line.split_whitespace())) {
        Ok(c) => c.run,
        Err(e) => panic!("{line}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> RunArgs {
        test_args(line)
    }

    fn refused(line: &str) -> String {
        match validate(&args(line)) {
            Err(BenchError::Usage(m)) => m,
            other => panic!("{line}: expected a usage error, got {other:?}"),
        }
    }

    const MAX: &str = "--clients 0 --symbols 1000 --size 100 --rate 0";

    #[test]
    fn the_new_ws_publish_rows_are_accepted_as_bench_run_sh_writes_them() {
        for line in [
            format!("--scenario ws-publish --target tickwire-grpc --addr 127.0.0.1:7906 --http-addr 127.0.0.1:7901 {MAX} --window 1000"),
            format!("--scenario ws-publish --target jetstream --addr 127.0.0.1:7902 {MAX} --window 4000"),
            // The rows that were there before.
            format!("--scenario ws-publish --target tickwire-ws --addr 127.0.0.1:7901 {MAX} --window 1000"),
            format!("--scenario ws-publish --target mqtt --addr 127.0.0.1:7904 --http-addr 127.0.0.1:7901 {MAX} --qos 1 --window 64"),
            "--scenario ingest --target jetstream --addr 127.0.0.1:7902 --publishers 4 --window 4096 --batch 512".to_string(),
        ] {
            let a = args(&line);
            assert!(validate(&a).is_ok(), "{line}: {:?}", validate(&a));
        }
        let a = args(&format!(
            "--scenario ws-publish --target tickwire-grpc --addr 127.0.0.1:7906 {MAX}"
        ));
        assert_eq!(a.target.name(), "tickwire-grpc");
        assert_eq!(a.label(), "tickwire-grpc");
    }

    #[test]
    fn the_grpc_client_is_chosen_for_the_grpc_publisher_only() {
        let grpc =
            format!("--scenario ws-publish --target tickwire-grpc --addr 127.0.0.1:7906 {MAX}");
        assert_eq!(
            args(&grpc).grpc_client,
            GrpcClient::Tonic,
            "the default, as before"
        );
        let a = args(&format!("{grpc} --grpc-client h2"));
        assert_eq!(a.grpc_client, GrpcClient::H2);
        assert!(validate(&a).is_ok());
        let m = refused(&format!(
            "--scenario ws-publish --target tickwire-ws --addr 127.0.0.1:7901 {MAX} --grpc-client h2"
        ));
        assert!(m.contains("--grpc-client"), "{m}");
        // The gRPC subscribers' client.
        let subs = args(
            "--scenario fanout --target tickwire-ws --addr 127.0.0.1:7901 --sub-encoding grpc \
             --grpc-addr 127.0.0.1:7906 --grpc-client h2",
        );
        assert_eq!(subs.grpc_client, GrpcClient::H2);
        assert!(validate(&subs).is_ok());
    }

    #[test]
    fn the_grpc_window_is_for_grpc_subscribers_and_within_http2_bounds() {
        let grpc = "--scenario fanout --target tickwire-ws --addr 127.0.0.1:7901 \
                    --sub-encoding grpc --grpc-addr 127.0.0.1:7906";
        let a = args(&format!("{grpc} --grpc-window 65536"));
        assert!(validate(&a).is_ok(), "{:?}", validate(&a));
        assert_eq!(a.grpc_window, Some(65_536));
        assert_eq!(args(grpc).grpc_window, None);
        let m = refused(
            "--scenario fanout --target tickwire-ws --addr 127.0.0.1:7901 --grpc-window 65536",
        );
        assert!(m.contains("--sub-encoding grpc"), "{m}");
        for w in ["0", "16383", "2147483648"] {
            let m = refused(&format!("{grpc} --grpc-window {w}"));
            assert!(m.contains("16384 to 2147483647"), "{w}: {m}");
        }
    }

    #[test]
    fn grpc_publishing_is_ws_publish_only_and_its_subscribers_need_a_websocket() {
        for scen in ["ingest", "fanout", "slow", "idle", "chat", "book"] {
            let m = refused(&format!(
                "--scenario {scen} --target tickwire-grpc --addr 127.0.0.1:7906"
            ));
            assert!(m.contains("ws-publish only"), "{scen}: {m}");
        }
        let m = refused(
            "--scenario ws-publish --target tickwire-grpc --addr 127.0.0.1:7906 --clients 10 --rate 1000",
        );
        assert!(m.contains("--http-addr"), "{m}");
        // With the WebSocket, or gRPC subscribers of their own, a fixed-rate row is fine.
        for extra in [
            "--http-addr 127.0.0.1:7901",
            "--sub-encoding grpc --grpc-addr 127.0.0.1:7906",
        ] {
            let line = format!(
                "--scenario ws-publish --target tickwire-grpc --addr 127.0.0.1:7906 --clients 10 --rate 1000 {extra}"
            );
            assert!(validate(&args(&line)).is_ok(), "{line}");
        }
    }

    #[test]
    fn the_websocket_publisher_is_for_tickwire_fanout_and_slow_only() {
        for scen in ["fanout", "slow"] {
            let ok = format!(
                "--scenario {scen} --target tickwire-ws --addr 127.0.0.1:7901 --publish-wire ws"
            );
            assert!(validate(&args(&ok)).is_ok(), "{ok}");
        }
        for line in [
            "--scenario fanout --target nats --addr 127.0.0.1:7902 --publish-wire ws",
            "--scenario ingest --target tickwire-ws --addr 127.0.0.1:7901 --publish-wire ws",
        ] {
            assert!(refused(line).contains("--publish-wire ws"), "{line}");
        }
    }

    #[test]
    fn a_jetstream_tail_is_for_jetstream_ingest_only() {
        let ok = "--scenario ingest --target jetstream --addr 127.0.0.1:7911 --js-tail";
        assert!(validate(&args(ok)).is_ok());
        for line in [
            "--scenario ingest --target tickwire-ws --addr 127.0.0.1:7901 --js-tail",
            "--scenario ws-publish --target jetstream --addr 127.0.0.1:7902 --clients 0 --rate 0 --js-tail",
        ] {
            assert!(refused(line).contains("jetstream ingest only"), "{line}");
        }
    }

    #[test]
    fn jetstream_ws_publish_is_the_one_connection_throughput_row_only() {
        let base = "--scenario ws-publish --target jetstream --addr 127.0.0.1:7902";
        assert!(refused(&format!("{base} --clients 0 --rate 20000")).contains("--rate 0"));
        assert!(refused(&format!("{base} --clients 100 --rate 0")).contains("--clients 0"));
        assert!(
            refused(&format!("{base} {MAX} --js-atomic-batch 100")).contains("--js-atomic-batch")
        );
        for scen in ["fanout", "slow", "idle", "chat"] {
            let m = refused(&format!(
                "--scenario {scen} --target jetstream --addr 127.0.0.1:7902"
            ));
            assert!(m.contains("ingest and ws-publish"), "{scen}: {m}");
        }
    }

    #[test]
    fn other_refusals_stay_as_they_were() {
        assert!(
            refused("--scenario ws-publish --target nats --addr 127.0.0.1:7902")
                .contains("ws-publish publishes over")
        );
        assert!(
            refused("--scenario chat --target mqtt --addr 127.0.0.1:7903")
                .contains("tickwire-ws only")
        );
        // Every address given must be loopback, the gRPC one included.
        for line in [
            "--scenario ws-publish --target tickwire-ws --addr 10.0.0.1:7901",
            "--scenario ws-publish --target mqtt --addr 127.0.0.1:7904 --http-addr 10.0.0.1:7901",
            "--scenario fanout --target tickwire-ws --addr 127.0.0.1:7901 --sub-encoding grpc --grpc-addr 10.0.0.1:7906",
        ] {
            assert!(refused(line).contains("not a loopback address"), "{line}");
        }
    }
}
