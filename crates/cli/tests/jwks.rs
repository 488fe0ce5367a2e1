//! `[auth] jwks_url` against a real HTTPS identity provider (a tiny server in the test, with a
//! test CA) whose JWKS rotates: ES256 keys generated here, tokens signed with them. The keys
//! are fetched at start, refreshed periodically (a failed refresh keeps the last good keys),
//! and again when a token names an unknown key id — at most once per 30 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::{refused, start_with_config, tls::Pki, Server, TIMEOUT};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "jwks-test-api-key";

/// An ES256 signing key and its public JWK.
struct SigningKey {
    kid: String,
    pem: String,
    jwk: serde_json::Value,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // Uncompressed point: 0x04, X (32 bytes), Y (32 bytes).
        let raw = key.public_key_raw();
        assert_eq!((raw.len(), raw[0]), (65, 4));
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        SigningKey {
            kid: kid.into(),
            pem: key.serialize_pem(),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
            }),
        }
    }

    /// A token for `sub`, valid an hour, signed with this key and naming its kid.
    fn token(&self, sub: &str) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        jsonwebtoken::encode(
            &h,
            &serde_json::json!({"sub": sub, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// The identity provider: serves its current JWKS over HTTPS (or fails with 500) and counts
/// the requests. Stops with the test.
struct Idp {
    addr: String,
    doc: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    async fn start(pki: &Pki, doc: Option<String>) -> Idp {
        let store = tickwire_tls::CertStore::new(Duration::from_secs(5));
        let tls = store
            .acceptor(
                &store.load(&pki.cert_file, &pki.key_file).unwrap(),
                "idp",
                &[],
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (tls, d, h) = (tls.clone(), d.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = tls.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let answer = match d.lock().unwrap().clone() {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\
                                 connection: close\r\n\r\n"
                            .to_string(),
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Idp {
            addr,
            doc,
            hits,
            task,
        }
    }

    fn serve(&self, doc: Option<String>) {
        *self.doc.lock().unwrap() = doc;
    }

    /// Stops answering: the listening socket is closed, so fetches get connection refused.
    async fn stop(&self) {
        self.task.abort();
        // The accept loop owns the listener: it is closed once the aborted task is dropped.
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = tokio::net::TcpStream::connect(&self.addr).await;
        assert!(refused.is_err(), "the provider still accepts connections");
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn auth_toml(&self, ca: &Pki, refresh_secs: u64) -> String {
        format!(
            "[auth]\njwks_url = \"https://{}/.well-known/jwks.json\"\njwks_ca_file = {:?}\n\
             jwks_refresh_secs = {refresh_secs}\n",
            self.addr,
            ca.ca_file.to_str().unwrap()
        )
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the server takes `token`: a read of a channel any authenticated client may read.
async fn accepted(srv: &Server, token: &str) -> bool {
    let r = common::http()
        .get(srv.url("/v1/history/chat.lobby?from=0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("status {other}: {}", r.text().await.unwrap()),
    }
}

/// Polls until `accepted(token) == want`, at most `wait`; whether it got there.
async fn becomes(srv: &Server, token: &str, want: bool, wait: Duration) -> bool {
    let end = Instant::now() + wait;
    loop {
        if accepted(srv, token).await == want {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn api_key() -> String {
    format!("[[auth.api_keys]]\nname = \"ops\"\nkey = \"{KEY}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_an_unknown_kid_refetches_the_keys_at_most_once_per_30s() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "idp");
    let (a, b, c) = (
        SigningKey::new("a"),
        SigningKey::new("b"),
        SigningKey::new("c"),
    );
    let idp = Idp::start(&pki, Some(jwks(&[&a]))).await;
    // No periodic refresh within the test: every fetch after the first is a kid's.
    let srv = start_with_config(&dir, &format!("{}{}", idp.auth_toml(&pki, 3600), api_key()));
    assert_eq!(idp.hits(), 1, "fetched once at start");
    assert!(accepted(&srv, &a.token("42")).await);
    assert_eq!(idp.hits(), 1, "a known kid fetches nothing");

    // The provider rotates in b: b's first token is refused and starts a fetch, and soon b's
    // tokens verify.
    idp.serve(Some(jwks(&[&a, &b])));
    assert!(!accepted(&srv, &b.token("42")).await);
    assert!(
        becomes(&srv, &b.token("42"), true, Duration::from_secs(5)).await,
        "b's token never verified"
    );
    assert_eq!(idp.hits(), 2, "one fetch for the unknown kid");
    assert!(accepted(&srv, &a.token("42")).await, "a is still published");

    // Another rotation right after: unknown kids do not fetch again within 30 s, however many
    // tokens name one.
    idp.serve(Some(jwks(&[&a, &b, &c])));
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(!accepted(&srv, &c.token("42")).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idp.hits(), 2, "rate limited: no fetch for c yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_refreshed_periodically_and_a_failed_refresh_keeps_the_last_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "idp");
    let (a, b) = (SigningKey::new("a"), SigningKey::new("b"));
    let idp = Idp::start(&pki, Some(jwks(&[&a]))).await;
    let srv = start_with_config(&dir, &format!("{}{}", idp.auth_toml(&pki, 1), api_key()));
    assert!(accepted(&srv, &a.token("42")).await);

    // The provider fails for a while: a keeps verifying.
    idp.serve(None);
    let hits = idp.hits();
    let end = Instant::now() + TIMEOUT;
    while idp.hits() < hits + 2 {
        assert!(Instant::now() < end, "no periodic refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted(&srv, &a.token("42")).await, "last good keys kept");
    let m = common::http()
        .get(srv.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines().any(|l| l
            .strip_prefix("tickwire_auth_jwks_fetches_total{result=\"failed\"} ")
            .is_some_and(|v| v.parse::<u64>().unwrap() >= 2)),
        "{m}"
    );

    // An answer that is not a JWKS changes nothing either.
    idp.serve(Some("<html>maintenance</html>".into()));
    let hits = idp.hits();
    while idp.hits() < hits + 1 {
        assert!(Instant::now() < end, "no periodic refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted(&srv, &a.token("42")).await);

    // The provider retires a for b: a periodic refresh (no b token was shown) drops a.
    idp.serve(Some(jwks(&[&b])));
    assert!(
        becomes(&srv, &a.token("42"), false, Duration::from_secs(5)).await,
        "a still verifies after its key was withdrawn"
    );
    assert!(accepted(&srv, &b.token("42")).await);

    // The provider goes away altogether (connection refused): b keeps verifying.
    let failed = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("tickwire_auth_jwks_fetches_total{result=\"failed\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let metrics = || async {
        common::http()
            .get(srv.url("/metrics"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = failed(&metrics().await);
    idp.stop().await;
    let end = Instant::now() + TIMEOUT;
    while failed(&metrics().await) < before + 2 {
        assert!(
            Instant::now() < end,
            "no failed refresh counted while the provider is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted(&srv, &b.token("42")).await, "last good keys kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_that_cannot_be_fetched_at_start_is_an_error_unless_another_key_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "idp");
    let stranger = Pki::new(dir.path(), "stranger");
    let a = SigningKey::new("a");
    let idp = Idp::start(&pki, None).await;
    refused(&idp.auth_toml(&pki, 300), "cannot fetch the keys");
    // A provider whose certificate the configured CA did not sign is not believed.
    idp.serve(Some(jwks(&[&a])));
    refused(&idp.auth_toml(&stranger, 300), "UnknownIssuer");

    // With a shared secret too, the server starts without the provider's keys and picks them
    // up once the provider answers.
    idp.serve(None);
    let secret = "jwks-test-secret-of-at-least-32-bytes";
    let srv = start_with_config(
        &dir,
        &format!(
            "{}jwt_hmac_secret = \"{secret}\"\n{}",
            idp.auth_toml(&pki, 1),
            api_key()
        ),
    );
    let hs = tickwire_gateway::mint_hs256(
        secret.as_bytes(),
        &tickwire_gateway::Claims {
            sub: "7".into(),
            exp: Some(u64::MAX / 2),
            channels: None,
            publish: None,
            info: None,
        },
    )
    .unwrap();
    assert!(accepted(&srv, &hs).await);
    assert!(!accepted(&srv, &a.token("42")).await);
    idp.serve(Some(jwks(&[&a])));
    assert!(
        becomes(&srv, &a.token("42"), true, Duration::from_secs(5)).await,
        "the provider's keys were never picked up"
    );
}
