//! Holding up under abuse: rate limits, stream caps, stalled readers, retries, forged
//! cross-site posts, security headers, CORS, metrics, readiness and draining.

use std::time::Duration;

use serde_json::{Value, json};
use ssechat::domain::RoomName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, WAIT, eventually};

fn post(app: &TestApp, body: Value) -> reqwest::RequestBuilder {
    app.client.post(app.url("/send")).json(&body)
}

fn hello() -> Value {
    json!({ "room": "general", "author": "ana", "text": "hello" })
}

#[tokio::test]
async fn sends_are_rate_limited_per_client() {
    let app = TestApp::spawn_with(|c| {
        c.send_rate = 0.5;
        c.send_burst = 3;
        c.trust_proxy = true;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(post(&app, hello()).send().await.unwrap().status(), 201);
    }
    let limited = post(&app, hello()).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "2");
    let body: Value = limited.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("slow down"), "{body}");
    assert_eq!(app.history("general").await.len(), 3, "the refused send stored nothing");
    // Behind the trusted proxy, another client has its own bucket.
    let other = post(&app, hello()).header("x-forwarded-for", "203.0.113.7").send().await.unwrap();
    assert_eq!(other.status(), 201);
}

#[tokio::test]
async fn forwarded_addresses_are_ignored_unless_the_proxy_is_trusted() {
    let app = TestApp::spawn_with(|c| {
        c.send_rate = 0.5;
        c.send_burst = 1;
    })
    .await;
    assert_eq!(post(&app, hello()).send().await.unwrap().status(), 201);
    let spoofed = post(&app, hello()).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    assert_eq!(spoofed.status(), 429, "a header can't buy a new bucket");
}

#[tokio::test]
async fn stream_caps_refuse_cleanly() {
    let app = TestApp::spawn_with(|c| {
        c.max_streams = Some(3);
        c.max_streams_per_client = 2;
        c.trust_proxy = true;
    })
    .await;
    let _a = app.subscribe("", &[]).await;
    let _b = app.subscribe("", &[]).await;
    let third = app.client.get(app.url("/events")).send().await.unwrap();
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("open streams"), "{body}");
    let _c = app.subscribe("", &[("x-forwarded-for", "203.0.113.1")]).await;
    let full =
        app.client.get(app.url("/events")).header("x-forwarded-for", "203.0.113.2").send().await.unwrap();
    assert_eq!(full.status(), 503);
    let body: Value = full.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("limit of 3 open streams"), "{body}");
    drop(_c);
    // A freed place is usable again (the server notices the close by itself).
    let events = app.client.get(app.url("/events")).header("x-forwarded-for", "203.0.113.2");
    eventually("a freed place", || async {
        events.try_clone().unwrap().send().await.unwrap().status() == 200
    })
    .await;
}

/// The process's resident memory, for the stalled-readers test.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn a_thousand_readers_that_stop_reading_are_cut_off_and_cost_nothing_to_the_rest() {
    let _heavy = crate::helpers::HEAVY.lock().await;
    let app = TestApp::spawn_with(|c| {
        c.stall_timeout = Duration::from_millis(500);
        c.buffer = 64;
    })
    .await;
    let room = RoomName::general();
    // Real sockets with tiny receive windows that ask for the stream and never read again.
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(app.addr).await.unwrap();
        // A few pipeline a request before their stream, which leaves the stream to hyper.
        let request: &[u8] = if i % 100 == 0 {
            b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /events HTTP/1.1\r\nhost: x\r\n\r\n"
        } else {
            b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n"
        };
        stream.write_all(request).await.unwrap();
        stalled.push(stream);
    }
    let mut reader = app.subscribe("", &[]).await;
    let b = app.id_base("general").await;
    eventually("all streams open", || async { app.state.hub.subscribers(&room) == 1001 }).await;
    let rss_before = rss_bytes();

    let text = "y".repeat(4000);
    let count = 150;
    for i in 1..=count {
        let body = json!({ "room": "general", "author": "ana", "text": text });
        assert_eq!(post(&app, body).send().await.unwrap().status(), 201);
        // The reader that reads keeps up, message by message.
        assert_eq!(reader.next_message().await.id, b + i);
    }
    // Every stalled reader is cut off; only the live one is left.
    eventually("stalled readers cut off", || async { app.state.hub.subscribers(&room) == 1 }).await;
    let grown = rss_bytes().saturating_sub(rss_before);
    // Unbounded buffering would be 1,000 x 600 KB; bounded is the room's channel and history.
    // The reading is the whole test process's, where other (lighter) tests run meanwhile:
    // the bound is a third of the unbounded figure, not what this server alone grows by.
    assert!(grown < 200 * 1024 * 1024, "memory grew by {} MiB", grown / 1024 / 1024);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let stalls: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ssechat_disconnects_total{reason=\"stall\"} "))
        .unwrap()
        .parse()
        .unwrap();
    // Every stream is counted once, on either path (the pipelined ones are hyper's).
    assert_eq!(stalls, 1000, "{metrics}");
    drop(stalled);
}

#[tokio::test]
async fn a_retried_send_is_stored_once() {
    let app = TestApp::spawn().await;
    let send = |key: &'static str| post(&app, hello()).header("idempotency-key", key).send();
    let first = send("abc-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let retry = send("abc-1").await.unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    // The same, through the body's client_id (what the page sends).
    let form = [("room", "general"), ("author", "ana"), ("text", "form"), ("client_id", "page-7")];
    assert_eq!(app.post_form("/send", &form).await.status(), 201);
    assert_eq!(app.post_form("/send", &form).await.status(), 200);
    assert_eq!(app.history("general").await.len(), 2);
    let bad = post(&app, hello()).header("idempotency-key", "has space").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "Idempotency-Key");
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let app = TestApp::spawn_with(|c| c.cors_origin = vec!["https://friend.example".into()]).await;
    let attempts = [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ];
    for (name, value) in attempts {
        let response = post(&app, hello()).header(name, value).send().await.unwrap();
        assert_eq!(response.status(), 403, "{name}: {value}");
        let typing =
            app.client.post(app.url("/typing")).header(name, value).json(&hello()).send().await.unwrap();
        assert_eq!(typing.status(), 403, "typing with {name}: {value}");
    }
    let browser = app
        .client
        .post(app.url("/send"))
        .header("accept", "text/html")
        .header("origin", "https://evil.example")
        .form(&[("room", "general"), ("author", "mallory"), ("text", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 403);
    assert!(browser.text().await.unwrap().contains("cross-site request refused"));
    assert!(app.history("general").await.is_empty());

    let own = app.addr.to_string();
    let same = post(&app, hello()).header("origin", format!("http://{own}")).send().await.unwrap();
    assert_eq!(same.status(), 201);
    let friend = post(&app, hello()).header("origin", "https://friend.example").send().await.unwrap();
    assert_eq!(friend.status(), 201, "a --cors-origin origin may post");
    let ok = post(&app, hello()).header("sec-fetch-site", "same-origin").send().await.unwrap();
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn responses_carry_security_headers_and_cors_is_off_by_default() {
    let app = TestApp::spawn().await;
    let page = app.get("/").await;
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" onload=") && !html.contains(" onclick="),
        "no inline script"
    );
    let stream = app.events("", &[]).await;
    assert_eq!(stream.headers["x-content-type-options"], "nosniff");

    let cross =
        app.client.get(app.url("/history")).header("origin", "https://other.example").send().await.unwrap();
    assert!(cross.headers().get("access-control-allow-origin").is_none());
    let allowed = TestApp::spawn_with(|c| c.cors_origin = vec!["https://friend.example".into()]).await;
    let response = allowed
        .client
        .get(allowed.url("/history"))
        .header("origin", "https://friend.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://friend.example");
    let response = allowed
        .client
        .get(allowed.url("/history"))
        .header("origin", "https://other.example")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
    let preflight = allowed
        .client
        .request(reqwest::Method::OPTIONS, allowed.url("/send"))
        .header("origin", "https://friend.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,idempotency-key")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let allowed_headers =
        preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed_headers.contains("idempotency-key"), "{allowed_headers}");
}

#[tokio::test]
async fn metrics_report_streams_messages_deliveries_limits_and_latency() {
    let app = TestApp::spawn_with(|c| {
        c.send_rate = 0.5;
        c.send_burst = 2;
        c.retain = Some(3);
    })
    .await;
    let mut a = app.subscribe("?room=general", &[]).await;
    let _b = app.subscribe("?room=dev", &[]).await;
    for _ in 0..2 {
        post(&app, hello()).send().await.unwrap();
        a.next_message().await;
    }
    assert_eq!(post(&app, hello()).send().await.unwrap().status(), 429);
    // An id this store never gave: reset.
    let never = app.id_base("general").await + 40;
    let _resumed = app.subscribe(&format!("?room=general&since={never}"), &[]).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "ssechat_open_streams{room=\"general\"} 2",
        "ssechat_open_streams{room=\"dev\"} 1",
        "ssechat_messages_stored_total 2",
        "ssechat_rate_limited_total{limit=\"send\"} 1",
        "ssechat_resets_total{reason=\"unknown_id\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let value = |name: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().parse().unwrap()
    };
    assert!(value("ssechat_deliveries_total ") >= 2.0);
    assert!(value("ssechat_publish_flush_seconds_count ") >= 2.0);
}

#[tokio::test]
async fn readiness_turns_503_and_streams_drain_with_jittered_retries() {
    let app = TestApp::spawn_with(|c| c.drain_timeout = Duration::from_millis(1500)).await;
    assert_eq!(app.get("/readyz").await.text().await.unwrap(), "ready");
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(app.subscribe("", &[]).await);
    }
    let (client, url, events) = (app.client.clone(), app.url("/readyz"), app.url("/events"));
    let stopping = tokio::spawn(app.stop());
    // While draining, the server still answers: not ready, and no new streams.
    let ready = tokio::time::timeout(WAIT, async {
        loop {
            let response = client.get(&url).send().await.unwrap();
            if response.status() == 503 {
                return response.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(ready, "shutting down");
    assert_eq!(client.get(&events).send().await.unwrap().status(), 503);
    // Each stream is told to come back after a random while, then ends.
    let mut retries = Vec::new();
    for stream in &mut streams {
        let block = stream.next_block().await.expect("a retry before the end");
        retries.push(block.retry.expect("retry:"));
        stream.expect_end().await;
    }
    assert!(retries.iter().all(|&r| (3000..=4500).contains(&r)), "{retries:?}");
    retries.dedup();
    assert!(retries.len() > 1, "jittered, not all the same: {retries:?}");
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

/// The real binary with 64 file descriptors: streams are refused with a message before it
/// runs out, and when connections still exhaust it, accept waits instead of spinning.
#[tokio::test]
async fn running_out_of_file_descriptors_is_handled() {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {} --listen 127.0.0.1:0 --store memory --log error --max-streams-per-client 1000",
            env!("CARGO_BIN_EXE_ssechat")
        ))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await.unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap().to_owned();

    // The stream cap (open files minus 256, at least 16) refuses before descriptors run out.
    let mut sockets = Vec::new();
    let mut refused = 0;
    for _ in 0..30 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        if &head == b"HTTP/1.1 503" {
            refused += 1;
        }
        sockets.push(s);
    }
    assert_eq!(refused, 30 - 16, "streams over the cap get 503");
    // More connections than descriptors: the server must wait, not spin.
    let mut flood = Vec::new();
    for _ in 0..80 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(&addr)).await
        {
            flood.push(s);
        }
    }
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu() - before;
    assert!(spent < 30, "accept loop used {spent} ticks in a second: spinning");
    drop(flood);
    drop(sockets);
    // And it recovers.
    let health = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(response) = reqwest::get(format!("http://{addr}/healthz")).await {
                return response.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(health, "ok");
}
