//! `[auth] jwks_url`: the identity provider's signing keys, kept fresh in the background.
//!
//! Fetched once at start (a failure stops the server unless another JWT key is configured),
//! then every `jwks_refresh_secs`, and again when a token names a key id no key has — the
//! provider rotated its keys — at most once per [`UNKNOWN_KID_INTERVAL`], so tokens with made-up
//! key ids cannot make the server hammer the provider. A fetch that fails, or returns a
//! document without a usable key, keeps the last good keys and is logged.

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::Gateway;

/// Least time between two fetches caused by unknown key ids.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
/// A fetch (connect, TLS, the whole answer) must finish within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS document is a few kilobytes; anything much larger is not one.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Whether `url` may serve keys: `https://`, or `http://` to a loopback address (a sidecar on
/// the same host). Keys fetched in the clear over a network would let anyone on the path sign
/// tokens for any user.
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" => {
            let host = u.host_str().unwrap_or("");
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if loopback {
                Ok(u)
            } else {
                Err(format!(
                    "{url:?}: use https (plain http is allowed only to a loopback address: keys \
                     fetched in the clear could be replaced on the way)"
                ))
            }
        }
        other => Err(format!("{url:?}: scheme {other} is not http(s)")),
    }
}

/// What the refresher counts, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    keys: AtomicU64,
}

/// The fetching side: the URL and an HTTP client that trusts what `[auth]` says.
struct Fetcher {
    url: reqwest::Url,
    client: reqwest::Client,
    counters: Arc<Counters>,
}

impl Fetcher {
    fn new(gateway: &Gateway) -> Result<Option<Fetcher>, String> {
        let auth = &gateway.config().auth;
        let Some(url) = &auth.jwks_url else {
            return Ok(None);
        };
        let url = check_url(url).map_err(|e| format!("[auth] jwks_url: {e}"))?;
        let tls = tickwire_tls::client_config(auth.jwks_ca_file.as_deref())
            .map_err(|e| format!("[auth] jwks_ca_file: {e}"))?;
        let client = reqwest::Client::builder()
            // rustls over ring, trusting `jwks_ca_file` or the system's roots.
            .use_preconfigured_tls((*tls).clone())
            .timeout(FETCH_TIMEOUT)
            // A redirect could lead from https to http, or to another host: the URL is the
            // provider's `jwks_uri`, which needs none.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("[auth] jwks_url: cannot build an HTTP client: {e}"))?;
        Ok(Some(Fetcher {
            url,
            client,
            counters: Arc::new(Counters::default()),
        }))
    }

    /// GETs the document, at most [`MAX_DOCUMENT_BYTES`] of it.
    async fn get(&self) -> Result<Vec<u8>, String> {
        let mut resp = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("the answer is over {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Fetches the keys and puts them in use; the error says why the old ones stay.
    async fn refresh(&self, gateway: &Gateway) -> Result<Vec<String>, String> {
        let r = match self.get().await {
            Ok(body) => gateway.auth.replace_jwks(&body),
            Err(e) => Err(e),
        };
        match &r {
            Ok(kids) => {
                self.counters.ok.fetch_add(1, Relaxed);
                self.counters.keys.store(kids.len() as u64, Relaxed);
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Relaxed);
            }
        }
        r
    }
}

/// reqwest's error with its causes (the TLS reason is in a source, not in the top line).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// Fetches `[auth] jwks_url` once and starts refreshing it in the background; `None` when no
/// URL is configured. The first fetch failing is an error unless another JWT key
/// (`jwt_hmac_secret`, `jwt_public_key_file`, `jwks_file`) is configured; then it is logged and
/// the refresher keeps trying.
pub async fn start(gateway: &Arc<Gateway>) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let Some(fetcher) = Fetcher::new(gateway)? else {
        return Ok(None);
    };
    let url = fetcher.url.to_string();
    match fetcher.refresh(gateway).await {
        Ok(kids) => tracing::info!(%url, ?kids, "JWKS fetched"),
        Err(e) if gateway.config().auth.has_static_jwt_key() => tracing::error!(
            %url,
            "JWKS fetch failed at start ({e}); tokens signed by its keys are refused until a \
             refresh succeeds"
        ),
        Err(e) => return Err(format!("[auth] jwks_url {url}: cannot fetch the keys: {e}")),
    }
    let counters = fetcher.counters.clone();
    gateway.metrics().add_source(Box::new(move |out| {
        let name = "tickwire_auth_jwks_fetches_total";
        let _ = writeln!(
            out,
            "# HELP {name} Fetches of [auth] jwks_url, by result.\n# TYPE {name} counter\n\
             {name}{{result=\"ok\"}} {}\n{name}{{result=\"failed\"}} {}",
            counters.ok.load(Relaxed),
            counters.failed.load(Relaxed)
        );
        let name = "tickwire_auth_jwks_keys";
        let _ = writeln!(
            out,
            "# HELP {name} Keys in use from [auth] jwks_url.\n# TYPE {name} gauge\n{name} {}",
            counters.keys.load(Relaxed)
        );
    }));
    let every = Duration::from_secs(gateway.config().auth.jwks_refresh_secs.max(1));
    let gateway = gateway.clone();
    Ok(Some(tokio::spawn(async move {
        refresh_loop(&gateway, &fetcher, every).await;
    })))
}

async fn refresh_loop(gateway: &Gateway, fetcher: &Fetcher, every: Duration) {
    let url = fetcher.url.to_string();
    let mut next_periodic = Instant::now() + every;
    // A fetch for an unknown key id is allowed from this instant on.
    let mut kid_allowed_at = Instant::now();
    // An unknown key id seen while the limit held: fetch when it lifts.
    let mut kid_waiting = false;
    loop {
        let kid_due = kid_waiting.then_some(kid_allowed_at);
        let unknown = tokio::select! {
            _ = tokio::time::sleep_until(next_periodic) => false,
            _ = tokio::time::sleep_until(kid_due.unwrap_or(next_periodic)), if kid_due.is_some() => true,
            _ = gateway.auth.unknown_kid.notified(), if !kid_waiting => {
                if Instant::now() < kid_allowed_at {
                    kid_waiting = true;
                    continue;
                }
                true
            }
        };
        if unknown {
            kid_waiting = false;
            kid_allowed_at = Instant::now() + UNKNOWN_KID_INTERVAL;
        }
        match fetcher.refresh(gateway).await {
            Ok(kids) => tracing::info!(
                %url,
                ?kids,
                "JWKS refreshed{}",
                if unknown { " (a token named an unknown key id)" } else { "" }
            ),
            Err(e) => tracing::warn!(
                %url,
                "JWKS refresh failed, keeping the last good keys: {e}"
            ),
        }
        next_periodic = Instant::now() + every;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_come_over_https_or_from_a_loopback_address() {
        assert!(check_url("https://auth.example/.well-known/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://[::1]:8080/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        let e = check_url("http://auth.example/jwks").unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(check_url("http://10.0.0.1/jwks").is_err());
        assert!(check_url("ftp://auth.example/jwks").is_err());
        assert!(check_url("not a url").is_err());
    }
}
