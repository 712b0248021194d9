//! Automatic certificates: `--acme DOMAIN` gets and renews certificates from an ACME CA
//! (Let's Encrypt by default) with the TLS-ALPN-01 challenge, on the HTTPS port itself.
//!
//! The work is rustls-acme's: [`acme_acceptor`] returns an [`AcmeTls`] (the configurations
//! clients and the CA's validation handshakes are served with: `tls/connection.rs` tells
//! them apart by ALPN, on the one HTTPS listener), and a task that orders the certificate,
//! keeps it in `--acme-cache`, and orders a new one when a third of the current one's
//! lifetime is left, swapping it in without a restart.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use rustls_acme::AcmeConfig;
use rustls_acme::caches::DirCache;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::AcmeArgs;

/// Why ACME could not start.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("--acme-cache {}: cannot write there: {source}", dir.display())]
    Cache { dir: PathBuf, source: io::Error },
    #[error("--acme-directory-ca {}: {why}", file.display())]
    DirectoryCa { file: PathBuf, why: String },
}

/// How HTTPS is served with ACME: certificates from the ACME task, and the CA's validation
/// handshakes answered. Cheap to clone.
#[derive(Clone)]
pub struct AcmeTls {
    /// For clients: the current certificate, with ALPN `h2` and `http/1.1`.
    serving: Arc<ServerConfig>,
    /// For the CA's TLS-ALPN-01 validation (ALPN `acme-tls/1`): the challenge certificate.
    challenge: Arc<ServerConfig>,
}

impl AcmeTls {
    /// The configuration clients are served with (ALPN `h2`, `http/1.1`).
    pub fn serving(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.serving)
    }

    /// The configuration the CA's validation handshakes (ALPN `acme-tls/1`) are answered with.
    pub fn challenge(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.challenge)
    }
}

/// Starts ACME: the acceptor, and the task that orders and renews certificates (run it for
/// as long as the server runs; it logs each order, renewal and failure, and retries failures
/// with a growing pause).
pub fn acme_acceptor(
    args: &AcmeArgs,
) -> Result<(AcmeTls, impl Future<Output = ()> + Send + 'static), AcmeError> {
    check_writable(&args.acme_cache)?;
    let provider = Arc::new(ring::default_provider());
    let client = directory_client(args, &provider)?;
    let contact = args.acme_contact.iter().map(|email| format!("mailto:{email}"));
    let mut state = AcmeConfig::new_with_client_config(&args.acme, client)
        .contact(contact)
        .directory(args.directory_url())
        .cache(DirCache::new(args.acme_cache.clone()))
        .state();
    let tls = AcmeTls {
        serving: serving_config(&state.resolver(), &provider),
        challenge: state.challenge_rustls_config_with_provider(Arc::clone(&provider)),
    };
    let renew = async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(event = ?ok, "acme"),
                Err(err) => tracing::warn!(error = ?err, "acme: will retry"),
            }
        }
    };
    Ok((tls, renew))
}

/// rustls-acme's own serving configuration advertises no ALPN, so browsers would never
/// speak HTTP/2: this one does.
fn serving_config(
    resolver: &Arc<rustls_acme::ResolvesServerCertAcme>,
    provider: &Arc<CryptoProvider>,
) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The client that talks to the ACME directory: public roots, or `--acme-directory-ca`.
fn directory_client(args: &AcmeArgs, provider: &Arc<CryptoProvider>) -> Result<Arc<ClientConfig>, AcmeError> {
    let roots = match &args.acme_directory_ca {
        Some(file) => roots_from(file)?,
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let config = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn roots_from(file: &Path) -> Result<RootCertStore, AcmeError> {
    let bad = |why: String| AcmeError::DirectoryCa { file: file.to_owned(), why };
    let certs = CertificateDer::pem_file_iter(file).map_err(|e| bad(e.to_string()))?;
    let certs = certs.collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable CA certificate in it (PEM expected)".to_owned()));
    }
    Ok(roots)
}

/// Finds an unusable cache at start, not at the first renewal months later. A cache made
/// here is its owner's alone: it will hold private keys.
fn check_writable(dir: &Path) -> Result<(), AcmeError> {
    let probe = dir.join(".ssechat-write-check");
    let mut create = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut create, 0o700);
    let written = create.recursive(true).create(dir).and_then(|()| std::fs::write(&probe, b""));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|source| AcmeError::Cache { dir: dir.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AcmeArgs;

    #[test]
    fn an_unwritable_cache_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let args = AcmeArgs {
            acme: vec!["chat.example.com".into()],
            acme_cache: file.join("acme"),
            ..AcmeArgs::defaults()
        };
        let err = acme_acceptor(&args).err().expect("refused").to_string();
        assert!(
            err.starts_with(&format!("--acme-cache {}: cannot write there", file.join("acme").display())),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_new_cache_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("acme");
        check_writable(&cache).unwrap();
        assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "the probe is gone");
    }

    #[test]
    fn a_directory_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"not pem").unwrap();
        let args = AcmeArgs {
            acme: vec!["chat.example.com".into()],
            acme_cache: dir.path().join("acme"),
            acme_directory_ca: Some(ca),
            ..AcmeArgs::defaults()
        };
        let err = acme_acceptor(&args).err().expect("refused").to_string();
        assert!(err.contains("no usable CA certificate"), "{err}");
    }
}
