//! Presence and typing: who is in a room, live, across nodes; typing signals.

use std::time::Duration;

use serde_json::{Value, json};
use ssechat::config::StoreUrl;
use ssechat::policy::{Perm, RoomPattern, Rule, Subject};

use crate::helpers::{EventStream, TestApp, eventually};
use crate::process::RedisServer;

async fn app() -> TestApp {
    TestApp::spawn_with(|c| c.presence_grace = Duration::from_millis(300)).await
}

/// Bob says he is typing in `general`, through `app`.
async fn bob_types(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/typing"))
        .json(&json!({ "room": "general", "author": "bob" }))
        .send()
        .await
        .unwrap()
}

/// The next typing event, skipping anything else.
async fn next_typing(stream: &mut EventStream) -> crate::helpers::Block {
    loop {
        let event = stream.next_event().await;
        if event.event.as_deref() == Some("typing") {
            return event;
        }
    }
}

/// The next presence event without its version (checked to be there), skipping anything else.
async fn next_presence(stream: &mut EventStream) -> Value {
    loop {
        let event = stream.next_event().await;
        if event.event.as_deref() == Some("presence") {
            let mut view = event.json();
            let version = view.as_object_mut().unwrap().remove("version");
            assert!(version.and_then(|v| v.as_u64()).is_some_and(|v| v > 0), "{event:?}");
            return view;
        }
    }
}

#[tokio::test]
async fn presence_lists_named_readers_and_counts_anonymous_ones() {
    let app = app().await;
    let mut ana = app.subscribe("?room=general&name=ana&presence=1", &[]).await;
    assert_eq!(next_presence(&mut ana).await, json!({ "names": ["ana"], "anonymous": 0 }));
    let _curl = app.subscribe("?room=general", &[]).await;
    assert_eq!(next_presence(&mut ana).await, json!({ "names": ["ana"], "anonymous": 1 }));
    let _bob = app.subscribe("?room=general&name=bob", &[]).await;
    assert_eq!(next_presence(&mut ana).await, json!({ "names": ["ana", "bob"], "anonymous": 1 }));
    let json: Value = app.get("/rooms/general/presence").await.json().await.unwrap();
    assert_eq!(json, json!({ "names": ["ana", "bob"], "anonymous": 1 }));
    let elsewhere: Value = app.get("/rooms/other/presence").await.json().await.unwrap();
    assert_eq!(elsewhere, json!({ "names": [], "anonymous": 0 }));
    assert_eq!(app.get("/rooms/Bad/presence").await.status(), 400);
}

#[tokio::test]
async fn a_reader_who_leaves_goes_after_the_grace_period_and_a_reconnect_does_not_flap() {
    let app = app().await;
    let mut watcher = app.subscribe("?room=general&name=watcher&presence=1", &[]).await;
    next_presence(&mut watcher).await;
    let bob = app.subscribe("?room=general&name=bob", &[]).await;
    assert_eq!(next_presence(&mut watcher).await["names"], json!(["bob", "watcher"]));
    // Bob reloads: gone and back within the grace period. Nobody sees him leave.
    drop(bob);
    let bob_again = app.subscribe("?room=general&name=bob", &[]).await;
    watcher.expect_quiet().await;
    // Bob closes the page: he goes once the grace period is over.
    drop(bob_again);
    assert_eq!(next_presence(&mut watcher).await["names"], json!(["watcher"]));
}

/// A rename reconnects with the same reader id (`?reader=`): the new stream takes the old
/// one's seat at once, whether the old stream has ended yet or not. Nobody sees the reader
/// twice (named and anonymous) during the grace period.
#[tokio::test]
async fn a_reader_who_renames_replaces_its_old_seat() {
    let app = TestApp::spawn_with(|c| c.presence_grace = Duration::from_secs(60)).await;
    let room = ssechat::domain::RoomName::general();
    let mut watcher = app.subscribe("?room=general&name=watcher&presence=1", &[]).await;
    assert_eq!(next_presence(&mut watcher).await, json!({ "names": ["watcher"], "anonymous": 0 }));
    let tab = app.subscribe("?room=general&reader=tab-0001&presence=1", &[]).await;
    assert_eq!(next_presence(&mut watcher).await, json!({ "names": ["watcher"], "anonymous": 1 }));

    // The page's order: the old stream closes, the new one opens (the server may notice
    // the close before or after the new stream arrives).
    drop(tab);
    let zoe = app.subscribe("?room=general&reader=tab-0001&name=zoe&presence=1", &[]).await;
    assert_eq!(next_presence(&mut watcher).await, json!({ "names": ["watcher", "zoe"], "anonymous": 0 }));
    eventually("the old stream ended", || async { app.state.hub.subscribers(&room) == 2 }).await;
    watcher.expect_quiet().await;

    // The new stream opens while the old one is still open: the same, and its end changes nothing.
    let ann = app.subscribe("?room=general&reader=tab-0001&name=ann&presence=1", &[]).await;
    assert_eq!(next_presence(&mut watcher).await, json!({ "names": ["ann", "watcher"], "anonymous": 0 }));
    drop(zoe);
    eventually("the old stream ended", || async { app.state.hub.subscribers(&room) == 2 }).await;
    watcher.expect_quiet().await;
    drop(ann);
}

#[tokio::test]
async fn streams_see_presence_and_typing_only_when_they_ask() {
    let app = app().await;
    let mut plain = app.subscribe("?room=general", &[]).await;
    let mut page = app.subscribe("?room=general&name=ana&presence=1", &[]).await;
    next_presence(&mut page).await;
    assert_eq!(bob_types(&app).await.status(), 204);
    let typing = next_typing(&mut page).await;
    assert_eq!(typing.json(), json!({ "author": "bob" }));
    assert_eq!(typing.id, None);
    plain.expect_quiet().await;
    assert!(app.history("general").await.is_empty(), "typing is never stored");
}

#[tokio::test]
async fn typing_is_rate_limited_and_validated() {
    let app = app().await;
    let typing = |body: Value| app.client.post(app.url("/typing")).json(&body).send();
    assert_eq!(typing(json!({ "room": "general", "author": "ana" })).await.unwrap().status(), 204);
    let again = typing(json!({ "room": "general", "author": "ana" })).await.unwrap();
    assert_eq!(again.status(), 429);
    assert_eq!(again.headers()["retry-after"], "1");
    let body: Value = again.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("one per second"));
    // Another author, or another room, is not limited by ana's signal.
    assert_eq!(typing(json!({ "room": "general", "author": "bob" })).await.unwrap().status(), 204);
    assert_eq!(typing(json!({ "room": "dev", "author": "ana" })).await.unwrap().status(), 204);
    assert_eq!(typing(json!({ "room": "general" })).await.unwrap().status(), 400);
    assert_eq!(typing(json!({ "room": "No Room", "author": "ana" })).await.unwrap().status(), 400);
}

#[tokio::test]
async fn a_bad_reader_name_is_400() {
    let app = app().await;
    let response = app.get(&format!("/events?name={}", "x".repeat(41))).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "name");
}

#[tokio::test]
async fn presence_and_typing_span_every_node() {
    let redis = RedisServer::start(false);
    let node = |url: String| {
        TestApp::spawn_with(move |c| {
            c.store = StoreUrl::Redis(url);
            c.presence_grace = Duration::from_millis(300);
        })
    };
    let (a, b) = (node(redis.url.clone()).await, node(redis.url.clone()).await);
    let mut on_a = a.subscribe("?room=general&name=ana&presence=1", &[]).await;
    assert_eq!(next_presence(&mut on_a).await["names"], json!(["ana"]));
    let on_b = b.subscribe("?room=general&name=bob", &[]).await;
    assert_eq!(next_presence(&mut on_a).await, json!({ "names": ["ana", "bob"], "anonymous": 0 }));
    let from_b: Value = b.get("/rooms/general/presence").await.json().await.unwrap();
    assert_eq!(from_b, json!({ "names": ["ana", "bob"], "anonymous": 0 }));

    assert_eq!(bob_types(&b).await.status(), 204);
    assert_eq!(next_typing(&mut on_a).await.json(), json!({ "author": "bob" }));
    drop(on_b);
    assert_eq!(next_presence(&mut on_a).await["names"], json!(["ana"]));
}

/// The next `rooms` event's list, skipping anything else.
async fn next_rooms(stream: &mut EventStream) -> Value {
    loop {
        let event = stream.next_event().await;
        if event.event.as_deref() == Some("rooms") {
            return event.json()["rooms"].clone();
        }
    }
}

/// The page's room list follows the counts: page streams hear of every change (made on
/// any node), other streams never do, and a room a guest may not read is never listed.
#[tokio::test]
async fn page_streams_hear_the_room_counts_and_never_of_private_rooms() {
    let redis = RedisServer::start(false);
    let node = |url: String| TestApp::spawn_with(move |c| c.store = StoreUrl::Redis(url));
    let (a, b) = (node(redis.url.clone()).await, node(redis.url.clone()).await);
    a.say("secret-plans", "ana", "hidden").await;
    let private = Rule {
        subject: Subject::parse("*").unwrap(),
        pattern: RoomPattern::parse("secret-*").unwrap(),
        perm: Perm::parse("deny").unwrap(),
    };
    a.state.store.set_rule(&private).await.unwrap();
    a.state.policy.reload().await.unwrap();

    let mut page = a.subscribe("?room=general&name=ana&presence=1", &[]).await;
    let mut curl = a.subscribe("?room=general", &[]).await;
    b.say("dev", "bob", "one").await;
    assert_eq!(next_rooms(&mut page).await, json!([{ "name": "dev", "messages": 1 }]));
    a.say("dev", "bob", "two").await;
    assert_eq!(next_rooms(&mut page).await, json!([{ "name": "dev", "messages": 2 }]));
    b.say("general", "cy", "three").await;
    let rooms = next_rooms(&mut page).await;
    assert_eq!(rooms, json!([{ "name": "general", "messages": 1 }]), "only what changed");
    assert_eq!(curl.next_event().await.event.as_deref(), Some("message"), "cy's, and nothing else");
    curl.expect_quiet().await;
}
