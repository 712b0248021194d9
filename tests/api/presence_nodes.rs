//! Presence across nodes that die, drain and restart: real binaries, a real Redis.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{EventStream, QUIET};
use crate::process::{RedisServer, Server};

/// The README's bound for a dead node's readers (8 s by design: the liveness TTL and one
/// check), and how long a test waits for what should happen at once.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(10);
const MARGIN: Duration = Duration::from_secs(3);

async fn node(redis: &RedisServer, grace: &str) -> Server {
    Server::start(&["--store", &redis.url, "--presence-grace", grace]).await
}

/// A presence stream in `general` on `server`, as `name` if any, past its opening.
async fn reader(server: &Server, name: Option<&str>) -> EventStream {
    let name = name.map_or(String::new(), |n| format!("&name={n}"));
    stream(server, &name).await
}

/// A presence stream in `general` with `extra` query parameters, past its opening.
async fn stream(server: &Server, extra: &str) -> EventStream {
    let url = format!("{}/events?room=general&presence=1{extra}", server.base);
    let mut stream = EventStream::new(reqwest::get(url).await.unwrap());
    stream.next_block().await.expect("preamble");
    stream
}

/// Reads presence events until one is `expected` (without its version); panics after
/// `within`. Returns every view seen on the way.
async fn until_view(stream: &mut EventStream, expected: Value, within: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(within, async {
        loop {
            let event = stream.next_event().await;
            if event.event.as_deref() != Some("presence") {
                continue;
            }
            let mut view = event.json();
            view.as_object_mut().unwrap().remove("version");
            seen.push(view.clone());
            if view == expected {
                return;
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "never told {expected} within {within:?}; told {seen:?}");
    seen
}

/// The presence views a stream is told until it has been quiet for a while.
async fn views_until_quiet(stream: &mut EventStream) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Ok(event) = tokio::time::timeout(QUIET * 2, stream.next_event()).await {
        if event.event.as_deref() == Some("presence") {
            let mut view = event.json();
            view.as_object_mut().unwrap().remove("version");
            seen.push(view);
        }
    }
    seen
}

/// The fields of `general`'s presence hash: one per node, `left:NODE` for readers in transit.
fn fields(redis: &RedisServer) -> Vec<String> {
    let mut conn = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    redis::cmd("HKEYS").arg("ssechat:{general}:presence").query(&mut conn).unwrap()
}

fn node_fields(redis: &RedisServer) -> usize {
    fields(redis).iter().filter(|f| !f.starts_with("left:")).count()
}

/// Waits until `condition` holds of the Redis hash; panics after `within`.
async fn until_hash(
    redis: &RedisServer,
    what: &str,
    within: Duration,
    condition: impl Fn(&[String]) -> bool,
) {
    let outcome = tokio::time::timeout(within, async {
        while !condition(&fields(redis)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(outcome.is_ok(), "{what} not within {within:?}: {:?}", fields(redis));
}

/// SIGTERM, the way a supervisor stops a node: it drains.
fn terminate(server: &Server) {
    let status = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status();
    assert!(status.unwrap().success());
}

#[tokio::test]
async fn a_killed_nodes_readers_are_gone_within_ten_seconds() {
    let redis = RedisServer::start(false);
    let (one, two) = (node(&redis, "300ms").await, node(&redis, "300ms").await);
    let mut watcher = reader(&two, Some("watcher")).await;
    let _ana = reader(&one, Some("ana")).await;
    let _anonymous = reader(&one, None).await;
    let everyone = json!({ "names": ["ana", "watcher"], "anonymous": 1 });
    until_view(&mut watcher, everyone, crate::helpers::WAIT).await;

    one.kill9().await;
    let killed = Instant::now();
    let alone = json!({ "names": ["watcher"], "anonymous": 0 });
    until_view(&mut watcher, alone, DEAD_NODE_BOUND).await;
    eprintln!("a killed node's readers went after {:?}", killed.elapsed());
    until_hash(&redis, "the dead node's entry deleted", MARGIN, |f| f.len() == 1).await;
}

#[tokio::test]
async fn a_draining_nodes_readers_are_gone_at_once() {
    let redis = RedisServer::start(false);
    // No grace: nothing keeps the drained readers, so they go the moment the node drains,
    // while its streams still have 30 s to end.
    let args = ["--store", &redis.url, "--presence-grace", "0s", "--drain-timeout", "30s"];
    let (one, two) = (Server::start(&args).await, node(&redis, "0s").await);
    let mut watcher = reader(&two, Some("watcher")).await;
    let _ana = reader(&one, Some("ana")).await;
    until_view(&mut watcher, json!({ "names": ["ana", "watcher"], "anonymous": 0 }), crate::helpers::WAIT)
        .await;

    terminate(&one);
    let alone = json!({ "names": ["watcher"], "anonymous": 0 });
    until_view(&mut watcher, alone, Duration::from_secs(2)).await;
    assert_eq!(node_fields(&redis), 1, "{:?}", fields(&redis));
}

#[tokio::test]
async fn a_reader_moving_off_a_draining_node_is_counted_once_and_never_flickers() {
    let redis = RedisServer::start(false);
    let (one, two) = (node(&redis, "5s").await, node(&redis, "5s").await);
    let mut watcher = reader(&two, Some("watcher")).await;
    let moving = reader(&one, None).await;
    let everyone = json!({ "names": ["watcher"], "anonymous": 1 });
    until_view(&mut watcher, everyone.clone(), crate::helpers::WAIT).await;

    terminate(&one);
    until_hash(&redis, "the draining node's readers in transit", Duration::from_secs(2), |f| {
        f.len() == 2 && f.iter().any(|f| f.starts_with("left:"))
    })
    .await;
    drop(moving);
    let _moved = reader(&two, None).await;
    until_hash(&redis, "the moved reader taking its place", Duration::from_secs(2), |f| f.len() == 1).await;
    let told = views_until_quiet(&mut watcher).await;
    assert!(told.iter().all(|view| *view == everyone), "counted once throughout: {told:?}");
}

/// The page gives each tab a reader id (`?reader=`) that survives reconnects: a reader whose
/// node was killed, and who reconnected to another node before the dead one was noticed, is
/// on both nodes' entries for a while, and counted once.
#[tokio::test]
async fn a_reader_moving_off_a_killed_node_is_counted_once() {
    let redis = RedisServer::start(false);
    let (one, two) = (node(&redis, "5s").await, node(&redis, "5s").await);
    let mut watcher = reader(&two, Some("watcher")).await;
    let moving = stream(&one, "&reader=tab-4f9c2a71").await;
    let everyone = json!({ "names": ["watcher"], "anonymous": 1 });
    until_view(&mut watcher, everyone.clone(), crate::helpers::WAIT).await;

    one.kill9().await;
    drop(moving);
    let _moved = stream(&two, "&reader=tab-4f9c2a71").await;
    // Until the dead node is noticed and its entry deleted, both entries hold the reader.
    until_hash(&redis, "the dead node's entry deleted", DEAD_NODE_BOUND, |f| f.len() == 1).await;
    let told = views_until_quiet(&mut watcher).await;
    assert!(told.iter().all(|view| *view == everyone), "counted once throughout: {told:?}");
}

#[tokio::test]
async fn restarts_leave_no_stale_entries() {
    let redis = RedisServer::start(false);
    let two = node(&redis, "300ms").await;
    let mut watcher = reader(&two, Some("watcher")).await;
    for life in 0..3 {
        let one = node(&redis, "300ms").await;
        let name = format!("life{life}");
        let _reader = reader(&one, Some(&name)).await;
        until_view(&mut watcher, json!({ "names": [name, "watcher"], "anonymous": 0 }), crate::helpers::WAIT)
            .await;
        one.kill9().await;
    }
    until_hash(&redis, "only the live node's entry", DEAD_NODE_BOUND + MARGIN, |f| f.len() == 1).await;
    until_view(&mut watcher, json!({ "names": ["watcher"], "anonymous": 0 }), MARGIN).await;
}
