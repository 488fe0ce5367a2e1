//! TLS for every edge, over rustls with the ring provider (no OpenSSL, no aws-lc).
//!
//! - [`TlsConfig`]: the `[tls]` section (the certificate every listener shares unless it names
//!   its own, whether the HTTP listener speaks TLS, the handshake deadline).
//! - [`CertStore`]: one store for every listener's certificate. Each listener's rustls
//!   configuration asks its [`Certificate`] for the key at every handshake, so
//!   [`CertStore::reload`] (the server calls it on SIGHUP) changes what new connections get
//!   without touching live ones; a reload that fails keeps the old certificate.
//! - [`Acceptor`]: a server handshake with a deadline, so a client that stalls mid-handshake
//!   holds one socket for at most `handshake_timeout_ms`, never the accept loop.
//! - [`client_config`], [`connect`]: the client side (the FIX initiator, the JWKS fetch), trusting
//!   a CA file or the operating system's roots.
//! - [`Stream`]: a TCP connection with or without TLS, for the edges that own their sockets
//!   (MQTT over TCP, FIX).
//! - [`socket::tune_accepted`]: the options every edge sets on a TCP connection it accepted,
//!   before any TLS handshake.

pub mod socket;
mod stream;

use std::{
    fmt::{self, Write as _},
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use parking_lot::{Mutex, RwLock};
use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

/// The rustls client configuration, for callers that build an HTTPS client on it.
pub use rustls::ClientConfig as RustlsClientConfig;
pub use stream::Stream;
/// A verified server name (see [`server_name`]).
pub type ServerName = rustls_pki_types::ServerName<'static>;
pub use tokio_rustls::{
    client::TlsStream as ClientTlsStream, server::TlsStream as ServerTlsStream,
};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{cert} and {key}: {reason}")]
    Key {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The `[tls]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first) that the listeners present.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: Option<PathBuf>,
    /// Serve the HTTP listener over TLS (HTTPS, WSS) when a certificate is configured. False
    /// leaves it plain (a proxy in front terminates TLS) while MQTT and FIX still use the
    /// certificate.
    pub http: bool,
    /// A TLS handshake must complete within this long, ms; then the socket is closed.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            http: true,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TlsConfig {
    /// The shared certificate's files; `None` when TLS is not configured.
    pub fn pair(&self) -> Result<Option<(&Path, &Path)>, TlsError> {
        pair(
            "tls",
            "cert_file",
            &self.cert_file,
            "key_file",
            &self.key_file,
        )
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.max(1))
    }
}

/// A certificate and key named by two optional keys of `section`: both or neither.
pub fn pair<'a>(
    section: &str,
    cert_key: &str,
    cert: &'a Option<PathBuf>,
    key_key: &str,
    key: &'a Option<PathBuf>,
) -> Result<Option<(&'a Path, &'a Path)>, TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => Err(TlsError::Config(format!(
            "[{section}] {cert_key} and {key_key} go together: set both or neither"
        ))),
    }
}

/// The one crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's certificate: the files it comes from and the key handshakes use now.
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_file", &self.cert_file)
            .field("fingerprint", &self.current.read().fingerprint)
            .finish()
    }
}

impl ResolvesServerCert for Certificate {
    // Asked at every handshake: a reload is seen by the next connection, and a live one keeps
    // the key it was established with.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().key.clone())
    }
}

impl Certificate {
    /// The SHA-256 fingerprint of the leaf certificate in use, as
    /// `openssl x509 -noout -fingerprint -sha256` prints it.
    pub fn fingerprint(&self) -> String {
        self.current.read().fingerprint.clone()
    }

    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// Reads the files again; on success new handshakes use them. `Ok(true)` if the
    /// certificate changed.
    fn reload(&self) -> Result<bool, TlsError> {
        let fresh = load_pair(&self.cert_file, &self.key_file)?;
        let mut cur = self.current.write();
        let changed = cur.fingerprint != fresh.fingerprint;
        *cur = fresh;
        Ok(changed)
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_path_buf(),
            reason: format!("not a PEM certificate chain: {e}"),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    };
    let fingerprint = fingerprint(leaf);
    let private = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        reason: format!("no PEM private key (PKCS#8, RSA or EC): {e}"),
    })?;
    // Also checks that the key belongs to the leaf certificate: a mismatch (a half-finished
    // renewal) fails here, at start or reload, instead of in every handshake.
    let key = CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Key {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: match e {
            // rustls words it "keys may not be consistent"; an operator needs to hear which.
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "the private key does not belong to the certificate (KeyMismatch)".into()
            }
            e => e.to_string(),
        },
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        fingerprint,
    })
}

/// SHA-256 of a DER certificate, upper-case hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut s = String::with_capacity(95);
    for (i, b) in d.as_ref().iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Handshakes of one listener, for `/metrics`.
#[derive(Debug, Default)]
struct HandshakeCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// Every listener's certificate; reloaded together.
pub struct CertStore {
    certs: Mutex<Vec<Arc<Certificate>>>,
    handshake_timeout: Duration,
    listeners: Mutex<Vec<(&'static str, Arc<HandshakeCounters>)>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl CertStore {
    pub fn new(handshake_timeout: Duration) -> Arc<CertStore> {
        Arc::new(CertStore {
            certs: Mutex::new(Vec::new()),
            handshake_timeout,
            listeners: Mutex::new(Vec::new()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// Loads a certificate and its key (or returns the one already loaded from these files).
    pub fn load(&self, cert_file: &Path, key_file: &Path) -> Result<Arc<Certificate>, TlsError> {
        let mut certs = self.certs.lock();
        if let Some(c) = certs
            .iter()
            .find(|c| c.cert_file == cert_file && c.key_file == key_file)
        {
            return Ok(c.clone());
        }
        let loaded = load_pair(cert_file, key_file)?;
        let cert = Arc::new(Certificate {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(loaded),
        });
        certs.push(cert.clone());
        Ok(cert)
    }

    /// Every certificate loaded, in load order.
    pub fn certificates(&self) -> Vec<Arc<Certificate>> {
        self.certs.lock().clone()
    }

    /// Whether any certificate is loaded.
    pub fn is_empty(&self) -> bool {
        self.certs.lock().is_empty()
    }

    /// The server side of one listener (`http`, `mqtt`, `fix`: its name in metrics), presenting
    /// `cert`, offering the ALPN protocols `alpn` (empty: none).
    pub fn acceptor(
        &self,
        cert: &Arc<Certificate>,
        listener: &'static str,
        alpn: &[&[u8]],
    ) -> Result<Acceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let counters = Arc::new(HandshakeCounters::default());
        self.listeners.lock().push((listener, counters.clone()));
        Ok(Acceptor {
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            timeout: self.handshake_timeout,
            counters,
        })
    }

    /// Reads every certificate again. Each that fails keeps its old certificate; the errors
    /// are returned (and logged), the rest take effect for new connections.
    pub fn reload(&self) -> Vec<TlsError> {
        let certs = self.certs.lock().clone();
        let mut errors = Vec::new();
        for c in certs {
            match c.reload() {
                Ok(changed) => {
                    self.reloads_ok.fetch_add(1, Relaxed);
                    tracing::info!(
                        cert_file = %c.cert_file.display(),
                        fingerprint = %c.fingerprint(),
                        "TLS certificate reloaded{}",
                        if changed { "" } else { " (unchanged)" }
                    );
                }
                Err(e) => {
                    self.reloads_failed.fetch_add(1, Relaxed);
                    tracing::error!(
                        error = %e,
                        fingerprint = %c.fingerprint(),
                        "TLS certificate reload failed; still serving the previous certificate"
                    );
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// The store's metric families (docs/metrics.md), Prometheus text.
    pub fn render(&self, out: &mut String) {
        let name = "tickwire_tls_reloads_total";
        let _ = writeln!(
            out,
            "# HELP {name} Certificate reloads (SIGHUP), by result.\n# TYPE {name} counter\n\
             {name}{{result=\"ok\"}} {}\n{name}{{result=\"failed\"}} {}",
            self.reloads_ok.load(Relaxed),
            self.reloads_failed.load(Relaxed)
        );
        let name = "tickwire_tls_handshakes_total";
        let _ = writeln!(
            out,
            "# HELP {name} TLS handshakes on each listener, by result.\n# TYPE {name} counter"
        );
        for (listener, c) in self.listeners.lock().iter() {
            for (result, v) in [
                ("ok", &c.ok),
                ("failed", &c.failed),
                ("timeout", &c.timed_out),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{listener}\",result=\"{result}\"}} {}",
                    v.load(Relaxed)
                );
            }
        }
    }
}

/// The server side of a listener's TLS: one handshake per accepted socket, with a deadline.
#[derive(Clone)]
pub struct Acceptor {
    tls: tokio_rustls::TlsAcceptor,
    timeout: Duration,
    counters: Arc<HandshakeCounters>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Acceptor {
    /// The server handshake over `io`; fails with `TimedOut` after the handshake timeout.
    /// Run it in the connection's own task, never in an accept loop.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<ServerTlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.timeout, self.tls.accept(io)).await {
            Ok(Ok(s)) => {
                self.counters.ok.fetch_add(1, Relaxed);
                Ok(s)
            }
            Ok(Err(e)) => {
                self.counters.failed.fetch_add(1, Relaxed);
                Err(e)
            }
            Err(_) => {
                self.counters.timed_out.fetch_add(1, Relaxed);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake not completed in time",
                ))
            }
        }
    }
}

/// A client configuration trusting the CA certificates in `ca_file` (PEM), or the operating
/// system's trust store when there is none.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::Pem {
                    path: path.to_path_buf(),
                    reason: format!("not a PEM certificate: {e}"),
                })?;
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: path.to_path_buf(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            if roots.is_empty() {
                return Err(TlsError::Pem {
                    path: path.to_path_buf(),
                    reason: "no CERTIFICATE block".into(),
                });
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!("reading the system's CA certificates: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(TlsError::Config(
                    "no CA certificates found in the system trust store; name a ca_file".into(),
                ));
            }
        }
    }
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A server name for [`connect`]: a DNS name or an IP address, checked against the server's
/// certificate.
pub fn server_name(name: &str) -> Result<ServerName, TlsError> {
    ServerName::try_from(name.to_string())
        .map_err(|e| TlsError::Config(format!("{name:?} is not a DNS name or IP address: {e}")))
}

/// The client handshake over `io`, verifying the server's certificate for `name`; fails with
/// `TimedOut` after `timeout`.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    name: ServerName,
    io: IO,
    timeout: Duration,
) -> io::Result<ClientTlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(timeout, connector.connect(name, io))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake not completed in time",
            )
        })?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Ca {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost signed by `ca`: (cert PEM, key PEM).
    fn leaf(ca: &Ca) -> (String, String) {
        let p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// One connection, with a new client configuration each time: a client that resumes a
    /// session is not shown the certificate again.
    async fn handshake(acc: &Acceptor, ca_file: &Path) -> io::Result<String> {
        let client = client_config(Some(ca_file)).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acc = acc.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut s = acc.accept(tcp).await?;
            s.write_all(b"hi").await?;
            s.flush().await?;
            io::Result::Ok(())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = connect(
            client,
            server_name("127.0.0.1").unwrap(),
            tcp,
            Duration::from_secs(5),
        )
        .await?;
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await?;
        let leaf = c.get_ref().1.peer_certificates().unwrap()[0].clone();
        server.await.unwrap()?;
        Ok(fingerprint(&leaf))
    }

    #[tokio::test]
    async fn a_reload_changes_what_new_handshakes_get_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("test CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = leaf(&ca);
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let store = CertStore::new(Duration::from_secs(5));
        let certificate = store.load(&cert, &key).unwrap();
        let acc = store.acceptor(&certificate, "test", &[]).unwrap();
        let first = handshake(&acc, &ca_file).await.unwrap();
        assert_eq!(first, certificate.fingerprint());

        let (c2, k2) = leaf(&ca);
        std::fs::write(&cert, &c2).unwrap();
        std::fs::write(&key, &k2).unwrap();
        assert!(store.reload().is_empty());
        let second = handshake(&acc, &ca_file).await.unwrap();
        assert_ne!(first, second, "a new connection sees the new certificate");

        // A half-finished renewal (new certificate, old key) is refused and changes nothing.
        let (c3, _) = leaf(&ca);
        std::fs::write(&cert, &c3).unwrap();
        let errors = store.reload();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(matches!(errors[0], TlsError::Key { .. }), "{}", errors[0]);
        assert_eq!(handshake(&acc, &ca_file).await.unwrap(), second);
        std::fs::write(&cert, "garbage").unwrap();
        assert_eq!(store.reload().len(), 1);
        assert_eq!(handshake(&acc, &ca_file).await.unwrap(), second);
        let mut m = String::new();
        store.render(&mut m);
        assert!(
            m.contains("tickwire_tls_reloads_total{result=\"failed\"} 2"),
            "{m}"
        );
        assert!(
            m.contains("tickwire_tls_handshakes_total{listener=\"test\",result=\"ok\"} 4"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn a_client_refuses_a_server_its_ca_did_not_sign() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (ca("our CA"), ca("their CA"));
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ours.cert.pem()).unwrap();
        let (c, k) = leaf(&theirs);
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
        let store = CertStore::new(Duration::from_secs(5));
        let acc = store
            .acceptor(&store.load(&cert, &key).unwrap(), "test", &[])
            .unwrap();
        let e = handshake(&acc, &ca_file).await.unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    }

    #[tokio::test]
    async fn a_stalled_handshake_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = leaf(&ca("test CA"));
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
        let store = CertStore::new(Duration::from_millis(200));
        let acc = store
            .acceptor(&store.load(&cert, &key).unwrap(), "test", &[])
            .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _silent = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = l.accept().await.unwrap();
        let started = tokio::time::Instant::now();
        let e = acc.accept(tcp).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn files_that_are_not_a_certificate_and_key_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let store = CertStore::new(Duration::from_secs(1));
        let e = store.load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("c.pem"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let e = store.load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("CERTIFICATE"), "{e}");
        let (c, _) = leaf(&ca("test CA"));
        std::fs::write(&cert, c).unwrap();
        let e = store.load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("k.pem"), "{e}");
        assert!(TlsConfig {
            cert_file: Some(cert),
            ..TlsConfig::default()
        }
        .pair()
        .is_err());
    }
}
