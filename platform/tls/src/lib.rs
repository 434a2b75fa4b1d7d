//! TLS between Clinic's own processes: a service may serve TLS, and require
//! its callers to present a certificate of a CA it trusts (mutual TLS); a
//! caller may verify its peers and present its own certificate.
//!
//! Off by default: inside one host or a cluster network the services trust
//! only bearer tokens (verified at every hop) and a mesh usually adds mTLS.
//! Without a mesh, set [`TlsSettings`] on every service and the `PEER_TLS_*`
//! settings (`clinic_client::DownstreamSettings`) on every caller. A
//! replaced server certificate is served to new connections within a second
//! or two; client certificates and CAs are read at start.
//!
//! # Layout
//! One file: [`TlsSettings`] and [`ServerTls`] (a service's own certificate,
//! reloaded when its file changes, and the client CA it may require), then
//! the client side a caller uses to verify its peers.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
        sign::CertifiedKey,
    },
};

/// How a server speaks TLS, if at all.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM): serve TLS (HTTP/2 by ALPN)
    /// instead of plaintext; re-read when the file changes. Unset: plaintext.
    #[arg(long = "tls-cert-file", env = "TLS_CERT_FILE", value_name = "PATH", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The server certificate's private key (PEM, PKCS#8 or SEC1).
    #[arg(long = "tls-key-file", env = "TLS_KEY_FILE", value_name = "PATH", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Callers must present a certificate signed by this CA (mutual TLS):
    /// only processes holding one (the other services, Envoy) get through.
    #[arg(
        long = "tls-client-ca-file",
        env = "TLS_CLIENT_CA_FILE",
        value_name = "PATH",
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_file: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.display().to_string(), error })
}

fn invalid(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Invalid { path: path.display().to_string(), reason: reason.to_string() }
}

/// The certificates of the PEM file at `path`.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate"));
    }
    Ok(certs)
}

/// The crypto of every TLS connection here: *ring*, which builds in seconds
/// on two cores where aws-lc-rs needs a C toolchain and minutes. rustls
/// 0.23.48 deprecates it only for lacking post-quantum key exchange, which
/// links between Clinic's own processes do not need yet.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    ring::default_provider()
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| invalid(key, e))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// When a file was last changed, and its length: what tells a renewal.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The server certificate, swapped for the files' new contents when they
/// change (a renewal), so new connections get it without a restart.
#[derive(Debug)]
struct ReloadingCert {
    files: (PathBuf, PathBuf),
    current: RwLock<(Arc<CertifiedKey>, [Stamp; 2])>,
}

impl ReloadingCert {
    fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamps = [stamp(cert), stamp(key)];
        let loaded = Arc::new(certified_key(cert, key)?);
        Ok(Self { files: (cert.to_owned(), key.to_owned()), current: RwLock::new((loaded, stamps)) })
    }

    /// Reads the files again if they changed; a pair that does not load (a
    /// renewal half written) leaves the current certificate in place.
    fn refresh(&self) {
        let (cert, key) = (&self.files.0, &self.files.1);
        let stamps = [stamp(cert), stamp(key)];
        if self.current.read().expect("certificate lock").1 == stamps {
            return;
        }
        match certified_key(cert, key) {
            Ok(loaded) => {
                tracing::info!(file = %cert.display(), "TLS certificate changed: serving the new one");
                *self.current.write().expect("certificate lock") = (Arc::new(loaded), stamps);
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate changed but cannot be used; keeping the current one")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").0.clone())
    }
}

/// A server's TLS: the acceptor, and the certificate it keeps current.
#[derive(Clone)]
pub struct ServerTls {
    /// Accepts TLS connections (ALPN h2).
    pub acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.cert.files).finish_non_exhaustive()
    }
}

/// How often a server looks whether its certificate files changed.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl ServerTls {
    /// The TLS `settings` ask for, if any.
    pub fn from_settings(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&settings.tls_cert_file, &settings.tls_key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(provider());
        let builder =
            ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match &settings.tls_client_ca_file {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca)? {
                    roots.add(cert).map_err(|e| invalid(ca, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| invalid(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let reloading = Arc::new(ReloadingCert::load(cert, key)?);
        let mut config = builder.with_cert_resolver(reloading.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Self { acceptor: TlsAcceptor::from(Arc::new(config)), cert: reloading }))
    }

    /// Re-reads the certificate files when they change, every
    /// [`CERT_CHECK_INTERVAL`], until aborted.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let cert = self.cert.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CERT_CHECK_INTERVAL);
            loop {
                ticker.tick().await;
                let cert = cert.clone();
                let _ = tokio::task::spawn_blocking(move || cert.refresh()).await;
            }
        })
    }
}
