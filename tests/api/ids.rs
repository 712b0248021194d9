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
