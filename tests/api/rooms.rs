//! Many rooms: room lists read from the activity index, the memory store's room cap, and
//! what a reader of a forgotten room sees.

use std::sync::Arc;

use serde_json::{Value, json};
use ssechat::AppState;
use ssechat::domain::NewMessage;
use ssechat::hub::Hub;
use ssechat::store::{MemoryStore, Store};

use crate::helpers::{TestApp, WAIT, test_config};

/// Rooms on the page's room switcher (`routes::index`).
const ROOM_LINKS: u64 = 20;

#[tokio::test]
async fn healthz_answers_while_twenty_pages_list_twenty_thousand_rooms() {
    let _heavy = crate::helpers::HEAVY.lock().await;
    const ROOMS: usize = 20_000;
    let mut config = test_config();
    config.max_rooms = Some(ROOMS);
    let hub = Hub::new(config.buffer);
    let store = Arc::new(MemoryStore::new(Arc::clone(&hub), config.retention()));
    for n in 0..ROOMS {
        store.append(NewMessage::parse(&format!("r{n}"), Some("ana"), Some("hi")).unwrap()).await.unwrap();
    }
    let app = TestApp::serve(AppState::with_store(config, hub, store.clone())).await;

    let pages: Vec<_> = (0..20)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    let health = tokio::time::timeout(WAIT, app.get("/healthz")).await.expect("/healthz answers");
    assert_eq!(health.status(), 200);
    for page in pages {
        let html = tokio::time::timeout(WAIT, page).await.expect("the page loads").unwrap();
        assert!(html.contains("rooms/r19999") && html.contains("rooms/r19980"), "the newest rooms listed");
        assert!(!html.contains("rooms/r19979\""), "twenty of them");
    }
    // Each list looked at its twenty rooms, not at all of them.
    assert!(store.rooms_examined() <= 20 * ROOM_LINKS, "{}", store.rooms_examined());

    let listed: Vec<Value> = app.get("/rooms?limit=1000").await.json().await.unwrap();
    assert_eq!(listed.len(), 1000);
    assert_eq!((&listed[0]["name"], &listed[0]["messages"]), (&json!("r19999"), &json!(1)));
    assert_eq!(listed[999]["name"], "r19000");
    assert_eq!(app.get("/rooms?limit=1001").await.status(), 400, "1,000 at most");
}

#[tokio::test]
async fn over_the_room_cap_the_idlest_room_is_forgotten_and_its_readers_get_reset() {
    let app = TestApp::spawn_with(|c| c.max_rooms = Some(2)).await;
    let b = app.id_base("idle").await;
    app.say("idle", "ana", "one").await;
    app.say("idle", "ana", "two").await;
    app.say("b", "ana", "x").await;
    app.say("c", "ana", "x").await; // three rooms: "idle" goes, messages and all
    let listed: Vec<Value> = app.get("/rooms").await.json().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c", "b"]);
    assert!(app.history("idle").await.is_empty());

    // Behind its end: told with a reset that what it missed is gone.
    let mut behind = app.subscribe("?room=idle", &[("last-event-id", &(b + 1).to_string())]).await;
    let reset = behind.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json(), json!({ "oldest_id": b + 3 }));
    // At its end: nothing was missed, nothing to tell.
    let mut at_end = app.subscribe("?room=idle", &[("last-event-id", &(b + 2).to_string())]).await;
    // Written again, the room goes on after its old ids: both readers get the new message.
    let back = app.say("idle", "ana", "back").await;
    assert_eq!(back.id, b + 3, "ids are not reused");
    assert_eq!(behind.next_message().await, back);
    assert_eq!(at_end.next_event().await.message(), back);
}
