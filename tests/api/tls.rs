//! HTTPS on the listener: HTTP/1.1 and HTTP/2 (ALPN) over rustls, with certificates made
//! at run time by a test CA. Real clients: reqwest for each protocol, and the `h2` crate
//! where a test needs to hold one stream's flow-control window shut.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Version;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use ssechat::Config;
use tokio::net::TcpStream;

use crate::helpers::{EventStream, TestApp, WAIT, eventually};
use crate::process::Server;

const H1: &[u8] = b"http/1.1";
const H2: &[u8] = b"h2";

/// A certificate authority made for one test, and the files the server reads.
struct Certificates {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    dir: tempfile::TempDir,
}

impl Certificates {
    /// A CA, and a first server certificate (named `first`) in `cert.pem`/`key.pem`.
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "ssechat test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let certificates = Self { ca, ca_key, dir: tempfile::tempdir().unwrap() };
        certificates.issue("first");
        certificates
    }

    /// Writes a new server certificate for 127.0.0.1 and localhost, named `name`, over the
    /// files; returns it.
    fn issue(&self, name: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        // The key first: the certificate's change is what a reload then sees whole.
        std::fs::write(self.key(), key.serialize_pem()).unwrap();
        std::fs::write(self.cert(), cert.pem()).unwrap();
        cert.der().clone()
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn configure(&self, config: &mut Config) {
        config.tls_cert = Some(self.cert());
        config.tls_key = Some(self.key());
    }

    /// A client configuration that trusts only this CA and offers `alpn`.
    fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// reqwest speaking `alpn` (HTTP/1.1 or HTTP/2) to a server with this CA's certificates.
    fn client(&self, alpn: &[u8]) -> reqwest::Client {
        let builder = reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(&[alpn]))
            .redirect(reqwest::redirect::Policy::none())
            .tls_info(true);
        let builder = if alpn == H1 { builder.http1_only() } else { builder };
        builder.build().unwrap()
    }

    /// The server certificate a new handshake with `addr` gets.
    async fn served(&self, addr: &str) -> CertificateDer<'static> {
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(self.client_config(&[H1])));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.unwrap().unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
    }
}

/// The app serving HTTPS with `certificates`; its client and base URL speak `alpn` over TLS.
async fn spawn_tls(certificates: &Certificates, alpn: &[u8], configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut app = TestApp::spawn_with(|c| {
        certificates.configure(c);
        configure(c);
    })
    .await;
    app.base = format!("https://127.0.0.1:{}", app.addr.port());
    app.client = certificates.client(alpn);
    app
}

#[tokio::test]
async fn http1_and_http2_clients_post_and_stream_over_tls() {
    let certificates = Certificates::new();
    for (alpn, version) in [(H1, Version::HTTP_11), (H2, Version::HTTP_2)] {
        let app = spawn_tls(&certificates, alpn, |_| {}).await;
        let health = app.get("/healthz").await;
        assert_eq!((health.status(), health.version()), (reqwest::StatusCode::OK, version));
        assert_eq!(health.headers()["strict-transport-security"], "max-age=31536000");
        let mut stream = app.subscribe("?room=tls", &[]).await;
        assert_eq!(stream.headers["strict-transport-security"], "max-age=31536000");
        assert_eq!(stream.headers["content-type"], "text/event-stream");
        let sent = app.say("tls", "ana", &format!("over {version:?}")).await;
        assert_eq!(stream.next_message().await, sent);
    }
}

#[tokio::test]
async fn plain_http_gets_no_answer_from_a_tls_listener_and_no_hsts_without_tls() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H1, |_| {}).await;
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", app.addr)).send().await;
    assert!(plain.is_err(), "TLS only on the TLS listener");
    let plain_app = TestApp::spawn().await;
    assert!(!plain_app.get("/healthz").await.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn an_http2_stream_resumes_from_last_event_id() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |_| {}).await;
    let first = app.say("resume", "ana", "one").await;
    let second = app.say("resume", "ana", "two").await;
    let third = app.say("resume", "ana", "three").await;
    let last = first.id.to_string();
    let mut stream = app.subscribe("?room=resume", &[("last-event-id", &last)]).await;
    assert_eq!(stream.next_message().await, second);
    assert_eq!(stream.next_message().await, third);
}

#[tokio::test]
async fn on_shutdown_an_http2_stream_gets_its_retry_and_ends() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |_| {}).await;
    let mut stream = app.subscribe("?room=drain", &[]).await;
    let stopped = tokio::spawn(app.stop());
    let retry = stream.next_block().await.expect("a retry before the end");
    assert!(retry.retry.is_some(), "{retry:?}");
    stream.expect_end().await;
    tokio::time::timeout(WAIT, stopped).await.unwrap().unwrap();
}

/// An HTTP/2 connection made with the `h2` crate: each stream's window is `window` bytes,
/// given back only by the reader that chooses to.
async fn h2_connection(
    app: &TestApp,
    certificates: &Certificates,
    window: u32,
) -> h2::client::SendRequest<Bytes> {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(certificates.client_config(&[H2])));
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(H2));
    let (send, connection) =
        h2::client::Builder::new().initial_window_size(window).handshake(tls).await.unwrap();
    tokio::spawn(connection);
    send
}

/// Opens `/events{query}` on an HTTP/2 connection; the response head has arrived.
async fn h2_events(send: &mut h2::client::SendRequest<Bytes>, app: &TestApp, query: &str) -> h2::RecvStream {
    let request = axum::http::Request::get(format!("https://127.0.0.1:{}/events{query}", app.addr.port()))
        .body(())
        .unwrap();
    let (response, _) = send.clone().ready().await.unwrap().send_request(request, true).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// A reader that gives back the window for all it reads.
fn reading(body: h2::RecvStream) -> EventStream {
    let chunks = futures_util::stream::unfold(body, |mut body| async move {
        let chunk = body.data().await?;
        if let Ok(bytes) = &chunk {
            let _ = body.flow_control().release_capacity(bytes.len());
        }
        Some((chunk, body))
    });
    EventStream::from_body(Default::default(), chunks)
}

#[tokio::test]
async fn a_dozen_streams_share_one_http2_connection() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |_| {}).await;
    let mut send = h2_connection(&app, &certificates, 65_535).await;
    let mut streams = Vec::new();
    for _ in 0..12 {
        let mut stream = reading(h2_events(&mut send, &app, "?room=tabs").await);
        assert!(stream.next_block().await.unwrap().retry.is_some());
        streams.push(stream);
    }
    assert_eq!(app.state.connections.open(), 1, "one connection");
    // What the README says: up to 200 streams at once on one connection.
    assert_eq!(send.current_max_send_streams(), 200);
    let sent = app.say("tabs", "ana", "to every tab").await;
    for stream in &mut streams {
        assert_eq!(stream.next_message().await, sent);
    }
}

#[tokio::test]
async fn a_stalled_http2_stream_is_cut_off_while_its_neighbour_keeps_receiving() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |c| c.stall_timeout = Duration::from_millis(300)).await;
    // A small window: a few messages fill the stalled stream's.
    let mut send = h2_connection(&app, &certificates, 1024).await;
    let _stalled = h2_events(&mut send, &app, "?room=stall").await;
    let mut reader = reading(h2_events(&mut send, &app, "?room=stall").await);
    reader.next_block().await.unwrap();
    let room = ssechat::domain::RoomName::parse("stall").unwrap();
    let text = "x".repeat(500);
    for _ in 0..8 {
        let sent = app.say("stall", "ana", &text).await;
        assert_eq!(reader.next_message().await, sent);
    }
    // The stalled stream is cut off; its neighbour on the same connection is not.
    eventually("the stalled stream cut off", || async { app.state.hub.subscribers(&room) == 1 }).await;
    let sent = app.say("stall", "ana", "still here").await;
    assert_eq!(reader.next_message().await, sent);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("ssechat_disconnects_total{reason=\"stall\"} 1\n"), "{metrics}");
}

#[tokio::test]
async fn a_changed_certificate_file_serves_new_handshakes_and_open_streams_stay() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |_| {}).await;
    let addr = app.addr.to_string();
    let first = certificates.served(&addr).await;
    let mut stream = app.subscribe("?room=reload", &[]).await;
    // A broken file is refused: the old certificate is still served.
    std::fs::write(certificates.cert(), "not a certificate").unwrap();
    let second = certificates.issue("second");
    assert_ne!(first, second);
    eventually("the new certificate served", || async { certificates.served(&addr).await == second }).await;
    let sent = app.say("reload", "ana", "same stream").await;
    assert_eq!(stream.next_message().await, sent);
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let certificates = Certificates::new();
    let (cert, key) = (certificates.cert(), certificates.key());
    let server =
        Server::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]).await;
    let addr = server.base.strip_prefix("https://").expect("listening on https").to_owned();
    let first = certificates.served(&addr).await;
    let second = certificates.issue("second");
    // Same modification time as before is possible within a second; SIGHUP does not care.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    eventually("the new certificate served", || async { certificates.served(&addr).await == second }).await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn bad_certificate_flags_stop_the_start_with_a_clear_error() {
    let certificates = Certificates::new();
    let (cert, key) = (certificates.cert(), certificates.key());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let other = Certificates::new();
    let other_key = other.key();
    let cases: [(&[&str], &str); 5] = [
        (&["--tls-cert", cert], "--tls-cert needs --tls-key"),
        (&["--tls-key", key], "--tls-key needs --tls-cert"),
        (
            &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key],
            "cannot read --tls-cert /nonexistent/cert.pem",
        ),
        (&["--tls-cert", key, "--tls-key", key], "holds no PEM certificate"),
        (&["--tls-cert", cert, "--tls-key", other_key.to_str().unwrap()], "does not fit --tls-cert"),
    ];
    for (args, expected) in cases {
        let stderr = Server::try_start(args).await.err().unwrap_or_else(|| panic!("{args:?} refused"));
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let stderr = Server::try_start(&["--redirect-http", "127.0.0.1:0"]).await.err().expect("refused");
    assert!(stderr.contains("--redirect-http needs TLS on"), "{stderr}");
}

/// Serves `--redirect-http` for `app` on a free port; returns its address.
async fn redirect_listener(app: &TestApp) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = listener.local_addr().unwrap();
    tokio::spawn(ssechat::tls::redirect::run(listener, app.state.clone(), app.addr.port()));
    plain
}

#[tokio::test]
async fn the_redirect_listener_sends_to_an_https_public_url() {
    let certificates = Certificates::new();
    let app =
        spawn_tls(&certificates, H1, |c| c.public_url = Some("https://chat.example".parse().unwrap())).await;
    let plain = redirect_listener(&app).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(format!("http://{plain}/rooms/b?since=3")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "https://chat.example/rooms/b?since=3");
}

#[tokio::test]
async fn the_redirect_listener_answers_308_to_the_https_url() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H1, |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = listener.local_addr().unwrap();
    tokio::spawn(ssechat::tls::redirect::run(listener, app.state.clone(), app.addr.port()));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response =
        client.post(format!("http://localhost:{}/rooms/a?b=c", plain.port())).send().await.unwrap();
    assert_eq!(response.status(), 308);
    let expected = format!("https://localhost:{}/rooms/a?b=c", app.addr.port());
    assert_eq!(response.headers()["location"], expected.as_str());
    // Followed, it lands on the TLS listener.
    let following =
        reqwest::Client::builder().use_preconfigured_tls(certificates.client_config(&[H1])).build().unwrap();
    let health = following.get(format!("http://127.0.0.1:{}/healthz", plain.port())).send().await.unwrap();
    assert_eq!((health.status(), health.url().scheme()), (reqwest::StatusCode::OK, "https"));
    // A host this server does not answer for gets no redirect.
    let foreign = client.get(format!("http://{plain}/")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(foreign.status(), 421);
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_secure_with_the_host_prefix() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |_| {}).await;
    ssechat::accounts::add_user(&*app.state.store, "ana", "ana pass", false).await.unwrap();
    app.state.policy.reload().await.unwrap();
    let signed_in = app.post_as_browser("/login", &[("name", "ana"), ("password", "ana pass")]).await;
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("__Host-ssechat_session=") && cookie.contains("; Secure"), "{cookie}");
    // A post from a page of this site, named by its https origin, is accepted.
    let origin = format!("https://127.0.0.1:{}", app.addr.port());
    let form = json!({"room": "general", "author": "bo", "text": "hi"});
    let sent = app.client.post(app.url("/send")).header("origin", origin).json(&form).send().await.unwrap();
    assert_eq!(sent.status(), 201);
}

#[tokio::test]
async fn an_https_reader_that_stops_reading_its_connection_is_cut_off() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H1, |c| {
        c.stall_timeout = Duration::from_millis(300);
        // No other deadline closes the connection while the test waits.
        c.header_timeout = Duration::from_secs(3600);
    })
    .await;
    // HTTP/1.1 over TLS on a socket with a tiny receive window, never read after the request.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(app.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(certificates.client_config(&[H1])));
    let mut tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    let request = b"GET /events?room=deaf HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut tls, request).await.unwrap();
    let mut reader = app.subscribe("?room=deaf", &[]).await;
    let room = ssechat::domain::RoomName::parse("deaf").unwrap();
    eventually("both streams open", || async { app.state.hub.subscribers(&room) == 2 }).await;
    let text = "y".repeat(4000);
    for _ in 0..100 {
        let sent = app.say("deaf", "ana", &text).await;
        assert_eq!(reader.next_message().await, sent);
    }
    eventually("the deaf reader cut off", || async { app.state.hub.subscribers(&room) == 1 }).await;
    // Its whole connection too, not only its stream: the reader's and the poster's are left.
    eventually("its connection closed", || async { app.state.connections.open() == 2 }).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("ssechat_disconnects_total{reason=\"stall\"} 1\n"), "{metrics}");
    drop(tls);
}

#[tokio::test]
async fn a_stream_over_tls_outlives_the_header_and_idle_timeouts() {
    let certificates = Certificates::new();
    for alpn in [H1, H2] {
        let app = spawn_tls(&certificates, alpn, |c| {
            c.header_timeout = Duration::from_millis(200);
            c.idle_timeout = Duration::from_millis(200);
            c.heartbeat = Duration::from_millis(700);
        })
        .await;
        let mut stream = app.subscribe("?room=long", &[]).await;
        // A heartbeat comes well after the header deadline; the stream is still open.
        let beat = stream.next_block().await.expect("a heartbeat");
        assert!(beat.data.is_none(), "{beat:?}");
        let sent = app.say("long", "ana", "still open").await;
        assert_eq!(stream.next_message().await, sent);
    }
}

#[tokio::test]
async fn an_idle_tls_connection_is_closed_after_the_idle_timeout() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |c| c.idle_timeout = Duration::from_millis(200)).await;
    for alpn in [H1, H2] {
        let client = certificates.client(alpn);
        let health = client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        // The client keeps the connection for reuse; the server closes it.
        eventually("the idle connection closed", || async { app.state.connections.open() == 0 }).await;
    }
}

#[tokio::test]
async fn the_stream_caps_hold_over_http2() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |c| c.max_streams_per_client = 2).await;
    let _one = app.subscribe("?room=caps", &[]).await;
    let _two = app.subscribe("?room=caps", &[]).await;
    let third = app.get("/events?room=caps").await;
    assert_eq!((third.status(), third.version()), (reqwest::StatusCode::TOO_MANY_REQUESTS, Version::HTTP_2));
    assert_eq!(app.state.connections.open(), 1, "all three on one connection");
}

/// The headers of a stream's answer that both paths send (no `date`, which only hyper
/// sends, no framing, no HSTS, which only TLS sends), sorted.
fn stream_head(
    headers: impl IntoIterator<Item = (String, String)>,
) -> std::collections::BTreeMap<String, String> {
    let framing = ["date", "transfer-encoding", "strict-transport-security"];
    headers.into_iter().filter(|(name, _)| !framing.contains(&name.as_str())).collect()
}

#[tokio::test]
async fn an_http2_stream_gets_what_a_plain_stream_gets_and_refusals_are_the_routers() {
    let certificates = Certificates::new();
    let app = spawn_tls(&certificates, H2, |_| {}).await;
    let send = h2_connection(&app, &certificates, 65_535).await;
    let request =
        axum::http::Request::get(format!("https://127.0.0.1:{}/events?room=heads", app.addr.port()))
            .body(())
            .unwrap();
    let (response, _) = send.clone().ready().await.unwrap().send_request(request, true).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("strict-transport-security"));
    let over_h2 = stream_head(
        response.headers().iter().map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned())),
    );

    // The plaintext fast path, on a server without TLS.
    let plain = TestApp::spawn().await;
    let mut raw = crate::raw::Raw::connect(plain.addr).await;
    raw.send("GET /events?room=heads HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = raw.response().await;
    assert_eq!(answer.status, 200);
    assert_eq!(over_h2, stream_head(answer.headers.clone()));

    // A refusal on the way in (a token nobody holds) is the router's answer, as over HTTP/1.1.
    let refused =
        app.client.get(app.url("/events?room=heads")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!((refused.status(), refused.version()), (reqwest::StatusCode::UNAUTHORIZED, Version::HTTP_2));
    assert!(refused.text().await.unwrap().contains("token"), "the router's message");
}
