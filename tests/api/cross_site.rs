//! Other sites: pages that open our streams under names of their choosing, and DNS
//! rebinding (a page whose name now points at our loopback address).

use serde_json::json;

use crate::floods::wait_for_presence;
use crate::helpers::TestApp;
use crate::raw::{Answer, Raw};

/// The server as started by default: loopback, no `--allowed-host` (tests allow `x`).
async fn loopback_app() -> TestApp {
    TestApp::spawn_with(|c| c.allowed_host.clear()).await
}

/// `GET path` with `headers` (a `host` among them), over a fresh connection.
async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut raw = Raw::connect(app.addr).await;
    let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    raw.send(&format!("GET {path} HTTP/1.1\r\n{headers}\r\n")).await;
    raw.response().await
}

/// Asserts the answer is the `421` that names `host` and the flag to allow it.
fn assert_misdirected(answer: &Answer, host: &str) {
    assert_eq!(answer.status, 421, "{answer:?}");
    let flag = format!("--allowed-host {host}");
    assert!(answer.body.contains(&format!("\\\"{host}\\\"")) && answer.body.contains(&flag), "{answer:?}");
}

#[tokio::test]
async fn only_pages_of_this_site_name_their_readers() {
    let app = TestApp::spawn().await;
    let own = app.base.as_str();
    let evil = "http://evil.example";
    let cases: [(&str, Vec<(&str, &str)>); 7] = [
        ("curl", vec![]),
        ("same-origin", vec![("sec-fetch-site", "same-origin"), ("origin", own)]),
        ("typed-url", vec![("sec-fetch-site", "none")]),
        ("plain-http-page", vec![("origin", own)]),
        ("cross", vec![("sec-fetch-site", "cross-site"), ("origin", evil)]),
        ("sibling", vec![("sec-fetch-site", "same-site"), ("origin", "http://other.localhost")]),
        ("old-browser", vec![("origin", evil)]),
    ];
    let mut streams = Vec::new();
    for (name, headers) in &cases {
        streams.push(app.subscribe(&format!("?room=general&name={name}"), headers).await);
    }
    let named = ["curl", "plain-http-page", "same-origin", "typed-url"];
    wait_for_presence(&app, json!({ "names": named, "anonymous": 3 })).await;
    // Counted as anonymous, the cross-site streams still get every message.
    let sent = app.say("general", "ana", "hello").await;
    for stream in &mut streams {
        assert_eq!(stream.next_message().await, sent);
    }
}

/// With CORS on, a stream with an `Origin` is served by the router, not on its socket.
#[tokio::test]
async fn an_origin_allowed_by_cors_names_its_readers_and_others_do_not() {
    let app = TestApp::spawn_with(|c| c.cors_origin = vec!["https://friend.example".into()]).await;
    let friend = [("sec-fetch-site", "cross-site"), ("origin", "https://friend.example")];
    let _friend = app.subscribe("?room=general&name=friend", &friend).await;
    let evil = [("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")];
    let _evil = app.subscribe("?room=general&name=admin", &evil).await;
    let own = app.base.clone();
    let _own = app.subscribe("?room=general&name=own", &[("origin", &own)]).await;
    wait_for_presence(&app, json!({ "names": ["friend", "own"], "anonymous": 1 })).await;
}

#[tokio::test]
async fn on_loopback_a_foreign_host_is_misdirected_on_every_path() {
    let app = loopback_app().await;
    let evil = [("host", "evil.example:3000")];
    assert_misdirected(&get(&app, "/healthz", &evil).await, "evil.example");
    // A stream request, which the connection would serve on its socket.
    assert_misdirected(&get(&app, "/events?room=general", &evil).await, "evil.example");
    let page = get(&app, "/rooms/general", &[("host", "evil.example"), ("accept", "text/html")]).await;
    assert_eq!(page.status, 421);
    assert!(page.body.contains("--allowed-host evil.example"), "{page:?}");
    let mut raw = Raw::connect(app.addr).await;
    let form = "author=mallory&text=hi";
    raw.send(&format!(
        "POST /send HTTP/1.1\r\nhost: evil.example\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: {}\r\n\r\n{form}",
        form.len()
    ))
    .await;
    assert_misdirected(&raw.response().await, "evil.example");
    assert!(app.history("general").await.is_empty());

    // No Host at all: no browser sent it.
    let mut old_tool = Raw::connect(app.addr).await;
    old_tool.send("GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(old_tool.response().await.status, 200);

    let port = app.addr.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "LocalHost".into(),
    ] {
        assert_eq!(get(&app, "/healthz", &[("host", &host)]).await.status, 200, "{host}");
        let stream = get(&app, "/events?room=general", &[("host", &host)]).await;
        assert_eq!(stream.status, 200, "{host}");
        assert!(stream.headers["content-type"].starts_with("text/event-stream"));
    }
}

#[tokio::test]
async fn named_hosts_and_the_public_urls_host_are_answered() {
    let app = TestApp::spawn_with(|c| {
        c.allowed_host = vec!["chat.example".into()];
        c.public_url = Some("https://public.example".parse().unwrap());
    })
    .await;
    for host in ["chat.example", "CHAT.example:8080", "public.example", "localhost"] {
        assert_eq!(get(&app, "/healthz", &[("host", host)]).await.status, 200, "{host}");
    }
    let refused = get(&app, "/healthz", &[("host", "evil.example")]).await;
    assert_misdirected(&refused, "evil.example");
    assert!(refused.body.contains("chat.example, public.example"), "{refused:?}");
}

#[tokio::test]
async fn on_another_address_any_host_is_answered_unless_some_are_named() {
    // What counts is the address the server was told to listen on.
    let open = TestApp::spawn_with(|c| {
        c.listen = "0.0.0.0:0".into();
        c.allowed_host.clear();
    })
    .await;
    assert_eq!(get(&open, "/healthz", &[("host", "anything.example")]).await.status, 200);
    let named = TestApp::spawn_with(|c| {
        c.listen = "0.0.0.0:0".into();
        c.allowed_host = vec!["chat.example".into()];
    })
    .await;
    assert_eq!(get(&named, "/healthz", &[("host", "chat.example")]).await.status, 200);
    assert_misdirected(&get(&named, "/healthz", &[("host", "anything.example")]).await, "anything.example");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_host_is_judged() {
    let app = TestApp::spawn_with(|c| {
        c.allowed_host.clear();
        c.trusted_proxy = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let own = app.addr.to_string();
    for (forwarded_host, status) in [("evil.example", 421), ("localhost:8080", 200)] {
        let headers = [("host", own.as_str()), ("x-forwarded-host", forwarded_host)];
        assert_eq!(get(&app, "/events?room=general", &headers).await.status, status, "{forwarded_host}");
    }
    let rfc = [("host", own.as_str()), ("forwarded", "for=203.0.113.7;host=evil.example")];
    assert_misdirected(&get(&app, "/healthz", &rfc).await, "evil.example");

    // From a peer that is not a trusted proxy, the forwarding headers are ignored.
    let untrusted = loopback_app().await;
    let claims = [("host", "localhost"), ("x-forwarded-host", "evil.example")];
    assert_eq!(get(&untrusted, "/healthz", &claims).await.status, 200);
}

/// The real binary, as started by default on loopback, with hosts named in the environment.
#[tokio::test]
async fn the_binary_takes_allowed_hosts_comma_separated_from_the_environment() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechat"))
        .args(["--listen", "127.0.0.1:0", "--store", "memory", "--log", "error"])
        .env("SSECHAT_ALLOWED_HOST", "a.example,B.example")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(crate::helpers::WAIT, out.read_line(&mut line)).await.unwrap().unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap().to_owned();
    for (host, status) in
        [("a.example", 200), ("b.example:3000", 200), ("localhost", 200), ("c.example", 421)]
    {
        let mut raw = Raw::connect(addr.as_str()).await;
        raw.send(&format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n")).await;
        assert_eq!(raw.response().await.status, status, "{host}");
    }
}
