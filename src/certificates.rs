//! The certificate served over HTTPS (from `--tls-cert`/`--tls-key`, reloaded on SIGHUP and
//! when the files change) and the rustls configuration that serves it with ALPN `h2` and
//! `http/1.1`.
//!
//! The seam for other certificate sources (ACME): anything that implements rustls's
//! `ResolvesServerCert` goes through [`server_config`] and lands in `AppState::tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How often the certificate files are looked at for a change.
const POLL: Duration = Duration::from_secs(1);

/// The rustls configuration for `resolver`: HTTP/2 first, then HTTP/1.1, on the same port.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The certificate and key files, and the certificate last loaded from them. New
/// handshakes get the current one; connections already open keep theirs.
#[derive(Debug)]
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl CertificateFiles {
    /// From `--tls-cert` and `--tls-key`: `None` without them; an error naming the problem
    /// for one without the other, or files that cannot be read, parsed, or do not match.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Self>>, String> {
        match (&config.tls_cert, &config.tls_key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err("--tls-cert needs --tls-key (SSECHAT_TLS_KEY) too".to_owned()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert (SSECHAT_TLS_CERT) too".to_owned()),
            (Some(cert), Some(key)) => {
                let current = ArcSwap::from_pointee(load(cert, key)?);
                Ok(Some(Arc::new(Self { cert: cert.clone(), key: key.clone(), current })))
            }
        }
    }

    /// Loads the files again; a bad new file keeps the certificate in use (and says why).
    pub fn reload(&self) -> Result<(), String> {
        let fresh = load(&self.cert, &self.key)?;
        self.current.store(Arc::new(fresh));
        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads on SIGHUP and whenever either file's modification time changes, until `stop`.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken) {
        let files = Arc::clone(self);
        tokio::spawn(async move {
            let mut hangup = hangups();
            let mut seen = files.modified();
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hangup.recv() => {}
                    _ = tick.tick() => {
                        let now = files.modified();
                        if now == seen {
                            continue;
                        }
                        seen = now;
                    }
                }
                if let Err(e) = files.reload() {
                    tracing::error!("{e}; still serving the previous certificate");
                }
            }
        });
    }

    fn modified(&self) -> [Option<SystemTime>; 2] {
        let mtime = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        [mtime(&self.cert), mtime(&self.key)]
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// SIGHUP as a channel that never yields where there is no such signal.
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while signal.recv().await.is_some() {
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    std::mem::forget(tx);
    rx
}

/// Reads a PEM certificate chain and its private key, and checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
    };
    let cert_pem = read("--tls-cert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: not a PEM certificate: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: holds no PEM certificate", cert.display()));
    }
    let key_pem = read("--tls-key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("--tls-key {}: not a PEM private key: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, &default_provider())
        .map_err(|e| format!("--tls-key {} does not fit --tls-cert {}: {e}", key.display(), cert.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fresh self-signed certificate and its key into `dir`; returns the certificate.
    fn write_pair(dir: &Path) -> CertificateDer<'static> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        made.cert.der().clone()
    }

    fn files(dir: &Path) -> Arc<CertificateFiles> {
        let mut config = Config::defaults();
        config.tls_cert = Some(dir.join("cert.pem"));
        config.tls_key = Some(dir.join("key.pem"));
        CertificateFiles::from_config(&config).unwrap().unwrap()
    }

    #[test]
    fn a_bad_new_file_keeps_the_certificate_in_use_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path());
        let files = files(dir.path());
        assert_eq!(files.current.load().cert[0], first);

        std::fs::write(dir.path().join("cert.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
        let refused = files.reload().unwrap_err();
        assert!(refused.contains("not a PEM certificate"), "{refused}");
        assert_eq!(files.current.load().cert[0], first, "still the first");

        let second = write_pair(dir.path());
        files.reload().unwrap();
        assert_eq!(files.current.load().cert[0], second);
    }

    #[test]
    fn the_configuration_offers_http2_and_http1() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path());
        let config = server_config(files(dir.path()));
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}
