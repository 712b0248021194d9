//! `--acme` end to end against Debian's `pebble`, a real ACME CA for tests: ssechat orders a
//! certificate, pebble validates the TLS-ALPN-01 challenge by connecting to ssechat's own
//! port, and clients that trust pebble's root then get the page and a stream over HTTPS,
//! both over HTTP/1.1 and HTTP/2.
//!
//! Name resolution is real too: pebble asks `pebble-challtestsrv`'s DNS server, which
//! answers 127.0.0.1 for every name, so the domain ssechat proves is an ordinary one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use reqwest::Version;
use ssechat::config::AcmeArgs;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::helpers::{TestApp, WAIT, eventually, test_config};
use crate::process::Server;

/// The name ssechat gets a certificate for.
const DOMAIN: &str = "chat.example.com";
/// An order runs a few polls of pebble (each waiting a second or more in rustls-acme): a
/// generous bound, reached only when validation is broken.
const ORDER_WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn a_certificate_from_pebble_serves_the_page_and_streams_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pebble = Pebble::start(dir.path(), port).await;

    let mut config = test_config();
    config.allowed_host = vec![DOMAIN.to_owned()];
    config.acme = AcmeArgs {
        acme: vec![DOMAIN.to_owned()],
        acme_contact: Some("admin@example.com".to_owned()),
        acme_cache: dir.path().join("acme"),
        acme_directory: pebble.directory(),
        acme_directory_ca: Some(pebble.https_ca.clone()),
        ..AcmeArgs::defaults()
    };
    let state = ssechat::AppState::new(config).await.expect("app starts");
    let root = pebble.issuing_root().await;
    let app = serve_acme(listener, state, &root).await;
    let cached = std::fs::read_dir(dir.path().join("acme")).unwrap();
    assert!(cached.flatten().any(|f| f.file_name().to_string_lossy().starts_with("cached_cert_")));

    let http1 = https_client(&root, port, &["http/1.1"]);
    for (client, version) in [(http1, Version::HTTP_11), (app.client.clone(), Version::HTTP_2)] {
        let page = client.get(app.url("/")).send().await.unwrap();
        assert_eq!((page.status().as_u16(), page.version()), (200, version));
        assert!(page.text().await.unwrap().contains("<html"), "the page over {version:?}");

        let stream = client.get(app.url("/events?room=tls")).send().await.unwrap();
        assert_eq!((stream.status().as_u16(), stream.version()), (200, version));
        let mut stream = crate::helpers::EventStream::new(stream);
        assert!(stream.next_block().await.expect("preamble").retry.is_some());
        let said = app.say("tls", "ann", &format!("hello over {version:?}")).await;
        assert_eq!(stream.next_message().await.text, said.text);
    }
    let config = (*app.state.config).clone();
    app.stop().await;

    drop(pebble);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = serve_acme(listener, ssechat::AppState::new(config).await.unwrap(), &root).await;
    let page = restarted.get("/").await;
    assert_eq!(page.status(), 200, "a restart serves the cached certificate, with the CA gone");
    restarted.stop().await;
}

/// Serves `state` over HTTPS with ACME on `listener`, reached through a client that trusts
/// `root` (and offers `h2`); returns once a handshake with the ACME certificate succeeds.
async fn serve_acme(
    listener: TcpListener,
    state: ssechat::AppState,
    root: &CertificateDer<'static>,
) -> TestApp {
    let port = listener.local_addr().unwrap().port();
    let base = format!("https://{DOMAIN}:{port}");
    let client = https_client(root, port, &["h2", "http/1.1"]);
    // The state ordered the certificate when it was made (`--acme`); the server is the one
    // for every listener: HTTPS because the state has TLS.
    let app = TestApp::serve_by(listener, state, base, client, ssechat::run);
    wait_for_certificate(&app.client, &app.base).await;
    app
}

#[tokio::test]
async fn the_binary_gets_a_certificate_and_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let [addr] = free_ports().await;
    let pebble = Pebble::start(dir.path(), addr.port()).await;
    let cache = dir.path().join("acme");
    let ca = pebble.https_ca.to_str().unwrap();
    let directory = pebble.directory();
    let args =
        ["--store", "memory", "--allowed-host", DOMAIN, "--acme", DOMAIN, "--acme-directory", &directory];
    let args = [&args[..], &["--acme-directory-ca", ca, "--acme-cache", cache.to_str().unwrap()]].concat();
    let server = Server::try_start_on(&addr.to_string(), &args).await.expect("ssechat starts");
    assert_eq!(server.base, format!("https://{addr}"));

    let client = https_client(&pebble.issuing_root().await, addr.port(), &["h2", "http/1.1"]);
    let base = format!("https://{DOMAIN}:{}", addr.port());
    wait_for_certificate(&client, &base).await;
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!((page.status().as_u16(), page.version()), (200, Version::HTTP_2));
}

#[tokio::test]
async fn the_binary_says_what_is_wrong_with_acme_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let unwritable = file.join("acme");
    let unwritable = unwritable.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--acme", DOMAIN, "--tls-cert", "c.pem", "--tls-key", "k.pem"], "cannot be used with"),
        (
            &["--acme", DOMAIN, "--acme-cache", unwritable],
            &format!("--acme-cache {unwritable}: cannot write there"),
        ),
        (&["--acme", DOMAIN, "--acme-directory", "http://ca.example/dir"], "it must start with https://"),
        (&["--acme", "localhost"], "\"localhost\" is not a domain name"),
        (&["--acme", DOMAIN, "--acme-contact", "admin"], "\"admin\" is not an e-mail address"),
        (
            &["--acme", DOMAIN, "--acme-staging", "--acme-directory", "https://ca.example/dir"],
            "cannot be used with",
        ),
    ];
    for (args, expected) in cases {
        let args = [&["--store", "memory"], args].concat();
        let said = Server::try_start(&args).await.err().expect("refused");
        assert!(said.contains(expected), "{args:?}: {said}");
    }
}

/// Waits until a handshake with the ACME certificate succeeds (until then the server has
/// no certificate and refuses handshakes).
async fn wait_for_certificate(client: &reqwest::Client, base: &str) {
    let outcome = tokio::time::timeout(ORDER_WAIT, async {
        loop {
            match client.get(format!("{base}/healthz")).send().await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "no certificate from pebble within {ORDER_WAIT:?}");
}

/// A client that trusts only `root`, finds `DOMAIN` at 127.0.0.1:`port`, and offers `alpn`.
fn https_client(root: &CertificateDer<'static>, port: u16, alpn: &[&str]) -> reqwest::Client {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(DOMAIN, SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Pebble and its DNS server, on free loopback ports, stopped on drop.
struct Pebble {
    /// The CA that signed pebble's own HTTPS certificate (made here: Debian ships none).
    https_ca: PathBuf,
    https_ca_der: CertificateDer<'static>,
    acme: SocketAddr,
    management: SocketAddr,
    _dns: Child,
    _pebble: Child,
}

impl Pebble {
    /// Starts pebble-challtestsrv (DNS: every name is 127.0.0.1) and pebble, which validates
    /// TLS-ALPN-01 challenges on `tls_port`; returns once pebble's directory answers.
    async fn start(dir: &Path, tls_port: u16) -> Self {
        let (https_ca, https_ca_der) = pebble_https_certificate(dir);
        let [acme, management, dns, dns_management, http] = free_ports().await;
        let challtestsrv = spawn(
            dir,
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv").args([
                "-dns01",
                &dns.to_string(),
                "-management",
                &dns_management.to_string(),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ]),
        );
        let config = serde_json::json!({ "pebble": {
            "listenAddress": acme.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http.port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let pebble = spawn(
            dir,
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &dns.to_string()])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
        );
        let pebble = Pebble { https_ca, https_ca_der, acme, management, _dns: challtestsrv, _pebble: pebble };
        let client = pebble.management_client();
        let directory = pebble.directory();
        eventually("pebble's directory", || async {
            client.get(&directory).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        pebble
    }

    fn directory(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    fn management_client(&self) -> reqwest::Client {
        let mut roots = RootCertStore::empty();
        roots.add(self.https_ca_der.clone()).unwrap();
        let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder().tls_backend_preconfigured(tls).build().unwrap()
    }

    /// The root pebble issues under (made anew each time pebble starts).
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let url = format!("https://{}/roots/0", self.management);
        let pem = tokio::time::timeout(WAIT, self.management_client().get(url).send())
            .await
            .expect("pebble answers")
            .unwrap()
            .text()
            .await
            .unwrap();
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM root")
    }
}

/// Writes pebble's HTTPS certificate (for 127.0.0.1) and key, and the CA that signed it.
fn pebble_https_certificate(dir: &Path) -> (PathBuf, CertificateDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = cert.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("pebble.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    let ca_file = dir.join("pebble-https-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (ca_file, ca.der().clone())
}

/// Starts a helper program, its output to a log in `dir`, killed when dropped.
fn spawn(dir: &Path, name: &str, command: &mut Command) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} runs (apt-get install pebble): {e}"))
}

/// Loopback ports free for both TCP and UDP right now (pebble's programs bind them by
/// number, so they are found here, then released).
async fn free_ports<const N: usize>() -> [SocketAddr; N] {
    let mut held = Vec::new();
    while held.len() < N {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        if let Ok(udp) = std::net::UdpSocket::bind(addr) {
            held.push((tcp, udp, addr));
        }
    }
    std::array::from_fn(|i| held[i].2)
}
