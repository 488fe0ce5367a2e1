//! `tickwire status` (health, readiness, namespaces, sessions, projection lag of a running
//! server) and `tickwire check-config` (a configuration checked the way `serve` checks it,
//! without starting anything).

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, ValueEnum};
use tickwire_gateway::Scope;
use tickwire_server::{CliOverrides, Config};

use crate::client::{problem_text, runtime, ClientArgs};

/// Which probe `--probe` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Probe {
    Healthz,
    Readyz,
}

/// Arguments of `tickwire status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this probe: exit 0 when it answers 200, 1 otherwise (a container health check).
    #[arg(long, value_enum)]
    pub probe: Option<Probe>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What `status` found.
#[derive(Debug, Default, serde::Serialize)]
struct Status {
    url: String,
    healthy: bool,
    ready: bool,
    /// Why namespaces and metrics are missing (no admin credential), if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_error: Option<String>,
    namespaces: Vec<serde_json::Value>,
    /// Open connections per edge.
    connections: BTreeMap<String, f64>,
    sessions: Option<f64>,
    channels: Option<f64>,
    published_total: Option<f64>,
    delivered_total: Option<f64>,
    slow_consumer_disconnects_total: Option<f64>,
    /// `projection/namespace` → publications not applied yet.
    projection_lag: BTreeMap<String, f64>,
    /// projection → caught up after start.
    projection_live: BTreeMap<String, bool>,
    /// Records lost to corruption found at start, per namespace (alert when not zero).
    quarantined_records: BTreeMap<String, f64>,
}

/// Runs `tickwire status`.
pub fn run(a: StatusArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickwire status: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(status(a)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tickwire status: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn status(a: StatusArgs) -> Result<ExitCode, String> {
    let target = a.client.resolve(Scope::Admin)?;
    let http = target.http(Some(Duration::from_secs(5)))?;
    let get_ok = |path: &str| {
        let req = http.get(format!("{}{path}", target.base));
        async move { req.send().await.is_ok_and(|r| r.status().is_success()) }
    };
    if let Some(p) = a.probe {
        let path = match p {
            Probe::Healthz => "/healthz",
            Probe::Readyz => "/readyz",
        };
        return Ok(if get_ok(path).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let mut s = Status {
        url: target.base.clone(),
        healthy: get_ok("/healthz").await,
        ready: get_ok("/readyz").await,
        ..Status::default()
    };
    if s.healthy {
        match admin_get(&http, &format!("{}/v1/namespaces", target.base)).await {
            Ok(text) => {
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("/v1/namespaces: {e}"))?;
                s.namespaces = v["namespaces"].as_array().cloned().unwrap_or_default();
                let metrics = admin_get(&http, &format!("{}/metrics", target.base)).await?;
                read_metrics(&metrics, &mut s);
            }
            Err(e) => s.admin_error = Some(e),
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
        );
    } else {
        print_text(&s);
    }
    Ok(if s.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn admin_get(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(problem_text(resp).await);
    }
    resp.text().await.map_err(|e| e.to_string())
}

/// One sample of the Prometheus text format: name, labels, value.
fn samples(text: &str) -> impl Iterator<Item = (&str, BTreeMap<&str, &str>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => {
                    let inner = rest.strip_suffix('}')?;
                    let labels = inner
                        .split(',')
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.trim(), v.trim().trim_matches('"')))
                        })
                        .collect();
                    (n, labels)
                }
                None => (head, BTreeMap::new()),
            };
            Some((name, labels, value))
        })
}

fn read_metrics(text: &str, s: &mut Status) {
    for (name, labels, v) in samples(text) {
        let label = |k: &str| labels.get(k).copied().unwrap_or("").to_string();
        match name {
            "tickwire_edge_connections" => {
                s.connections.insert(label("edge"), v);
            }
            "tickwire_sessions" => s.sessions = Some(v),
            "tickwire_channels" => s.channels = Some(v),
            "tickwire_published_total" => s.published_total = Some(v),
            "tickwire_delivered_total" => s.delivered_total = Some(v),
            "tickwire_slow_consumer_disconnects_total" => {
                s.slow_consumer_disconnects_total = Some(v)
            }
            "tickwire_projection_lag" => {
                s.projection_lag
                    .insert(format!("{}/{}", label("projection"), label("namespace")), v);
            }
            "tickwire_projection_live" => {
                s.projection_live.insert(label("projection"), v >= 1.0);
            }
            "tickwire_log_recovery_quarantined_records_total" => {
                s.quarantined_records.insert(label("namespace"), v);
            }
            _ => {}
        }
    }
}

fn print_text(s: &Status) {
    let yes_no = |b: bool| if b { "yes" } else { "NO" };
    println!("server:    {}", s.url);
    println!("healthy:   {}", yes_no(s.healthy));
    println!(
        "ready:     {}{}",
        yes_no(s.ready),
        if s.healthy && !s.ready {
            " (draining)"
        } else {
            ""
        }
    );
    if let Some(e) = &s.admin_error {
        println!("(namespaces, sessions and lag need an API key with the admin scope: {e})");
        return;
    }
    if !s.healthy {
        return;
    }
    let n = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}"));
    println!("sessions:  {}", n(s.sessions));
    let conns: Vec<String> = s
        .connections
        .iter()
        .map(|(e, v)| format!("{e} {v}"))
        .collect();
    println!(
        "connections: {}",
        if conns.is_empty() {
            "none".to_string()
        } else {
            conns.join(", ")
        }
    );
    println!("channels:  {}", n(s.channels));
    println!(
        "published: {}   delivered: {}   slow-consumer disconnects: {}",
        n(s.published_total),
        n(s.delivered_total),
        n(s.slow_consumer_disconnects_total)
    );
    println!("namespaces:");
    for ns in &s.namespaces {
        println!(
            "  {:<12} {:<6} subscribe {:<13} publish {}",
            ns["name"].as_str().unwrap_or(""),
            ns["class"].as_str().unwrap_or(""),
            ns["subscribe"].as_str().unwrap_or(""),
            ns["publish"].as_str().unwrap_or("")
        );
    }
    if !s.projection_lag.is_empty() {
        println!("projection lag (publications not applied yet):");
        for (k, v) in &s.projection_lag {
            let live = k
                .split('/')
                .next()
                .and_then(|p| s.projection_live.get(p))
                .copied()
                .unwrap_or(false);
            println!("  {k:<24} {v}{}", if live { "" } else { " (replaying)" });
        }
    }
    let lost: f64 = s.quarantined_records.values().sum();
    if lost > 0.0 {
        println!(
            "WARNING: {lost} records were lost to log corruption at start (see the server log)"
        );
    }
}

/// Arguments of `tickwire check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML file to check (the TICKWIRE_* environment is applied over it, as `serve` does).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs `tickwire check-config`: exit 0 and a summary when `serve` would accept the
/// configuration, 2 and the reason when it would not.
pub fn check_config(a: CheckConfigArgs) -> ExitCode {
    match check(a) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickwire check-config: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(a: CheckConfigArgs) -> Result<String, String> {
    let cfg =
        Config::load(a.config.as_deref(), &CliOverrides::default()).map_err(|e| e.to_string())?;
    // What `serve` checks after loading, short of opening the data directory.
    let gw = cfg.gateway_config();
    tickwire_gateway::check_auth(&gw.auth).map_err(|e| format!("[auth]: {e}"))?;
    let specs = cfg.namespace_specs().map_err(|e| e.to_string())?;
    cfg.tracing.validate().map_err(|e| e.to_string())?;
    // The certificates `serve` would load: a renewal that left a bad pair behind shows here,
    // before a restart or a SIGHUP finds it.
    let certs = tickwire_tls::CertStore::new(cfg.tls.handshake_timeout());
    let mut tls = Vec::new();
    for (section, pair) in [("tls", cfg.tls.pair()), ("mqtt", cfg.mqtt.tls_pair())] {
        if let Some((cert, key)) = pair.map_err(|e| e.to_string())? {
            let c = certs
                .load(cert, key)
                .map_err(|e| format!("[{section}]: {e}"))?;
            tls.push(format!("{} (sha256 {})", cert.display(), c.fingerprint()));
        }
    }
    if cfg.candles.enabled {
        cfg.candles
            .parsed_resolutions()
            .map_err(|e| format!("[candles]: {e}"))?;
        for ns in cfg
            .candles
            .quote_namespaces
            .iter()
            .chain(&cfg.candles.trade_namespaces)
        {
            if !specs.iter().any(|s| &s.name == ns) {
                return Err(format!("[candles]: namespace `{ns}` does not exist"));
            }
        }
    }
    let mut out = String::new();
    let file = a
        .config
        .as_ref()
        .map_or("(no file: defaults and environment)".to_string(), |p| {
            p.display().to_string()
        });
    out.push_str(&format!("{file}: ok\n"));
    out.push_str(&format!("  http:       {}\n", cfg.http.listen));
    out.push_str(&format!("  data:       {}\n", cfg.data.display()));
    out.push_str(&format!("  fsync:      {}\n", cfg.fsync));
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    out.push_str(&format!("  namespaces: {}\n", names.join(", ")));
    let auth = if gw.auth.enabled() {
        format!(
            "{} API key(s){}",
            gw.auth.api_keys.len(),
            if gw.auth.jwt_hmac_secret.is_some()
                || gw.auth.jwt_public_key_file.is_some()
                || gw.auth.jwks_file.is_some()
                || gw.auth.jwks_url.is_some()
            {
                ", JWT users"
            } else {
                ""
            }
        )
    } else {
        "none: development mode, every client may read and publish everything".to_string()
    };
    out.push_str(&format!("  identities: {auth}\n"));
    if let Some(m) = &cfg.mqtt.listen {
        out.push_str(&format!("  mqtt:       {m}\n"));
    }
    if let Some(m) = &cfg.mqtt.tls_listen {
        out.push_str(&format!("  mqtts:      {m}\n"));
    }
    for t in &tls {
        out.push_str(&format!("  tls:        {t}\n"));
    }
    match &cfg.cluster {
        Some(c) => out.push_str(&format!(
            "  cluster:    node `{}`, {} replica(s), NATS {}\n",
            c.node,
            c.replicas,
            c.nats.join(", ")
        )),
        None => out.push_str("  cluster:    none (the embedded log)\n"),
    }
    if cfg.drain_delay_ms > 0 {
        out.push_str(&format!("  drain delay: {} ms\n", cfg.drain_delay_ms));
    }
    Ok(out)
}
