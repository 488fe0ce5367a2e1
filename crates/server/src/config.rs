//! The server's one configuration struct. Sources, later ones winning: built-in defaults, the
//! TOML file given by `--config`, `TICKWIRE_*` environment variables (`__` separates nested
//! keys), then command-line flags. Every setting is documented in docs/configuration.md.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};
use tickwire_gateway::GatewayConfig;
use tickwire_hub::{FsyncPolicy, HubConfig};
use tickwire_model::{Class, NamespaceSpec, Schema};

use crate::ServerError;

/// Default HTTP listen address.
pub const DEFAULT_HTTP: &str = tickwire_edge_http::DEFAULT_LISTEN;
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA: &str = "tickwire-data";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[http]`: the listen address (REST, WebSocket, SSE, console) and the listener's limits;
    /// `http = "ADDR"` is short for `[http] listen = "ADDR"`.
    #[serde(deserialize_with = "tickwire_edge_http::address_or_table")]
    pub http: tickwire_edge_http::HttpSection,
    /// Where logs and state live.
    pub data: PathBuf,
    /// `always` (fsync each group-commit batch before acking), `interval:<N>ms`, or `never`.
    pub fsync: String,
    /// API keys with every scope (publish, subscribe_all, admin): the short form of
    /// `[[auth.api_keys]]`. With no key and no JWT configured, everything is open to everyone
    /// (development only).
    pub api_keys: Vec<String>,
    /// Identities: API keys with scopes, JWT verification (docs/security.md).
    pub auth: tickwire_gateway::AuthConfig,
    /// Rate limits for clients (docs/security.md).
    pub limits: tickwire_gateway::LimitsConfig,
    /// Recent messages kept in memory per stream channel; a live subscriber further behind is
    /// disconnected with `slow_consumer` and resumes by offset.
    pub stream_buffer: usize,
    /// Client message ids remembered per namespace for idempotent publish.
    pub dedup_window: usize,
    pub max_subscriptions: usize,
    /// Concurrent long-lived connections, every edge (WebSocket, SSE, MQTT, FIX acceptor).
    pub max_connections: usize,
    /// Largest HTTP publish body, bytes.
    pub max_body_bytes: usize,
    /// A client that does not take a write within this long is disconnected.
    pub write_timeout_ms: u64,
    /// Log segment size, bytes.
    pub segment_bytes: u64,
    /// After SIGTERM, how long `/readyz` fails while the server still serves before it drains,
    /// so a load balancer stops sending new clients first (docs/deploy.md).
    pub drain_delay_ms: u64,
    /// Namespaces; merged over the defaults (quotes, candles, trades, chat, user) by name.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Live candles, their store and the UDF metadata (docs/candles.md).
    pub candles: tickwire_proj_candles::CandlesConfig,
    /// Order books built from the depth stream (docs/fix.md).
    pub books: BooksConfig,
    /// MQTT 3.1.1/5 over TCP and WebSocket (docs/mqtt.md).
    pub mqtt: tickwire_edge_mqtt::MqttConfig,
    /// FIX 4.4 initiators and acceptor (docs/fix.md).
    pub fix: tickwire_edge_fix::FixConfig,
    /// The certificate the listeners present (HTTPS/WSS, MQTT over TLS, FIX over TLS),
    /// reloaded on SIGHUP (docs/security.md).
    pub tls: tickwire_tls::TlsConfig,
    /// gRPC, on its own listener (docs/grpc.md).
    pub grpc: tickwire_edge_grpc::GrpcConfig,
    /// Cluster mode over NATS JetStream (docs/cluster.md); absent: the embedded log.
    pub cluster: Option<tickwire_stream_nats::ClusterConfig>,
    /// OpenTelemetry traces of publishes over OTLP/HTTP (docs/tracing.md); off by default.
    pub tracing: tickwire_otel::TracingConfig,
}

/// `[books]`: the book projection (`depth.<SYM>` deltas → `book.<SYM>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BooksConfig {
    /// Levels per side in each published `book.<SYM>` (0: all).
    pub depth: u32,
    /// How often changed books are published, milliseconds.
    pub flush_interval_ms: u64,
}

impl Default for BooksConfig {
    fn default() -> Self {
        let d = tickwire_proj_book::BookConfig::default();
        BooksConfig {
            depth: d.depth,
            flush_interval_ms: u64::try_from(d.flush_interval.as_millis()).unwrap_or(20),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceConfig {
    pub class: Option<Class>,
    pub schema: Option<Schema>,
    pub max_message_bytes: Option<usize>,
    pub retention_bytes: Option<u64>,
    /// e.g. `30d`, `12h`, `90m`.
    pub retention_age: Option<String>,
    /// Whether WebSocket clients without an API key may publish (the default of `publish`).
    pub client_publish: Option<bool>,
    /// Who may subscribe and read: anyone, authenticated, owner, claim, api_key.
    pub subscribe: Option<tickwire_model::Permission>,
    /// Who may publish: anyone, authenticated, owner, claim, api_key.
    pub publish: Option<tickwire_model::Permission>,
    /// Run this namespace's writer at a lower CPU priority (derived data such as candles).
    pub background: Option<bool>,
    /// Clients may edit and delete their own messages (stream namespaces; chat, user).
    pub edits: Option<bool>,
    /// Index messages for full-text search (chat, user).
    pub search: Option<bool>,
    /// Track who is subscribed to each channel (chat).
    pub presence: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: tickwire_edge_http::HttpSection::default(),
            data: PathBuf::from(DEFAULT_DATA),
            fsync: "always".into(),
            api_keys: Vec::new(),
            auth: tickwire_gateway::AuthConfig::default(),
            limits: tickwire_gateway::LimitsConfig::default(),
            stream_buffer: 1024,
            dedup_window: 100_000,
            max_subscriptions: 1024,
            max_connections: 100_000,
            max_body_bytes: 8 * 1024 * 1024,
            write_timeout_ms: 10_000,
            segment_bytes: 64 * 1024 * 1024,
            drain_delay_ms: 0,
            namespaces: BTreeMap::new(),
            candles: tickwire_proj_candles::CandlesConfig::default(),
            books: BooksConfig::default(),
            mqtt: tickwire_edge_mqtt::MqttConfig::default(),
            fix: tickwire_edge_fix::FixConfig::default(),
            tls: tickwire_tls::TlsConfig::default(),
            grpc: tickwire_edge_grpc::GrpcConfig::default(),
            cluster: None,
            tracing: tickwire_otel::TracingConfig::default(),
        }
    }
}

/// Overrides from the command line; `None` leaves the file/env value.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub http: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub fsync: Option<String>,
}

/// `TICKWIRE_*` variables that are not settings but belong to the project's tools, so a
/// server started beside them stays quiet: the log filter, the client commands' `--url` and
/// `--token` defaults, and what the test and benchmark scripts set (CI sets
/// `TICKWIRE_REQUIRE_ALL` for the whole run, servers included).
const TOOL_VARIABLES: &[&str] = &[
    "log",
    "url",
    "token",
    "require_all",
    "test_bin",
    "bin",
    "nats_server",
    "bench_token",
    "bench_api_key",
    "prop_seed",
];

impl Config {
    /// Defaults, then `file`, then `TICKWIRE_*` env, then CLI flags.
    pub fn load(file: Option<&std::path::Path>, cli: &CliOverrides) -> Result<Config, ServerError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ServerError::Config(format!(
                    "config file {} does not exist",
                    f.display()
                )));
            }
            fig = lift_http_address(fig.merge(Toml::file(f)));
        }
        // Only variables that name a setting are read: the TICKWIRE_ prefix is shared with
        // other tools (TICKWIRE_LOG is the log filter), and an unrelated variable in the
        // environment must not stop the server. Unknown ones are reported, not fatal; unknown
        // keys in the file still are.
        let known: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        for (k, _) in std::env::vars() {
            if let Some(rest) = k.strip_prefix("TICKWIRE_") {
                let top = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
                if !TOOL_VARIABLES.contains(&top.as_str()) && !known.contains(&top) {
                    eprintln!("tickwire: ignoring environment variable {k}: not a setting (docs/configuration.md)");
                }
            }
        }
        fig = fig.merge(
            Env::prefixed("TICKWIRE_")
                .filter(move |key| {
                    let top = key
                        .as_str()
                        .split("__")
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    known.contains(&top)
                })
                .split("__"),
        );
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        if let Some(h) = cli.http {
            cfg.http.listen = h;
        }
        if let Some(d) = &cli.data {
            cfg.data = d.clone();
        }
        if let Some(f) = &cli.fsync {
            cfg.fsync = f.clone();
        }
        cfg.hub_config()?;
        cfg.http.validate().map_err(ServerError::Config)?;
        cfg.fix
            .validate()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        cfg.tls_needs()?;
        if let Some(c) = &cfg.cluster {
            c.validate()?;
        }
        Ok(cfg)
    }

    /// Refuses TLS settings that could only fail later: half a certificate pair, a TLS
    /// listener without a certificate.
    fn tls_needs(&self) -> Result<(), ServerError> {
        let shared = self.tls.pair()?.is_some();
        let mqtt_own = self.mqtt.tls_pair()?.is_some();
        if self.mqtt.tls_listen.is_some() && !shared && !mqtt_own {
            return Err(ServerError::Config(
                "[mqtt] tls_listen needs a certificate: [tls] cert_file and key_file, or \
                 [mqtt] tls_cert_file and tls_key_file"
                    .into(),
            ));
        }
        if self.fix.acceptor.as_ref().is_some_and(|a| a.tls) && !shared {
            return Err(ServerError::Config(
                "[fix.acceptor] tls = true needs [tls] cert_file and key_file".into(),
            ));
        }
        Ok(())
    }

    /// The namespaces after merging configuration over the defaults.
    pub fn namespace_specs(&self) -> Result<Vec<NamespaceSpec>, ServerError> {
        let mut specs: BTreeMap<String, NamespaceSpec> = NamespaceSpec::defaults()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        for (name, nc) in &self.namespaces {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ServerError::Config(format!(
                    "namespace name {name:?}: use letters, digits, `_` or `-`"
                )));
            }
            let base = specs.get(name).cloned();
            let class = nc.class.or(base.as_ref().map(|b| b.class)).ok_or_else(|| {
                ServerError::Config(format!(
                    "namespace `{name}` needs `class = \"state\"` or `\"stream\"`"
                ))
            })?;
            let d = base.unwrap_or(NamespaceSpec {
                name: name.clone(),
                class,
                schema: Schema::Any,
                max_message_bytes: 64 * 1024,
                retention_bytes: None,
                retention_age: None,
                client_publish: false,
                subscribe: tickwire_model::default_subscribe(name),
                publish: tickwire_model::default_publish(name, false),
                background: false,
                edits: false,
                search: false,
                presence: false,
            });
            let retention_age = match &nc.retention_age {
                Some(s) => Some(parse_duration(s).map_err(|e| {
                    ServerError::Config(format!("namespace `{name}`: retention_age: {e}"))
                })?),
                None => d.retention_age,
            };
            specs.insert(
                name.clone(),
                NamespaceSpec {
                    name: name.clone(),
                    class,
                    schema: nc.schema.unwrap_or(d.schema),
                    max_message_bytes: nc.max_message_bytes.unwrap_or(d.max_message_bytes),
                    retention_bytes: nc.retention_bytes.or(d.retention_bytes),
                    retention_age,
                    client_publish: nc.client_publish.unwrap_or(d.client_publish),
                    subscribe: nc.subscribe.unwrap_or(d.subscribe),
                    // `client_publish` set here (and `publish` not) still decides, as before.
                    publish: nc.publish.unwrap_or(match nc.client_publish {
                        Some(cp) => tickwire_model::default_publish(name, cp),
                        None => d.publish,
                    }),
                    background: nc.background.unwrap_or(d.background),
                    // Edits and search are about every message of a stream.
                    edits: class == Class::Stream && nc.edits.unwrap_or(d.edits),
                    search: class == Class::Stream && nc.search.unwrap_or(d.search),
                    presence: nc.presence.unwrap_or(d.presence),
                },
            );
        }
        Ok(specs.into_values().collect())
    }

    pub fn fsync_policy(&self) -> Result<FsyncPolicy, ServerError> {
        self.fsync
            .parse::<FsyncPolicy>()
            .map_err(|e| ServerError::Config(e.to_string()))
    }

    pub fn hub_config(&self) -> Result<HubConfig, ServerError> {
        let mut h = HubConfig::new(&self.data);
        h.namespaces = self.namespace_specs()?;
        h.fsync = self.fsync_policy()?;
        if self.stream_buffer == 0 {
            return Err(ServerError::Config(
                "stream_buffer must be at least 1".into(),
            ));
        }
        h.stream_buffer = self.stream_buffer;
        h.dedup_window = self.dedup_window;
        h.max_subscriptions = self.max_subscriptions;
        h.segment_bytes = self.segment_bytes.max(4096);
        Ok(h)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.max(1))
    }

    /// The gateway's section of the configuration.
    pub fn gateway_config(&self) -> GatewayConfig {
        let mut auth = self.auth.clone();
        auth.api_keys
            .extend(self.api_keys.iter().enumerate().map(|(i, k)| {
                tickwire_gateway::ApiKeyConfig {
                    name: format!("api_keys[{i}]"),
                    key: k.clone(),
                    scopes: vec![
                        tickwire_gateway::Scope::Publish,
                        tickwire_gateway::Scope::SubscribeAll,
                        tickwire_gateway::Scope::Admin,
                    ],
                }
            }));
        GatewayConfig {
            auth,
            limits: self.limits.clone(),
            max_connections: self.max_connections,
            write_timeout: self.write_timeout(),
        }
    }

    /// The HTTP edge's section of the configuration.
    pub fn http_config(&self) -> tickwire_edge_http::HttpConfig {
        tickwire_edge_http::HttpConfig {
            max_body_bytes: self.max_body_bytes,
            origins: self.http.origin_policy(),
        }
    }

    /// The book projection's section of the configuration.
    pub fn books_config(&self) -> tickwire_proj_book::BookConfig {
        tickwire_proj_book::BookConfig {
            depth: self.books.depth,
            flush_interval: Duration::from_millis(self.books.flush_interval_ms.max(1)),
            ..tickwire_proj_book::BookConfig::default()
        }
    }
}

/// `http = "ADDR"` from a file, as `[http] listen = "ADDR"`: merged as a string, it would be
/// replaced whole by a later nested key (`TICKWIRE_HTTP__HEADER_TIMEOUT_MS`), losing the
/// address; as a table, the later keys merge into it.
fn lift_http_address(fig: Figment) -> Figment {
    match fig.find_value("http") {
        Ok(figment::value::Value::String(_, addr)) => fig.merge(Serialized::default(
            "http",
            serde_json::json!({ "listen": addr }),
        )),
        _ => fig,
    }
}

/// `500ms`, `30s`, `15m`, `12h`, `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 15m, 30s, 500ms"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h, d)")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn file_env_and_flags_layer() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            r#"
http = "127.0.0.1:9999"
fsync = "interval:20ms"
api_keys = ["k1"]
[namespaces.chat]
max_message_bytes = 1000
[namespaces.signals]
class = "stream"
client_publish = true
retention_age = "2h"
background = true
[namespaces.candles]
background = false
"#,
        )
        .unwrap();
        let cfg = Config::load(
            Some(&f),
            &CliOverrides {
                data: Some("/tmp/x".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.http.listen.port(), 9999);
        assert_eq!(cfg.data, PathBuf::from("/tmp/x"));
        assert_eq!(
            cfg.fsync_policy().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(20))
        );
        let specs = cfg.namespace_specs().unwrap();
        let chat = specs.iter().find(|s| s.name == "chat").unwrap();
        assert_eq!(chat.max_message_bytes, 1000);
        assert_eq!(chat.class, Class::Stream);
        let sig = specs.iter().find(|s| s.name == "signals").unwrap();
        assert_eq!(sig.retention_age, Some(Duration::from_secs(7200)));
        assert!(sig.background);
        assert!(!specs.iter().any(|s| s.name == "candles" && s.background));
        assert!(!chat.background);
        assert!(specs.iter().any(|s| s.name == "quotes"));
    }

    #[test]
    fn http_is_an_address_or_a_table_and_later_keys_merge_into_either() {
        // `http = "ADDR"` in a file, then a nested key from the environment (provided here
        // without touching the process environment, which other tests read).
        let base = || Figment::from(Serialized::defaults(Config::default()));
        let env = Serialized::default("http.header_timeout_ms", 500);
        let file = Toml::string("http = \"127.0.0.1:9999\"");
        let cfg: Config = lift_http_address(base().merge(file))
            .merge(env.clone())
            .extract()
            .unwrap();
        assert_eq!(cfg.http.listen.port(), 9999);
        assert_eq!(cfg.http.header_timeout_ms, 500);
        // Without the lift the nested key replaced the string, and the address was lost.
        let unlifted: Config = base()
            .merge(Toml::string("http = \"127.0.0.1:9999\""))
            .merge(env)
            .extract()
            .unwrap();
        assert_eq!(unlifted.http.listen.port(), 7700);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "[http]\nlisten = \"127.0.0.1:9998\"\nidle_timeout_ms = 1234\nallowed_origins = [\"https://app.example\"]\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&f), &CliOverrides::default()).unwrap();
        assert_eq!(cfg.http.listen.port(), 9998);
        assert_eq!(cfg.http.idle_timeout_ms, 1234);
        std::fs::write(&f, "[http]\nheader_timeout = 5\n").unwrap();
        let e = Config::load(Some(&f), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("header_timeout"), "{e}");
        std::fs::write(&f, "[http]\nallowed_origins = [\"app.example\"]\n").unwrap();
        let e = Config::load(Some(&f), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.allowed_origins"), "{e}");
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let f =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tickwire.example.toml");
        let cfg = Config::load(Some(&f), &CliOverrides::default()).unwrap();
        assert_eq!(cfg.http.listen.port(), 7700);
        assert!(cfg
            .namespace_specs()
            .unwrap()
            .iter()
            .any(|n| n.name == "signals"));
    }

    #[test]
    fn the_tracing_section_is_off_by_default_and_read_from_the_file() {
        let off = Config::load(None, &CliOverrides::default()).unwrap();
        assert_eq!(off.tracing.otlp_endpoint, None);
        assert_eq!(off.tracing.service_name, "tickwire");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"tw\"\nsample_ratio = 0.25\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&f), &CliOverrides::default()).unwrap();
        assert_eq!(
            cfg.tracing.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(cfg.tracing.service_name, "tw");
        assert_eq!(cfg.tracing.sample_ratio, 0.25);
        std::fs::write(&f, "[tracing]\nendpoint = \"http://x\"\n").unwrap();
        let e = Config::load(Some(&f), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoint"), "{e}");
    }

    #[test]
    fn bad_config_is_refused_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "[namespaces.x]\nschema = \"any\"\n").unwrap();
        let e = Config::load(Some(&f), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("class"), "{e}");
        std::fs::write(&f, "fsync = \"sometimes\"\n").unwrap();
        assert!(Config::load(Some(&f), &CliOverrides::default()).is_err());
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(Config::load(Some(&f), &CliOverrides::default()).is_err());
        assert!(Config::load(
            Some(&dir.path().join("missing.toml")),
            &CliOverrides::default()
        )
        .is_err());
    }
}
