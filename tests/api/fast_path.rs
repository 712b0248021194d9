//! Every plain HTTP/1.1 stream is served straight on its socket, whether it is the first
//! request on its connection or comes after others (as a browser's EventSource does after
//! the page load). Other requests go to hyper one at a time, and the connection comes back.
//! Whichever way a stream comes in, a client sees the same thing.

use std::collections::BTreeMap;

use ssechat::domain::RoomName;
use tower::ServiceExt;

use crate::helpers::{TestApp, eventually};
use crate::raw::{Answer, Raw};

const STREAM: &str = "GET /events?room=general HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";

/// The headers a stream's response carries, but for `date` (only hyper sends it).
fn stream_head(answer: &Answer) -> BTreeMap<String, String> {
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut headers = answer.headers.clone();
    headers.remove("date");
    headers
}

#[tokio::test]
async fn every_way_in_gets_the_same_stream_on_the_fast_path() {
    let app = TestApp::spawn().await;
    let mut fresh = Raw::connect(app.addr).await;
    fresh.send(STREAM).await;
    let fresh = fresh.response().await;

    // A browser: the page, then the EventSource on the same connection.
    let mut reused = Raw::connect(app.addr).await;
    reused.send("GET /rooms/general HTTP/1.1\r\nhost: x\r\naccept: text/html\r\n\r\n").await;
    assert_eq!(reused.response().await.status, 200);
    reused.send(STREAM).await;
    let after_page = reused.response().await;

    // After a post with a body, on the same connection.
    let mut posted = Raw::connect(app.addr).await;
    let form = "room=general&author=ana&text=hi";
    posted
        .send(&format!(
            "POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
            form.len()
        ))
        .await;
    assert_eq!(posted.response().await.status, 201);
    posted.send(STREAM).await;
    let after_post = posted.response().await;

    // The router itself, as hyper serves streams it is handed (CORS, unusual connections).
    let request = axum::http::Request::get("/events?room=general")
        .header("accept", "text/event-stream")
        .body(axum::body::Body::empty())
        .unwrap();
    let routed = ssechat::router(app.state.clone()).oneshot(request).await.unwrap();
    let mut routed_head = BTreeMap::<String, String>::new();
    for name in routed.headers().keys() {
        let values: Vec<&str> = routed.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
        routed_head.insert(name.to_string(), values.join(", "));
    }
    routed_head.insert("transfer-encoding".into(), "chunked".into()); // hyper's framing

    let expected = stream_head(&fresh);
    assert_eq!(stream_head(&after_page), expected);
    assert_eq!(stream_head(&after_post), expected);
    assert_eq!(routed_head, expected);
    for answer in [&fresh, &after_page, &after_post] {
        // hyper would add `date`: its absence shows the stream is on the fast path.
        assert!(!answer.headers.contains_key("date"), "{answer:?}");
    }
    assert_eq!(app.state.hub.subscribers(&RoomName::general()), 4);
}

#[tokio::test]
async fn one_connection_serves_page_assets_post_and_stream_like_a_browser() {
    let app = TestApp::spawn().await;
    let mut browser = Raw::connect(app.addr).await;
    for (request, status) in [
        ("GET /rooms/general HTTP/1.1\r\nhost: x\r\naccept: text/html\r\n\r\n", 200),
        ("GET /assets/chat.css HTTP/1.1\r\nhost: x\r\n\r\n", 200),
        ("GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n", 404),
        (
            "POST /send HTTP/1.1\r\nhost: x\r\naccept: text/html\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 20\r\n\r\nauthor=ana&text=hey!",
            303,
        ),
    ] {
        browser.send(request).await;
        assert_eq!(browser.response().await.status, status, "{request}");
    }
    browser.send("GET /events HTTP/1.1\r\nhost: x\r\nlast-event-id: 0\r\n\r\n").await;
    assert_eq!(browser.response().await.status, 200);
    assert!(browser.fill_until(b"\"text\":\"hey!\"").await, "the post arrives: {}", browser.text());
}

fn metric(text: &str, name: &str) -> u64 {
    let line = text.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    line.trim().parse().unwrap()
}

#[tokio::test]
async fn streams_and_refusals_are_counted_once_whichever_way_they_come_in() {
    let app = TestApp::spawn_with(|c| c.max_streams_per_client = 1).await;
    let mut first = Raw::connect(app.addr).await;
    first.send(STREAM).await;
    assert_eq!(first.response().await.status, 200);

    let mut fresh = Raw::connect(app.addr).await;
    fresh.send(STREAM).await;
    assert_eq!(fresh.response().await.status, 429);
    let mut reused = Raw::connect(app.addr).await;
    reused.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(reused.response().await.status, 200);
    reused.send(STREAM).await;
    assert_eq!(reused.response().await.status, 429);
    // The refused connection is still good for the next request.
    reused.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(reused.response().await.body, "ok");

    drop(first);
    eventually("the stream ended", || async { app.state.hub.subscribers(&RoomName::general()) == 0 }).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(metric(&metrics, "ssechat_rate_limited_total{limit=\"streams\"} "), 2);
    assert_eq!(metric(&metrics, "ssechat_disconnects_total{reason=\"client\"} "), 1);
}

#[tokio::test]
async fn pipelined_and_old_requests_are_each_answered() {
    let app = TestApp::spawn().await;
    let mut pipelined = Raw::connect(app.addr).await;
    // Hyper is given one request at a time, however fast the next one comes: each is
    // answered, and none is answered with a close.
    let post = "POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 16\r\n\r\nauthor=a&text=hi";
    pipelined
        .send(&format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n{post}GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n"
        ))
        .await;
    for expected in [200, 201, 200] {
        let answer = pipelined.response().await;
        assert_eq!(answer.status, expected, "{answer:?}");
        assert!(!answer.headers.contains_key("connection"), "{answer:?}");
    }
    pipelined.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(pipelined.response().await.body, "ok");

    let mut old = Raw::connect(app.addr).await;
    old.send("GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.response().await.body, "ok");
    assert!(old.closed().await, "HTTP/1.0 without keep-alive closes");
}

#[tokio::test]
async fn a_client_asking_to_close_gets_its_answer_then_the_close() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    let answer = raw.response().await;
    assert_eq!(answer.body, "ok");
    assert_eq!(answer.headers.get("connection").map(String::as_str), Some("close"));
    assert!(raw.closed().await);
}

#[tokio::test]
async fn a_body_the_handler_never_read_is_never_taken_for_a_request() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    // Refused before the body is read (415); the body holds what looks like a request.
    let sneaky = "GET /events HTTP/1.1\r\nhost: x\r\n\r\n";
    raw.send(&format!(
        "POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{sneaky}",
        sneaky.len()
    ))
    .await;
    assert_eq!(raw.response().await.status, 415);
    raw.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    // Either the body was skipped and the connection goes on, or it closed: never a stream.
    if raw.fill_until(b"\r\n\r\n").await {
        assert_eq!(raw.response().await.body, "ok");
    }
    assert_eq!(app.state.hub.subscribers(&RoomName::general()), 0);
}

#[tokio::test]
async fn a_chunked_post_leaves_the_connection_to_hyper_which_still_streams() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    let form = "author=ana&text=chunked";
    raw.send(&format!(
        "POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{form}\r\n0\r\n\r\n",
        form.len()
    ))
    .await;
    assert_eq!(raw.response().await.status, 201);
    raw.send("GET /events HTTP/1.1\r\nhost: x\r\nlast-event-id: 0\r\n\r\n").await;
    let answer = raw.response().await;
    assert_eq!(answer.status, 200);
    assert!(raw.fill_until(b"\"text\":\"chunked\"").await);
}

#[tokio::test]
async fn a_bad_stream_request_gets_the_routers_error() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET /events?room=Bad HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = raw.response().await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("\"field\":\"room\""), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_subscription_at_once() {
    let app = TestApp::spawn().await;
    let room = RoomName::general();
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    raw.response().await;
    raw.send(STREAM).await;
    raw.response().await;
    assert_eq!(app.state.hub.subscribers(&room), 1);
    drop(raw);
    // No message and no heartbeat is sent: the server notices the close by itself.
    eventually("the subscription dropped", || async { app.state.hub.subscribers(&room) == 0 }).await;
}

#[tokio::test]
async fn messages_arrive_as_chunks_on_the_fast_path() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET /events HTTP/1.1\r\nhost: x\r\n\r\n").await;
    raw.response().await;
    assert!(raw.fill_until(b"retry: 3000\n\n\r\n").await);
    raw.buffered.clear();
    let sent = app.say("general", "ana", "hi").await;
    let frame =
        format!("id: {}\nevent: message\ndata: {}\n\n", sent.id, serde_json::to_string(&sent).unwrap());
    let expected = format!("{:x}\r\n{frame}\r\n", frame.len());
    assert!(raw.fill_until(b"\n\n\r\n").await);
    assert_eq!(raw.text(), expected);
}

#[tokio::test]
async fn one_keep_alive_connection_carries_a_hundred_posts_and_pages() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(app.addr).await;
    for i in 0..100 {
        let form = format!("author=ana&text=m{i}");
        raw.send(&format!(
            "POST /send HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
            form.len()
        ))
        .await;
        assert_eq!(raw.response().await.status, 201, "post {i}");
        if i % 10 == 0 {
            raw.send("GET / HTTP/1.1\r\nhost: x\r\naccept: text/html\r\n\r\n").await;
            assert_eq!(raw.response().await.status, 200, "page after post {i}");
        }
    }
}
