//! Connections as an attacker uses them: held open in thousands, silent, trickling heads and
//! bodies. One client can't take the server's descriptors, and every deadline is whole.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::{TestApp, WAIT};
use crate::raw::Raw;

fn post(form: &str) -> String {
    format!(
        "POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
        form.len()
    )
}

/// What an honest client on 127.0.0.1 must get while the attack goes on: each step within 1 s.
async fn honest_round(app: &TestApp, stream: &mut crate::helpers::EventStream, i: usize) {
    let second = Duration::from_secs(1);
    let health = tokio::time::timeout(second, app.get("/healthz")).await.expect("/healthz within 1 s");
    assert_eq!(health.status(), 200);
    let body = json!({"room": "general", "author": "ana", "text": format!("still here {i}")});
    let sent = tokio::time::timeout(second, app.post_json(body)).await.expect("/send within 1 s");
    assert_eq!(sent.status(), 201);
    let message = tokio::time::timeout(second, stream.next_message()).await.expect("live within 1 s");
    assert_eq!(message.text.as_str(), format!("still here {i}"));
}

#[tokio::test]
async fn one_address_holding_thousands_of_connections_cannot_shut_others_out() {
    let _heavy = crate::helpers::HEAVY.lock().await;
    let app = TestApp::spawn_with(|c| {
        c.body_timeout = Duration::from_secs(60);
        c.max_connections_per_client = ssechat::Config::defaults().max_connections_per_client;
    })
    .await;
    let mut stream = app.subscribe("", &[]).await;
    // 5,000 silent connections from one address, then 500 slow bodies from another.
    let mut held = Vec::new();
    for _ in 0..5_000 {
        held.extend(Raw::connect_from("127.0.0.2", app.addr).await.ok());
    }
    honest_round(&app, &mut stream, 0).await;
    let slow_head = "POST /typing HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 65536\r\n\r\nr";
    for _ in 0..500 {
        if let Ok(mut raw) = Raw::connect_from("127.0.0.3", app.addr).await {
            let _ = raw.socket.write_all(slow_head.as_bytes()).await;
            held.push(raw);
        }
    }
    for i in 1..=5 {
        honest_round(&app, &mut stream, i).await;
    }
    // Each address got its 256 connections; the rest were refused at once.
    let open = app.state.connections.open();
    assert!(open <= 2 * 256 + 8, "{open} connections open");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let refused =
        metrics.lines().find_map(|l| l.strip_prefix("ssechat_rate_limited_total{limit=\"connections\"} "));
    assert!(refused.unwrap().parse::<u64>().unwrap() >= 4_500, "{metrics}");
    drop(held);
}

#[tokio::test]
async fn a_connection_over_the_clients_cap_is_told_why() {
    let app = TestApp::spawn_with(|c| c.max_connections_per_client = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Raw::connect_from("127.0.0.2", app.addr).await.unwrap());
    }
    let mut refused = Raw::connect_from("127.0.0.2", app.addr).await.unwrap();
    let answer = refused.response().await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["connection"], "close");
    assert!(answer.body.contains("3 open connections"), "{}", answer.body);
    // Another address is another client.
    let mut other = Raw::connect_from("127.0.0.3", app.addr).await.unwrap();
    other.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(other.response().await.body, "ok");
}

#[tokio::test]
async fn a_trusted_proxy_is_not_one_client_but_the_total_cap_holds() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections_per_client = 2;
        c.max_connections = Some(6);
        c.trusted_proxy = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut raw = Raw::connect(app.addr).await;
        raw.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(raw.response().await.body, "ok");
        held.push(raw);
    }
    let mut over = Raw::connect_from("127.0.0.2", app.addr).await.unwrap();
    assert_eq!(over.response().await.status, 503);
}

#[tokio::test]
async fn a_silent_or_trickling_head_gets_no_more_than_the_header_timeout() {
    let app = TestApp::spawn_with(|c| c.header_timeout = Duration::from_millis(300)).await;
    let mut silent = Raw::connect(app.addr).await;
    assert!(silent.closed().await, "a connection that says nothing is closed");

    // A byte every 50 ms would take 10 s; the deadline is for the whole head, not per byte.
    let mut trickle = Raw::connect(app.addr).await;
    let head = "GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: ".to_owned() + &"p".repeat(200);
    let answer = tokio::time::timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for byte in head.bytes() {
            tick.tick().await;
            if trickle.socket.write_all(&[byte]).await.is_err() {
                break;
            }
        }
    });
    answer.await.expect("the trickle ends");
    let answer = trickle.response().await;
    assert_eq!(answer.status, 408);
    assert!(trickle.closed().await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| c.idle_timeout = Duration::from_millis(300)).await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(raw.response().await.body, "ok");
    assert!(raw.closed().await, "closed once idle");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes() {
    let app = TestApp::spawn_with(|c| c.body_timeout = Duration::from_millis(300)).await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\nauthor=ana").await;
    let answer = raw.response().await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.headers["connection"], "close");
    assert!(answer.body.contains("took longer than"), "{}", answer.body);
    // It means it: the rest of the body and another request get nothing more.
    raw.send(&format!("{}GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", "x".repeat(90))).await;
    assert!(raw.closed().await);
    assert!(!raw.text().contains("ok"), "{}", raw.text());
}

#[tokio::test]
async fn heads_with_bare_line_feeds_are_answered_at_once() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET /healthz HTTP/1.1\nhost: x\n\n").await;
    assert_eq!(raw.response().await.body, "ok");
    raw.send("GET /events HTTP/1.1\nhost: x\n\n").await;
    assert_eq!(raw.response().await.status, 200);
    assert!(raw.fill_until(b"retry:").await);
}

#[tokio::test]
async fn a_refused_post_keeps_its_connection_or_says_close() {
    let app = TestApp::spawn_with(|c| {
        c.send_rate = 0.001;
        c.send_burst = 1;
    })
    .await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send(&post("author=ana&text=one")).await;
    assert_eq!(raw.response().await.status, 201);
    // Refused before its body is read: the body is skipped and the connection goes on.
    raw.send(&post("author=ana&text=two")).await;
    let refused = raw.response().await;
    assert_eq!(refused.status, 429);
    assert!(!refused.headers.contains_key("connection"), "{refused:?}");
    raw.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(raw.response().await.body, "ok");
    // A body larger than anything read here: refused, and said so before closing.
    let big = format!("author=ana&text={}", "x".repeat(100_000));
    let mut raw = Raw::connect(app.addr).await;
    raw.send(&post(&big)).await;
    let too_large = raw.response().await;
    assert_eq!(too_large.status, 429);
    assert_eq!(too_large.headers["connection"], "close");
    assert!(raw.closed().await);
}

#[tokio::test]
async fn options_is_a_method_like_any_other_while_cors_is_off() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("OPTIONS /send HTTP/1.1\r\nhost: x\r\norigin: http://a.example\r\naccess-control-request-method: POST\r\n\r\n").await;
    assert_eq!(raw.response().await.status, 405);
    let app = TestApp::spawn_with(|c| c.cors_origin = vec!["http://a.example".into()]).await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("OPTIONS /send HTTP/1.1\r\nhost: x\r\norigin: http://a.example\r\naccess-control-request-method: POST\r\n\r\n").await;
    let preflight = raw.response().await;
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.headers["access-control-allow-origin"], "http://a.example");
}
