//! A throw-away PKI for the TLS tests: a CA and a server certificate for 127.0.0.1 and
//! localhost (rcgen, ring), and clients that trust only that CA.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tickwire_tls::{ClientTlsStream, RustlsClientConfig};
use tokio::net::TcpStream;

/// A test CA, the server certificate it signed, and where they are on disk.
pub struct Pki {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    /// A new CA named `name` and a server certificate, written under `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = p.self_signed(&key).unwrap();
        let pki = Pki {
            ca_pem: ca.pem(),
            ca_file: dir.join(format!("{name}-ca.pem")),
            cert_file: dir.join(format!("{name}-cert.pem")),
            key_file: dir.join(format!("{name}-key.pem")),
            issuer: rcgen::Issuer::new(p, key),
        };
        std::fs::write(&pki.ca_file, &pki.ca_pem).unwrap();
        pki.reissue();
        pki
    }

    /// Writes a new server certificate and key over the files (a renewal); its fingerprint.
    pub fn reissue(&self) -> String {
        let (cert, key) = self.leaf();
        std::fs::write(&self.cert_file, cert).unwrap();
        std::fs::write(&self.key_file, key).unwrap();
        self.fingerprint()
    }

    /// A new server certificate and key signed by this CA, as PEM (not written anywhere).
    pub fn leaf(&self) -> (String, String) {
        let p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The SHA-256 fingerprint of the certificate in `cert_file`.
    pub fn fingerprint(&self) -> String {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_file(&self.cert_file).expect("a cert");
        tickwire_tls::fingerprint(&der)
    }

    /// `[tls]` for a server configuration file.
    pub fn toml(&self) -> String {
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            self.cert_file.to_str().unwrap(),
            self.key_file.to_str().unwrap()
        )
    }

    /// A client configuration that trusts this CA only. A new one each call: a client that
    /// resumes a TLS session is not shown the server's certificate again.
    pub fn client_config(&self) -> Arc<RustlsClientConfig> {
        tickwire_tls::client_config(Some(&self.ca_file)).unwrap()
    }

    /// An HTTPS client (reqwest over rustls and ring) that trusts this CA only.
    pub fn https(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .timeout(super::TIMEOUT)
            .build()
            .unwrap()
    }

    /// A TLS connection to `addr` (`127.0.0.1:port`), verifying the server's certificate
    /// for 127.0.0.1.
    pub async fn connect(&self, addr: &str) -> std::io::Result<ClientTlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tickwire_tls::connect(
            self.client_config(),
            tickwire_tls::server_name("127.0.0.1").unwrap(),
            tcp,
            Duration::from_secs(10),
        )
        .await
    }

    /// The fingerprint of the certificate the server at `addr` presents to a new connection.
    pub async fn presented(&self, addr: &str) -> String {
        let s = self.connect(addr).await.expect("TLS handshake");
        let certs = s.get_ref().1.peer_certificates().expect("a certificate");
        tickwire_tls::fingerprint(&certs[0])
    }
}
