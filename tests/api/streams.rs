//! Live delivery and the three stream formats.

use serde_json::json;
use ssechat::domain::Message;

use crate::helpers::{TestApp, WAIT};

#[tokio::test]
async fn two_subscribers_both_get_a_message_posted_by_a_third_client() {
    let app = TestApp::spawn().await;
    let mut a = app.subscribe("?room=general", &[]).await;
    let mut b = app.subscribe("?room=general", &[]).await;
    let sent = app.say("general", "ana", "hello").await;
    assert_eq!(a.next_message().await, sent);
    assert_eq!(b.next_message().await, sent);
}

#[tokio::test]
async fn rooms_are_separate() {
    let app = TestApp::spawn().await;
    let mut dev = app.subscribe("?room=dev", &[]).await;
    let mut general = app.subscribe("", &[]).await; // no room: general
    let b = app.id_base("dev").await;
    app.say("general", "ana", "in general").await;
    let in_dev = app.say("dev", "bob", "in dev").await;
    assert_eq!(in_dev.id, b + 1, "ids are per room");
    assert_eq!(dev.next_message().await.text.as_str(), "in dev");
    assert_eq!(general.next_message().await.text.as_str(), "in general");
    dev.expect_quiet().await;
    general.expect_quiet().await;
}

#[tokio::test]
async fn sse_wire_format_and_headers() {
    let app = TestApp::spawn().await;
    let mut stream = app.events("?room=general", &[]).await;
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache, no-transform");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    assert_eq!(stream.next_line().await.unwrap(), "retry: 3000");
    assert_eq!(stream.next_line().await.unwrap(), "");

    let sent = app.say("general", "ana", "hi").await;
    assert_eq!(stream.next_line().await.unwrap(), format!("id: {}", sent.id));
    assert_eq!(stream.next_line().await.unwrap(), "event: message");
    let data = stream.next_line().await.unwrap();
    let data: Message = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data, sent);
    assert_eq!(stream.next_line().await.unwrap(), "");
}

#[tokio::test]
async fn hostile_text_never_breaks_the_framing() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("?room=general", &[]).await;
    let nasty = "line one\nid: 999\ndata: {\"fake\":true}\r\nevent: reset\r\rretry: 1\n\n: comment\ndone";
    let sent = app.say("general", "ana", nasty).await;
    let expected = nasty.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(sent.text.as_str(), expected);
    let got = stream.next_event().await;
    assert_eq!(got.id, Some(sent.id.to_string()));
    assert_eq!(got.message().text.as_str(), expected);
    let after = app.say("general", "ana", "after").await;
    assert_eq!(stream.next_message().await, after);
}

#[tokio::test]
async fn heartbeats_keep_idle_streams_alive() {
    let app = TestApp::spawn_with(|c| c.heartbeat = std::time::Duration::from_millis(100)).await;
    let mut stream = app.subscribe("?room=general", &[]).await;
    for _ in 0..2 {
        let block = stream.next_block().await.unwrap();
        assert_eq!(block.comments, ["heartbeat"], "{block:?}");
        assert!(block.data.is_none());
    }
}

#[tokio::test]
async fn plain_text_stream_is_a_terminal_chat() {
    let app = TestApp::spawn().await;
    let mut stream = app.events("", &[("accept", "text/plain")]).await;
    assert_eq!(stream.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    let sent = app.say("general", "ana", "hello\nsecond <b>line</b>").await;
    let clock = sent.time.clock();
    assert_eq!(stream.next_line().await.unwrap(), format!("[{clock}] ana: hello"));
    assert_eq!(stream.next_line().await.unwrap(), format!("{}second <b>line</b>", " ".repeat(11)));
}

#[tokio::test]
async fn ndjson_stream_is_one_object_per_line() {
    let app = TestApp::spawn().await;
    let mut stream = app.events("?room=general", &[("accept", "application/x-ndjson")]).await;
    assert_eq!(stream.headers["content-type"], "application/x-ndjson");
    let first = app.say("general", "ana", "one\ntwo").await;
    let second = app.say("general", "bob", "three").await;
    for sent in [first, second] {
        let line = stream.next_line().await.unwrap();
        let got: Message = serde_json::from_str(&line).unwrap();
        assert_eq!(got, sent);
    }
}

#[tokio::test]
async fn history_endpoint_pages_with_since_and_limit() {
    let app = TestApp::spawn().await;
    let b = app.id_base("general").await;
    for i in 1..=5 {
        app.say("general", "ana", &format!("m{i}")).await;
    }
    let ids = |v: Vec<Message>| v.into_iter().map(|m| m.id - b).collect::<Vec<_>>();
    let all: Vec<Message> = app.get("/history?room=general").await.json().await.unwrap();
    assert_eq!(ids(all), [1, 2, 3, 4, 5]);
    let path = format!("/history?room=general&since={}&limit=2", b + 2);
    let after: Vec<Message> = app.get(&path).await.json().await.unwrap();
    assert_eq!(ids(after), [3, 4]);
    let latest: Vec<Message> = app.get("/history?room=general&limit=2").await.json().await.unwrap();
    assert_eq!(ids(latest), [4, 5]);
    let empty: Vec<Message> = app.get("/history?room=other").await.json().await.unwrap();
    assert!(empty.is_empty());
}

#[tokio::test]
async fn a_stalled_reader_does_not_hold_up_the_others() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(|c| c.buffer = 16).await;
    // A real socket that asks for the stream and then never reads a byte.
    let mut stalled = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stalled.write_all(b"GET /events?room=general HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut reader = app.subscribe("?room=general", &[]).await;
    let b = app.id_base("general").await;
    // Far more than the socket buffers of the stalled reader can hold.
    let text = "x".repeat(4000);
    let count = 600;
    let poster = {
        let client = app.client.clone();
        let url = app.url("/send");
        let text = text.clone();
        tokio::spawn(async move {
            for _ in 0..count {
                let body = json!({ "room": "general", "author": "ana", "text": text });
                let response = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 201);
            }
        })
    };
    for expected in 1..=count {
        assert_eq!(reader.next_message().await.id, b + expected);
    }
    tokio::time::timeout(WAIT, poster).await.unwrap().unwrap();
    drop(stalled);
}
