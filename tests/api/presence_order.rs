//! Presence never goes back: every stream is told views in version order, each counting
//! the reader itself, however many readers open at once.

use std::time::Duration;

use serde_json::Value;
use ssechat::config::StoreUrl;

use crate::helpers::{EventStream, TestApp, WAIT};
use crate::process::RedisServer;

/// Readers opened together in each fresh room, and how many rooms are tried.
const READERS: usize = 3;
const TRIES: usize = 30;

/// Reads `stream`'s presence events until one counts every reader, checking that each
/// is newer than the one before and counts this reader (anonymous, so `anonymous >= 1`).
async fn watch_until_everyone_is_counted(mut stream: EventStream, reader: usize, room: &str) {
    let mut seen: Vec<Value> = Vec::new();
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            let event = stream.next_event().await;
            if event.event.as_deref() != Some("presence") {
                continue;
            }
            let view = event.json();
            let version = view["version"].as_u64().expect("a version");
            let newer = seen.last().is_none_or(|last| version > last["version"].as_u64().unwrap());
            seen.push(view.clone());
            assert!(newer, "reader {reader} in {room} was told an older view: {seen:?}");
            assert!(view["anonymous"].as_u64() >= Some(1), "reader {reader} in {room} not counted: {seen:?}");
            if view["anonymous"] == READERS as u64 {
                return;
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "reader {reader} in {room} never saw everyone: {seen:?}");
}

/// Opens `READERS` anonymous presence streams at once (on the nodes in turn) in `TRIES`
/// fresh rooms.
async fn open_together_many_times(nodes: &[&TestApp]) {
    for attempt in 0..TRIES {
        let room = format!("fresh-{attempt}");
        let query = format!("?room={room}&presence=1");
        let opens = (0..READERS).map(|i| nodes[i % nodes.len()].subscribe(&query, &[]));
        let streams = futures_util::future::join_all(opens).await;
        let watches =
            streams.into_iter().enumerate().map(|(i, s)| watch_until_everyone_is_counted(s, i, &room));
        futures_util::future::join_all(watches).await;
    }
}

#[tokio::test]
async fn presence_never_goes_back_and_always_counts_the_reader() {
    let app = TestApp::spawn_with(|c| c.presence_grace = Duration::from_millis(300)).await;
    open_together_many_times(&[&app]).await;
}

#[tokio::test]
async fn presence_never_goes_back_across_nodes() {
    let redis = RedisServer::start(false);
    let node = || {
        let url = redis.url.clone();
        TestApp::spawn_with(move |c| {
            c.store = StoreUrl::Redis(url);
            c.presence_grace = Duration::from_millis(300);
        })
    };
    let (a, b) = (node().await, node().await);
    open_together_many_times(&[&a, &b]).await;
}
