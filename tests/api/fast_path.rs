//! Streams opened on a fresh connection are served on the fast path; the rest by hyper.
//! Both must look the same to a client.

use ssechat::domain::RoomName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, WAIT, eventually};

/// Sends `requests` on one connection and reads until `until` appears in the response.
async fn raw(app: &TestApp, requests: &str, until: &str) -> (TcpStream, String) {
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(requests.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(until) {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("response arrives");
    (socket, String::from_utf8(seen).unwrap())
}

fn head_of(response: &str) -> String {
    response.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
}

#[tokio::test]
async fn both_paths_answer_with_the_same_stream() {
    let app = TestApp::spawn().await;
    let fresh = "GET /events?room=general HTTP/1.1\r\nhost: x\r\n\r\n";
    let (_fast, fast) = raw(&app, fresh, "retry: 3000").await;
    let reused =
        "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /events?room=general HTTP/1.1\r\nhost: x\r\n\r\n";
    let (_slow, slow) = raw(&app, reused, "retry: 3000").await;
    let slow = slow.split_once("ok").unwrap().1.to_owned(); // after the /healthz response
    for response in [&fast, &slow] {
        let head = head_of(response);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        for expected in [
            "content-type: text/event-stream",
            "cache-control: no-cache, no-transform",
            "x-accel-buffering: no",
            "transfer-encoding: chunked",
        ] {
            assert!(head.contains(expected), "{expected} in {head}");
        }
    }
    assert_eq!(app.state.hub.subscribers(&RoomName::general()), 2);
}

#[tokio::test]
async fn a_bad_stream_request_falls_back_to_the_router_for_its_error() {
    let app = TestApp::spawn().await;
    let (_socket, response) = raw(&app, "GET /events?room=Bad HTTP/1.1\r\nhost: x\r\n\r\n", "}").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("\"field\":\"room\""), "{response}");
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_subscription_at_once() {
    let app = TestApp::spawn().await;
    let room = RoomName::general();
    let (socket, _) = raw(&app, "GET /events HTTP/1.1\r\nhost: x\r\n\r\n", "retry: 3000").await;
    assert_eq!(app.state.hub.subscribers(&room), 1);
    drop(socket);
    // No message and no heartbeat is sent: the server notices the close by itself.
    eventually("the subscription dropped", || async { app.state.hub.subscribers(&room) == 0 }).await;
}

#[tokio::test]
async fn messages_arrive_as_chunks_on_the_fast_path() {
    let app = TestApp::spawn().await;
    let (mut socket, _) = raw(&app, "GET /events HTTP/1.1\r\nhost: x\r\n\r\n", "retry: 3000\n\n\r\n").await;
    let sent = app.say("general", "ana", "hi").await;
    let frame =
        format!("id: {}\nevent: message\ndata: {}\n\n", sent.id, serde_json::to_string(&sent).unwrap());
    let expected = format!("{:x}\r\n{frame}\r\n", frame.len());
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(WAIT, socket.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), expected);
}
