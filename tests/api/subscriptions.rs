//! Per-room subscriptions on one Redis: a node listens to a room's channel only while it has
//! readers of it, and no reader misses anything at the edges (its room's first
//! subscription, a lost subscription, a Redis restart).

use serde_json::json;
use ssechat::domain::Message;

use crate::cluster::node;
use crate::helpers::{EventStream, WAIT, eventually};
use crate::process::RedisServer;

fn redis_conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap()
}

/// Every room channel some connection is subscribed to, sorted.
fn channels(redis: &RedisServer) -> Vec<String> {
    let mut names: Vec<String> =
        redis::cmd("PUBSUB").arg("CHANNELS").arg("ssechat:{*}:ch").query(&mut redis_conn(redis)).unwrap();
    names.sort();
    names
}

/// How many connections (one per node) are subscribed to `room`'s channel.
fn subscribers(redis: &RedisServer, room: &str) -> u64 {
    let channel = format!("ssechat:{{{room}}}:ch");
    let counts: Vec<(String, u64)> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(&mut redis_conn(redis)).unwrap();
    counts[0].1
}

/// The next `n` messages of `stream`.
async fn messages(stream: &mut EventStream, n: usize) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(stream.next_message().await);
    }
    got
}

#[tokio::test]
async fn a_node_subscribes_to_a_room_only_while_it_has_readers_of_it() {
    let redis = RedisServer::start(false);
    let (a, b) = (node(&redis).await, node(&redis).await);
    a.say("lobby", "ana", "nobody reads yet").await;
    assert_eq!(channels(&redis), Vec::<String>::new(), "no reader anywhere: no subscription");

    let mut on_b = b.subscribe("?room=lobby", &[]).await;
    eventually("b subscribes to the lobby", || async { subscribers(&redis, "lobby") == 1 }).await;
    assert_eq!(channels(&redis), ["ssechat:{lobby}:ch"], "only the room b reads, only by b");
    let sent = a.say("lobby", "ana", "hello").await;
    assert_eq!(on_b.next_message().await, sent, "a posts without subscribing, b receives");
    a.say("elsewhere", "ana", "unread").await;
    assert_eq!(channels(&redis), ["ssechat:{lobby}:ch"]);

    let mut on_a = a.subscribe("?room=lobby", &[]).await;
    eventually("both nodes subscribe", || async { subscribers(&redis, "lobby") == 2 }).await;
    drop(on_b);
    // After the linger, b lets the room go; a, which still has a reader, keeps it.
    eventually("b unsubscribes", || async { subscribers(&redis, "lobby") == 1 }).await;
    let sent = b.say("lobby", "bob", "still there?").await;
    assert_eq!(on_a.next_message().await, sent);
    drop(on_a);
    eventually("nobody listens any more", || async { channels(&redis).is_empty() }).await;
}

/// The first reader of a room on a node opens while another node posts to it in a tight
/// loop: whatever was published between reading its place and the node's subscription
/// being confirmed still reaches it, once, in order. Many rooms, one after another, so the
/// edge is crossed many times.
#[tokio::test]
async fn a_nodes_first_reader_gets_every_message_posted_while_it_subscribes() {
    let _heavy = crate::helpers::HEAVY.lock().await;
    let redis = RedisServer::start(false);
    let (a, b) = (node(&redis).await, node(&redis).await);
    for r in 0..20 {
        let room = format!("burst{r}");
        let first = a.say(&room, "ana", "first").await;
        let posters: Vec<_> = (0..4)
            .map(|_| tokio::spawn(post_in_a_loop(a.client.clone(), a.url("/send"), room.clone(), 15)))
            .collect();
        // Resumed from the room's first message: everything after it must arrive, once.
        let mut stream =
            b.subscribe(&format!("?room={room}"), &[("last-event-id", &first.id.to_string())]).await;
        let mut sent = Vec::new();
        for poster in posters {
            sent.extend(poster.await.unwrap());
        }
        sent.sort_by_key(|m| m.id);
        let got = tokio::time::timeout(WAIT, messages(&mut stream, sent.len())).await.expect("every message");
        assert_eq!(got, sent, "no gap, no duplicate, in order ({room})");
    }
}

/// Posts `n` messages to `room` one after another, and returns them as stored.
async fn post_in_a_loop(client: reqwest::Client, url: String, room: String, n: usize) -> Vec<Message> {
    let mut sent = Vec::new();
    for k in 0..n {
        let body = json!({ "room": room, "author": "ana", "text": format!("{k}") });
        let response = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        sent.push(response.json::<Message>().await.unwrap());
    }
    sent
}

/// A subscription killed by Redis (`CLIENT KILL TYPE pubsub`) or lost with a restart: every
/// node subscribes again to its open rooms and its streams catch up.
#[tokio::test]
async fn streams_on_every_node_get_everything_after_the_subscription_is_lost() {
    let mut redis = RedisServer::start(true);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut on_a = a.subscribe("?room=general", &[]).await;
    let mut on_b = b.subscribe("?room=general", &[]).await;
    eventually("both subscribe", || async { subscribers(&redis, "general") == 2 }).await;

    let killed: u64 =
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut redis_conn(&redis)).unwrap();
    assert_eq!(killed, 2);
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(a.say("general", "ana", &format!("after the kill {i}")).await);
    }
    eventually("both subscribe again", || async { subscribers(&redis, "general") == 2 }).await;
    sent.push(b.say("general", "bob", "resubscribed").await);
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(messages(stream, sent.len()).await, sent);
    }

    redis.restart();
    let mut after = b.say_once_back("general", "bob", "restart", 3).await;
    eventually("both subscribe after the restart", || async { subscribers(&redis, "general") == 2 }).await;
    after.push(a.say("general", "ana", "live again").await);
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(messages(stream, after.len()).await, after);
        stream.expect_quiet().await;
    }
}
