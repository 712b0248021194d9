//! Behind a proxy: who the client is (`--trusted-proxy`), and browser posts that pass the
//! cross-site check through a proxy that rewrites `Host`, including a real nginx.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};

use ssechat::config::PublicUrl;
use ssechat::limits::parse_trusted_proxy;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{TestApp, WAIT, eventually};
use crate::process::Server;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const FORM: [(&str, &str); 3] = [("room", "general"), ("author", "ana"), ("text", "hello")];

/// A node that trusts the proxy at `proxy` (our own test client is 127.0.0.1).
async fn behind(proxy: &str, configure: impl FnOnce(&mut ssechat::Config)) -> TestApp {
    let net = parse_trusted_proxy(proxy).unwrap();
    TestApp::spawn_with(move |c| {
        c.trusted_proxy = vec![net];
        configure(c);
    })
    .await
}

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address is local).
fn client_from(ip: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().unwrap();
    reqwest::Client::builder().local_address(ip).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Posts the form as a browser does, with extra headers; returns the status.
async fn browser_post(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client.post(url).header("accept", BROWSER_ACCEPT).form(&FORM);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Posts JSON with extra headers; returns the status.
async fn json_post(app: &TestApp, headers: &[(&str, &str)]) -> u16 {
    let body = serde_json::json!({ "room": "general", "author": "ana", "text": "hi" });
    let mut request = app.client.post(app.url("/send")).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn junk_in_forwarding_headers_buys_no_bucket_of_its_own() {
    let app = behind("127.0.0.1", |c| {
        c.send_rate = 0.01;
        c.send_burst = 1;
    })
    .await;
    // Each names a made-up client, then something unreadable where the proxy's entry would
    // be: the client is the peer every time, so only the first post gets through.
    let junk = [
        ("x-forwarded-for", "127.0.0.11, unknown"),
        ("x-forwarded-for", "127.0.0.12, _hidden"),
        ("x-forwarded-for", "127.0.0.13, garbage"),
        ("x-forwarded-for", "127.0.0.14, 127.0.0.15:99999"),
        ("forwarded", "for=127.0.0.16, for=unknown"),
        ("forwarded", "for=127.0.0.17, for=\"_gazonk\""),
        ("forwarded", "for=127.0.0.18, nonsense"),
    ];
    assert_eq!(json_post(&app, &[junk[0]]).await, 201);
    for header in &junk[1..] {
        assert_eq!(json_post(&app, &[*header]).await, 429, "{header:?}");
    }
    // A port or brackets don't make another client either.
    assert_eq!(json_post(&app, &[("x-forwarded-for", "127.0.0.21")]).await, 201);
    assert_eq!(json_post(&app, &[("x-forwarded-for", "127.0.0.21:4711")]).await, 429);
    assert_eq!(json_post(&app, &[("forwarded", "for=\"127.0.0.21:4711\"")]).await, 429);
    // Forwarded wins: X-Forwarded-For can't add a client to it.
    let mixed = [("forwarded", "for=127.0.0.21"), ("x-forwarded-for", "127.0.0.22")];
    assert_eq!(json_post(&app, &mixed).await, 429);
    assert_eq!(json_post(&app, &[("x-forwarded-for", "127.0.0.22")]).await, 201);
}

#[tokio::test]
async fn ipv6_clients_share_a_bucket_per_64() {
    let app = behind("127.0.0.1", |c| {
        c.send_rate = 0.01;
        c.send_burst = 1;
    })
    .await;
    assert_eq!(json_post(&app, &[("x-forwarded-for", "[2001:db8:0:1::1]:4711")]).await, 201);
    assert_eq!(json_post(&app, &[("x-forwarded-for", "2001:db8:0:1:ffff::2")]).await, 429, "same /64");
    assert_eq!(json_post(&app, &[("forwarded", "for=\"[2001:db8:0:2::1]\"")]).await, 201, "another /64");
    assert_eq!(json_post(&app, &[("x-forwarded-for", "::ffff:127.0.0.9")]).await, 201);
    assert_eq!(json_post(&app, &[("x-forwarded-for", "127.0.0.9")]).await, 429, "mapped is IPv4");
}

#[tokio::test]
async fn forwarding_headers_from_a_peer_that_is_not_trusted_are_ignored() {
    // The proxy is 127.0.0.2; our requests come from 127.0.0.1.
    let app = behind("127.0.0.2", |c| {
        c.send_rate = 0.01;
        c.send_burst = 1;
    })
    .await;
    assert_eq!(json_post(&app, &[("x-forwarded-for", "127.0.0.31")]).await, 201);
    assert_eq!(json_post(&app, &[("x-forwarded-for", "127.0.0.32")]).await, 429);
    assert_eq!(json_post(&app, &[("forwarded", "for=127.0.0.33")]).await, 429);
    let from_proxy = client_from("127.0.0.2");
    let response = from_proxy
        .post(app.url("/send"))
        .header("x-forwarded-for", "127.0.0.34")
        .json(&serde_json::json!({ "author": "ana", "text": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the trusted proxy's client has its own bucket");
}

/// The headers a proxy on port 8080 sends along with a browser's post.
fn proxied(app: &TestApp, origin: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("host", app.addr.to_string()),
        ("x-forwarded-for", "127.0.0.41".to_owned()),
        ("x-forwarded-proto", "http".to_owned()),
        ("x-forwarded-host", "127.0.0.1:8080".to_owned()),
        ("origin", origin.to_owned()),
    ]
}

async fn post_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
) -> reqwest::Response {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser_post(client, url, &headers).await
}

#[tokio::test]
async fn a_browser_post_through_a_trusted_proxy_passes_the_cross_site_check() {
    let app = behind("127.0.0.1", |_| {}).await;
    let ok = post_with(&app.client, &app.url("/send"), &proxied(&app, "http://127.0.0.1:8080")).await;
    assert_eq!(ok.status(), 303, "{:?}", ok.text().await);

    let foreign = post_with(&app.client, &app.url("/send"), &proxied(&app, "http://127.0.0.1:9090")).await;
    assert_eq!(foreign.status(), 403);
    let page = foreign.text().await.unwrap();
    assert!(page.contains("cross-site request refused") && page.contains("http://127.0.0.1:9090"), "{page}");

    // The very same headers from a peer that is not the proxy: only Host counts.
    let stranger = client_from("127.0.0.2");
    let spoofed = post_with(&stranger, &app.url("/send"), &proxied(&app, "http://127.0.0.1:8080")).await;
    assert_eq!(spoofed.status(), 403);
    assert_eq!(app.history("general").await.len(), 1);

    // /typing is judged the same way.
    let typing = |client: reqwest::Client, origin| {
        let headers = proxied(&app, origin);
        let url = app.url("/typing");
        async move {
            let mut request = client.post(url).form(&FORM);
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(typing(app.client.clone(), "http://127.0.0.1:8080").await, 204);
    assert_eq!(typing(app.client.clone(), "http://127.0.0.1:9090").await, 403);
    assert_eq!(typing(stranger, "http://127.0.0.1:8080").await, 403);
}

#[tokio::test]
async fn the_public_url_names_the_site_posts_must_come_from() {
    let url: PublicUrl = "http://127.0.0.1:8080/chat".parse().unwrap();
    let app = TestApp::spawn_with(move |c| c.public_url = Some(url)).await;
    let send = app.url("/send");
    let from = |origin: &'static str| [("origin", origin)];
    assert_eq!(browser_post(&app.client, &send, &from("http://127.0.0.1:8080")).await.status(), 303);
    let own_host = format!("http://{}", app.addr);
    let refused = browser_post(&app.client, &send, &[("origin", own_host.as_str())]).await;
    assert_eq!(refused.status(), 403, "the public URL, not Host, is the site");
    assert_eq!(browser_post(&app.client, &send, &from("https://127.0.0.1:8080")).await.status(), 403);
}

/// A real nginx on a free loopback port in front of `upstream`, with the headers the
/// README's recipe sets; stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(upstream: SocketAddr) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr;
             events {{ worker_connections 64; }}
             http {{
               access_log off;
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
               server {{
                 listen 127.0.0.1:{port};
                 location / {{
                   proxy_pass http://{upstream};
                   proxy_http_version 1.1;
                   proxy_set_header Connection \"\";
                   proxy_set_header Host $http_host;
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                   proxy_set_header X-Forwarded-Proto $scheme;
                   proxy_set_header X-Forwarded-Host $http_host;
                 }}
               }}
             }}"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (apt-get install nginx)");
        let nginx = Self { child, port, _dir: dir };
        eventually("nginx listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn behind_nginx_browsers_can_post_and_each_has_its_own_bucket() {
    let app = behind("127.0.0.1", |c| {
        c.send_rate = 0.01;
        c.send_burst = 1;
    })
    .await;
    let nginx = Nginx::start(app.addr).await;
    let send = nginx.url("/send");
    let own_origin = format!("http://127.0.0.1:{}", nginx.port);

    // A browser on a plain-http page: Origin, no Sec-Fetch-Site.
    let ana = client_from("127.0.0.2");
    let posted = browser_post(&ana, &send, &[("origin", own_origin.as_str())]).await;
    assert_eq!(posted.status(), 303, "{:?}", posted.text().await);
    let again = browser_post(&ana, &send, &[("origin", own_origin.as_str())]).await;
    assert_eq!(again.status(), 429, "ana's bucket is spent");
    assert_eq!(again.headers()["retry-after"], "100");
    // Another browser has its own bucket, and what ana claims in a header changes nothing.
    let bob = client_from("127.0.0.3");
    assert_eq!(browser_post(&bob, &send, &[("origin", own_origin.as_str())]).await.status(), 303);
    let forged = [("origin", own_origin.as_str()), ("x-forwarded-for", "127.0.0.4")];
    assert_eq!(browser_post(&ana, &send, &forged).await.status(), 429);

    let carol = client_from("127.0.0.5");
    let evil = browser_post(&carol, &send, &[("origin", "http://evil.example")]).await;
    assert_eq!(evil.status(), 403);
    assert!(evil.text().await.unwrap().contains("http://evil.example"));
    assert_eq!(app.history("general").await.len(), 2);
}

#[tokio::test]
async fn the_old_flag_still_trusts_loopback_and_warns_at_start() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechat"))
        .args(["--listen", "127.0.0.1:0", "--store", "memory", "--trust-proxy"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = tokio::time::timeout(WAIT, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("WARN") {
                return line;
            }
        }
        panic!("ssechat exited without a warning");
    })
    .await
    .expect("a warning at start");
    assert!(warning.contains("--trust-proxy") && warning.contains("deprecated"), "{warning}");
    assert!(warning.contains("--trusted-proxy CIDR") && warning.contains("127.0.0.0/8,::1"), "{warning}");
}

#[tokio::test]
async fn bad_proxy_and_public_url_values_stop_the_start_with_a_clear_error() {
    let err = Server::try_start(&["--trusted-proxy", "127.0.0.1,10.0.0.0/33"]).await.err().unwrap();
    assert!(err.contains("\"10.0.0.0/33\" is not an IP address or CIDR range"), "{err}");
    let err = Server::try_start(&["--public-url", "chat.example:8080"]).await.err().unwrap();
    assert!(err.contains("\"chat.example:8080\" is not a public URL"), "{err}");
}
