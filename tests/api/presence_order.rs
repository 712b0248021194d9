//! Presence never goes back: every stream is told views in version order, each counting
//! the reader itself, however many readers open at once.

use std::time::Duration;

use serde_json::Value;
use ssechat::config::StoreUrl;

use crate::helpers::{EventStream, TestApp, WAIT};
use crate::process::RedisServer;

/// Readers opened in each fresh room, over about the time presence takes to settle (so
/// some open just as a view is computed), and how many rooms are tried at once.
const READERS: usize = 6;
const TRIES: usize = 40;
const SPREAD_MS: u64 = 150;

/// Reads `stream`'s presence events until one counts every reader, checking that each
/// is newer than the one before and counts this reader (anonymous, so `anonymous >= 1`).
/// Returns the stream: nobody leaves before every reader of the room saw everyone.
async fn watch_until_everyone_is_counted(mut stream: EventStream, reader: usize, room: &str) -> EventStream {
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
    stream
}

/// Opens `READERS` anonymous presence streams in each of `TRIES` fresh rooms, spread over
/// `SPREAD_MS` (on the nodes in turn), and watches every one.
async fn open_together_many_times(nodes: &[&TestApp]) {
    let mut rooms = Vec::new();
    for attempt in 0..TRIES {
        let room = format!("fresh-{attempt}");
        let readers = (0..READERS).map(move |i| {
            let (node, room) = (nodes[i % nodes.len()], room.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..SPREAD_MS))).await;
                let stream = node.subscribe(&format!("?room={room}&presence=1"), &[]).await;
                watch_until_everyone_is_counted(stream, i, &room).await
            }
        });
        rooms.push(futures_util::future::join_all(readers));
    }
    futures_util::future::join_all(rooms).await;
}

#[tokio::test]
async fn presence_never_goes_back_and_always_counts_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let app = TestApp::spawn_with(move |c| {
        c.store = StoreUrl::Sqlite(db);
        c.presence_grace = Duration::from_millis(300);
    })
    .await;
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
