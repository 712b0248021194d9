//! TLS for `https://` URLs: which certificates to trust (`--ca FILE`, or `--insecure` for
//! a test certificate), and a connector per protocol offered by ALPN.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::http::Endpoint;

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Trust the server certificates this PEM file's certificates issued (or are), instead
    /// of the web's roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (a test server's self-signed one); signatures are still
    /// checked, names and issuers are not.
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
}

/// Which protocol a connection offers by ALPN.
#[derive(Debug, Clone, Copy)]
pub enum Alpn {
    Http1,
    Http2,
}

/// Connectors for `https://` URLs, one per protocol offered.
#[derive(Clone)]
pub struct Tls {
    http1: TlsConnector,
    http2: TlsConnector,
}

impl Tls {
    pub fn new(args: &TlsArgs) -> Result<Self, String> {
        let config = client_config(args)?;
        let offering = |protocol: &[u8]| {
            let mut config = config.clone();
            config.alpn_protocols = vec![protocol.to_vec()];
            TlsConnector::from(Arc::new(config))
        };
        Ok(Self { http1: offering(b"http/1.1"), http2: offering(b"h2") })
    }

    /// The TLS handshake on `tcp` with `endpoint`'s host, offering `alpn`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        endpoint: &Endpoint,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, String> {
        let host = endpoint.host();
        let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?}: {e}"))?;
        let connector = match alpn {
            Alpn::Http1 => &self.http1,
            Alpn::Http2 => &self.http2,
        };
        connector.connect(name, tcp).await.map_err(|e| {
            // What `--ca` gets when handed a self-signed certificate (openssl's makes it a CA).
            let hint = if e.to_string().contains("CaUsedAsEndEntity") {
                " (a self-signed certificate can't be its own --ca: use --insecure)"
            } else {
                ""
            };
            format!("TLS handshake with {host}: {e}{hint}")
        })
    }
}

fn client_config(args: &TlsArgs) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = if args.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots(args.ca.as_ref())?)
    };
    Ok(config.with_no_client_auth())
}

/// The certificates of `--ca`, or the web's roots without it.
fn roots(ca: Option<&PathBuf>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(path) = ca else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("--ca {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--ca {}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("--ca {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--ca {}: no PEM certificate in it", path.display()));
    }
    Ok(roots)
}

/// `--insecure`: any certificate passes; the handshake's signatures are still verified, so
/// the connection is encrypted and costs what a verified one does.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
