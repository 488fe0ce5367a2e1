//! What the commands that talk to a running server share (`pub`, `sub`, `tail`, `status`,
//! `backup`, `sim`): where the server is and which credential to present.
//!
//! A credential is taken the way the server documents keys (docs/security.md): `--token` (an
//! API key or a JWT), else a key from the server's own configuration — `--config FILE`, then
//! the `TICKWIRE_API_KEYS` / `TICKWIRE_AUTH__API_KEYS` environment the server reads — choosing
//! one that holds the scope the command needs. The server address defaults to the configured
//! `http` listener, so on the server's host `--config` alone is enough (`https://` when its
//! `[tls]` serves the HTTP listener). Over TLS the server's certificate is checked against
//! `--cacert`, else the operating system's trust store.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use tickwire_gateway::Scope;
use tickwire_server::{CliOverrides, Config};

/// `--url`, `--token`, `--config`: flattened into every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server base URL [default: the configured `http` listener, else http://127.0.0.1:7700].
    #[arg(long)]
    pub url: Option<String>,
    /// An API key or a JWT to present (visible to other users in the process list: prefer
    /// --config or TICKWIRE_API_KEYS on shared hosts).
    #[arg(long, visible_alias = "api-key")]
    pub token: Option<String>,
    /// The server's TOML configuration: its `http` address and its API keys are used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// PEM CA certificates that may sign an https:// server's certificate [default: the
    /// operating system's trust store].
    #[arg(long)]
    pub cacert: Option<PathBuf>,
}

/// A resolved server address and credential.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    pub base: String,
    pub token: Option<String>,
    /// For an https:// server: whom to trust (rustls over ring, as the server).
    pub tls: Option<Arc<tickwire_tls::RustlsClientConfig>>,
}

impl ClientArgs {
    /// The server and the credential for a command that needs `scope`.
    pub fn resolve(&self, scope: Scope) -> Result<Target, String> {
        // A configuration that does not load is an error only when the user named one: the
        // environment alone may hold unrelated TICKWIRE_ variables.
        let cfg = match Config::load(self.config.as_deref(), &CliOverrides::default()) {
            Ok(c) => Some(c),
            Err(e) if self.config.is_some() => return Err(e.to_string()),
            Err(_) => None,
        };
        let base = match (&self.url, &cfg) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(c)) if self.config.is_some() => {
                let mut a = c.http.listen;
                if a.ip().is_unspecified() {
                    a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let tls = c.tls.http && c.tls.cert_file.is_some();
                format!("{}://{a}", if tls { "https" } else { "http" })
            }
            _ => "http://127.0.0.1:7700".to_string(),
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("--url {base:?}: give an http:// or https:// URL"));
        }
        let token = self
            .token
            .clone()
            .or_else(|| cfg.as_ref().and_then(|c| key_with_scope(c, scope)));
        let tls = if base.starts_with("https://") {
            Some(
                tickwire_tls::client_config(self.cacert.as_deref())
                    .map_err(|e| format!("--cacert: {e}"))?,
            )
        } else {
            None
        };
        Ok(Target { base, token, tls })
    }
}

/// The first configured API key holding `scope`, else the first key at all (a server may
/// grant more than its configuration says, e.g. `admin_open`).
fn key_with_scope(cfg: &Config, scope: Scope) -> Option<String> {
    let gw = cfg.gateway_config();
    gw.auth
        .api_keys
        .iter()
        .find(|k| k.scopes.contains(&scope))
        .or(gw.auth.api_keys.first())
        .map(|k| k.key.clone())
}

impl Target {
    /// `ws://…/v1/ws` (or `wss://`).
    pub fn ws_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|r| format!("ws://{r}"))
            })
            .unwrap_or_else(|| self.base.clone());
        format!("{rest}/v1/ws")
    }

    /// An HTTP client with the credential on every request.
    pub fn http(&self, timeout: Option<Duration>) -> Result<reqwest::Client, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| "the token holds characters a header cannot carry".to_string())?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut b = reqwest::Client::builder().default_headers(headers);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        if let Some(tls) = &self.tls {
            b = b.use_preconfigured_tls((**tls).clone());
        }
        b.build().map_err(|e| format!("HTTP client: {e}"))
    }

    /// A TCP connection to the server, with TLS for an https:// one (the WebSocket runs over
    /// it: one TLS setup for every client command).
    pub async fn connect(&self) -> std::io::Result<tickwire_tls::Stream> {
        let hostport = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, r)| r)
            .split('/')
            .next()
            .unwrap_or_default();
        let tcp = tokio::net::TcpStream::connect(hostport).await?;
        let Some(tls) = &self.tls else {
            return Ok(tcp.into());
        };
        // The name the certificate must carry: the host without its port (or brackets).
        let host = match hostport.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => hostport,
        };
        let name = tickwire_tls::server_name(host)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let s = tickwire_tls::connect(tls.clone(), name, tcp, Duration::from_secs(10)).await?;
        Ok(s.into())
    }
}

/// A runtime for one command; its error is the command's.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// The text of an RFC 7807 answer (`code: detail`), or the status and body.
pub async fn problem_text(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) if v.get("code").is_some() => format!(
            "{} {}: {}",
            status.as_u16(),
            v["code"].as_str().unwrap_or(""),
            v["detail"].as_str().unwrap_or("")
        ),
        _ => format!("{status}: {}", body.trim()),
    }
}
