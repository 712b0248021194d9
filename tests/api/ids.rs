//! Message ids a client sends back: every store answers an id no store could have given the
//! same way, with `400` naming where it came from, and one it could have given but didn't with
//! `reset`: never `503`, never a stream that holds its place forever.

use ssechat::config::StoreUrl;

use crate::helpers::{TestApp, WAIT};
use crate::process::RedisServer;

/// 2^63: past SQLite's signed integers. 2^53: past what JavaScript reads exactly.
const TOO_LARGE: [&str; 3] = ["9223372036854775808", "9007199254740992", "18446744073709551616"];
/// The largest id there can be.
const LARGEST: &str = "9007199254740991";

async fn every_store(test: impl AsyncFn(TestApp)) {
    let redis = RedisServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let stores =
        [StoreUrl::Memory, StoreUrl::Sqlite(dir.path().join("ids.db")), StoreUrl::Redis(redis.url.clone())];
    for store in stores {
        test(TestApp::spawn_with(move |c| c.store = store).await).await;
    }
}

#[tokio::test]
async fn an_id_no_store_could_give_is_refused_naming_its_source() {
    every_store(async |app| {
        app.say("general", "ana", "hi").await;
        for id in TOO_LARGE {
            for (path, headers, field) in [
                (format!("/history?room=general&since={id}"), vec![], "since"),
                (format!("/events?room=general&since={id}"), vec![], "since"),
                ("/events?room=general".to_owned(), vec![("last-event-id", id)], "Last-Event-ID"),
            ] {
                let mut request = app.client.get(app.url(&path));
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 400, "{path} {id}");
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["field"], field, "{body}");
                assert!(body["error"].as_str().unwrap().contains("larger than any message id"), "{body}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_largest_id_is_answered_with_a_reset_and_the_history() {
    every_store(async |app| {
        let sent = app.say("general", "ana", "hi").await;
        let history = app.get(&format!("/history?room=general&since={LARGEST}")).await;
        assert_eq!(history.status(), 200);
        let mut stream = app.subscribe("?room=general", &[("last-event-id", LARGEST)]).await;
        let reset = tokio::time::timeout(WAIT, stream.next_event()).await.unwrap();
        assert_eq!(reset.event.as_deref(), Some("reset"));
        assert_eq!(stream.next_message().await, sent);
    })
    .await;
}

/// Posts `n` messages to room `r` of the server at `base`; returns their ids.
async fn post_many(client: &reqwest::Client, base: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = serde_json::json!({ "room": "r", "author": "ana", "text": format!("m{i}") });
        let response = client.post(format!("{base}/send")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        ids.push(response.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap());
    }
    ids
}

/// What a page open across a restart sends back: an id of the store's earlier life. It must
/// get `reset` and everything this life holds, never the rest of the new ids as if nothing
/// had happened.
async fn resume_across_lives(client: &reqwest::Client, base: &str, old_id: u64, new_ids: &[u64]) {
    let request = client.get(format!("{base}/events?room=r")).header("last-event-id", old_id.to_string());
    let response = tokio::time::timeout(WAIT, request.send()).await.unwrap().unwrap();
    let mut stream = crate::helpers::EventStream::new(response);
    assert!(stream.next_block().await.unwrap().retry.is_some());
    let reset = stream.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    for &id in new_ids {
        assert_eq!(stream.next_message().await.id, id);
    }
}

#[tokio::test]
async fn a_restarted_memory_store_never_gives_an_id_again() {
    let client = reqwest::Client::new();
    let first = crate::process::Server::start(&["--store", "memory"]).await;
    let old = post_many(&client, &first.base, 9).await;
    first.kill9().await;
    let second = crate::process::Server::start(&["--store", "memory"]).await;
    let new = post_many(&client, &second.base, 10).await;
    assert!(new[0] > old[8], "a new life starts above the old one: {old:?} {new:?}");
    assert!(new.iter().all(|&id| id <= ssechat::domain::MAX_MESSAGE_ID));
    resume_across_lives(&client, &second.base, old[7], &new).await;
}

#[tokio::test]
async fn a_redis_that_lost_its_data_never_gives_an_id_again() {
    let mut redis = RedisServer::start(false);
    let url = redis.url.clone();
    let app = TestApp::spawn_with(move |c| c.store = StoreUrl::Redis(url)).await;
    let old = post_many(&app.client, &app.base, 9).await;
    redis.restart(); // no persistence: everything is gone
    let new = tokio::time::timeout(WAIT, async {
        loop {
            let body = serde_json::json!({ "room": "r", "author": "ana", "text": "back" });
            let response = app.client.post(app.url("/send")).json(&body).send().await.unwrap();
            if response.status() == 201 {
                return response.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap();
            }
        }
    })
    .await
    .expect("sends work again once Redis is back");
    assert!(new > old[8], "{old:?} then {new}");
    resume_across_lives(&app.client, &app.base, old[7], &[new]).await;
}

/// `since=0` (or `Last-Event-ID: 0`) asks for everything held, as a client that has nothing
/// yet: no `reset`, on every store, wherever its ids start.
#[tokio::test]
async fn from_zero_is_everything_held_without_a_reset() {
    every_store(async |app| {
        let sent = [app.say("general", "ana", "one").await, app.say("general", "ana", "two").await];
        for (query, headers) in
            [("?room=general&since=0", vec![]), ("?room=general", vec![("last-event-id", "0")])]
        {
            let mut stream = app.subscribe(query, &headers).await;
            for expected in &sent {
                assert_eq!(&stream.next_event().await.message(), expected);
            }
        }
    })
    .await;
}
