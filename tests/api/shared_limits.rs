//! The send limit in cluster mode: every node takes from the client's one bucket in Redis.

use std::time::Instant;

use serde_json::{Value, json};
use ssechat::config::StoreUrl;
use ssechat::limits::parse_trusted_proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, WAIT};
use crate::process::RedisServer;

/// A node on `redis` behind a trusted proxy at 127.0.0.1 (where our requests come from).
async fn node(redis: &RedisServer, rate: f64, burst: u32) -> TestApp {
    let url = redis.url.clone();
    TestApp::spawn_with(move |c| {
        c.store = StoreUrl::Redis(url);
        c.send_rate = rate;
        c.send_burst = burst;
        c.trusted_proxy = vec![parse_trusted_proxy("127.0.0.1").unwrap()];
    })
    .await
}

/// Posts through `node` as the client `forwarded_for` (or as ourselves, with `None`).
async fn post(node: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = node
        .client
        .post(node.url("/send"))
        .json(&json!({ "room": "general", "author": "ana", "text": "hi" }));
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn one_client_posting_through_three_nodes_gets_the_documented_rate_not_three_times_it() {
    let redis = RedisServer::start(false);
    let (rate, burst) = (0.5, 5);
    let nodes =
        [node(&redis, rate, burst).await, node(&redis, rate, burst).await, node(&redis, rate, burst).await];
    let started = Instant::now();
    let mut accepted = 0;
    for i in 0..30 {
        let response = post(&nodes[i % 3], None).await;
        match response.status().as_u16() {
            201 => accepted += 1,
            429 => {
                let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&retry_after), "one token every 2 s: Retry-After {retry_after}");
            }
            other => panic!("unexpected {other}: {:?}", response.text().await),
        }
    }
    let allowed = f64::from(burst) + (rate * started.elapsed().as_secs_f64()).ceil();
    assert!(accepted >= burst, "the burst is allowed: {accepted}");
    assert!(f64::from(accepted) <= allowed, "accepted {accepted}, at most {allowed} allowed");
    let history = nodes[0].history("general").await;
    assert_eq!(history.len() as u32, accepted, "refused sends stored nothing");
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_have_their_own_buckets_on_every_node() {
    let redis = RedisServer::start(false);
    let (a, b, c) = (node(&redis, 0.01, 2).await, node(&redis, 0.01, 2).await, node(&redis, 0.01, 2).await);
    assert_eq!(post(&a, Some("127.0.0.2")).await.status(), 201);
    assert_eq!(post(&b, Some("127.0.0.2")).await.status(), 201);
    let refused = post(&c, Some("127.0.0.2")).await;
    assert_eq!(refused.status(), 429, "127.0.0.2 spent its burst on the other nodes");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("slow down"), "{body}");
    assert_eq!(post(&c, Some("127.0.0.3")).await.status(), 201, "127.0.0.3 has its own bucket");
    assert_eq!(post(&a, Some("127.0.0.3")).await.status(), 201);
    assert_eq!(post(&b, Some("127.0.0.3")).await.status(), 429);
    assert_eq!(post(&b, None).await.status(), 201, "the proxy itself is a third client");
}

#[tokio::test]
async fn without_redis_a_send_is_refused_with_503() {
    let mut redis = RedisServer::start(false);
    let app = node(&redis, 5.0, 30).await;
    assert_eq!(post(&app, None).await.status(), 201);
    redis.kill();
    let response = post(&app, None).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nothing was saved, please retry"), "{body}");
}

#[tokio::test]
async fn a_client_over_the_limit_is_refused_before_it_sends_its_body() {
    let redis = RedisServer::start(false);
    let app = node(&redis, 0.01, 1).await;
    assert_eq!(post(&app, None).await.status(), 201);
    // Headers that announce a body, and no body: only an answer that doesn't wait for it comes.
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head =
        "POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(WAIT, socket.read(&mut answer)).await.expect("answered without the body");
    let answer = String::from_utf8_lossy(&answer[..read.unwrap()]).to_lowercase();
    assert!(answer.starts_with("http/1.1 429") && answer.contains("retry-after: 100"), "{answer}");
}
