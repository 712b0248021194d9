//! Never ambiguous, never silent: a `503` says "nothing was saved" only when that is certain;
//! a send whose outcome is unknown is settled by its idempotency key (the client's or one the
//! server made); and a retry is not a new send, even over the send rate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use ssechat::AppState;
use ssechat::config::{Config, StoreUrl};
use ssechat::domain::Message;
use ssechat::error::UNSETTLED;
use ssechat::hub::Hub;
use ssechat::store::{RedisStore, Retention, SqliteStore};

use crate::helpers::{TestApp, WAIT, test_config};
use crate::process::RedisServer;

/// A node on `redis` that keeps its send limit itself, so a stopped Redis stalls the store
/// and nothing before it.
async fn redis_node(redis: &RedisServer, send_timeout: Duration) -> TestApp {
    let mut config = test_config();
    config.store = StoreUrl::Redis(redis.url.clone());
    config.send_timeout = send_timeout;
    let hub = Hub::new(config.buffer);
    let store = RedisStore::open(&redis.url, Arc::clone(&hub), config.retention()).await.unwrap();
    let app = TestApp::serve(AppState::with_store(config, hub, Arc::new(store))).await;
    // Redis now knows the publish script, as it does on any node that has sent once.
    app.say("warm-up", "ana", "first").await;
    app
}

async fn sqlite_node(path: &Path, configure: impl FnOnce(&mut Config)) -> (TestApp, Arc<SqliteStore>) {
    let mut config = test_config();
    config.store = StoreUrl::Sqlite(path.to_owned());
    configure(&mut config);
    let hub = Hub::new(config.buffer);
    let store = Arc::new(SqliteStore::open(path, Arc::clone(&hub), Retention::count(100)).unwrap());
    (TestApp::serve(AppState::with_store(config, hub, store.clone())).await, store)
}

async fn post(app: &TestApp, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/send")).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// The `503` of an unknown outcome: its sentence, and the key to retry with.
async fn unsettled_key(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 503);
    let key = response.headers().get("idempotency-key").expect("the key to retry with").to_str().unwrap();
    let key = key.to_owned();
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], UNSETTLED);
    key
}

/// Does what an answer says, as a curl user would, until it is a success: after "nothing was
/// saved", posts the same again; after "unknown", posts again with the key it names.
async fn follow_the_advice(app: &TestApp, body: &Value, first: reqwest::Response) -> Message {
    let response = tokio::time::timeout(3 * WAIT, async {
        let (mut response, mut key) = (first, None);
        while response.status() == 503 {
            if response.headers().contains_key("idempotency-key") {
                key = Some(unsettled_key(response).await);
            } else {
                let error: Value = response.json().await.unwrap();
                assert!(error["error"].as_str().unwrap().contains("nothing was saved"), "{error}");
            }
            response = post(app, body, key.as_deref()).await;
        }
        response
    })
    .await
    .expect("a send succeeds once the store is back");
    assert!(response.status().is_success(), "{:?}", response.text().await);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_post_while_redis_is_stopped_is_stored_once_by_doing_what_the_answer_says() {
    let redis = RedisServer::start(false);
    let app = redis_node(&redis, Duration::from_secs(10)).await;
    let body = json!({ "room": "general", "author": "ana", "text": "through the stall" });
    redis.pause();
    // The fault: Redis stopped for 3 s, longer than one command may take (2 s), with the
    // post (no key) on its socket all along.
    let stall = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        redis.resume();
    };
    let ((), first) = tokio::join!(stall, post(&app, &body, None));
    let message = follow_the_advice(&app, &body, first).await;
    assert_eq!(app.history("general").await, vec![message], "exactly one message");
}

#[tokio::test]
async fn an_unsettled_post_says_so_and_its_key_finds_the_message_out() {
    let redis = RedisServer::start(false);
    let app = redis_node(&redis, Duration::from_millis(500)).await;
    let body = json!({ "room": "general", "author": "ana", "text": "maybe" });
    redis.pause();
    let key = unsettled_key(post(&app, &body, None).await).await;
    assert_eq!(key.len(), 32, "a key the server made: {key}");
    redis.resume();
    let message = follow_the_advice(&app, &body, post(&app, &body, Some(&key)).await).await;
    assert_eq!(app.history("general").await, vec![message], "exactly one message");
}

/// SQLite: a `503` saying nothing was saved means the transaction rolled back (a full disk,
/// `durable.rs`). A commit whose fsync failed may still be in the WAL file, so it is retried
/// under the key; if the retries fail too, the answer says the outcome is unknown.
#[tokio::test]
async fn a_commit_whose_fsync_failed_is_retried_and_never_called_lost() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough for a retry on a loaded machine; it is also how long a lasting fault takes
    // to be answered.
    let (app, store) = sqlite_node(&dir.path().join("chat.db"), |c| {
        c.send_timeout = Duration::from_secs(3);
    })
    .await;
    let body = json!({ "room": "general", "author": "ana", "text": "once" });
    store.fail_syncs(1);
    let settled = post(&app, &body, None).await;
    assert_eq!(settled.status(), 201, "settled by the retry under its key");
    let first: Message = settled.json().await.unwrap();
    assert_eq!(app.history("general").await, vec![first.clone()]);

    store.fail_syncs(u32::MAX);
    let body = json!({ "room": "general", "author": "ana", "text": "doubtful" });
    let key = unsettled_key(post(&app, &body, None).await).await;
    let form = [("room", "general"), ("author", "ana"), ("text", "by form"), ("client_id", "form-1")];
    let page = app.post_as_browser("/send", &form).await;
    assert_eq!(page.status(), 503);
    assert_eq!(page.headers()["idempotency-key"], "form-1");
    let page = page.text().await.unwrap();
    assert!(page.contains(ssechat::routes::send::UNSETTLED_FORM), "{page}");
    assert!(page.contains(r#"name="client_id" value="form-1""#), "sent again, it names the same message");
    assert_eq!(app.history("general").await, vec![first.clone()], "nothing shown that wasn't acknowledged");

    store.fail_syncs(0);
    let stored = post(&app, &body, Some(&key)).await;
    assert_eq!(stored.status(), 201);
    let second: Message = stored.json().await.unwrap();
    assert_eq!(app.history("general").await, vec![first, second], "stored once, under its key");
    for _ in 0..2 {
        assert_eq!(app.post_as_browser("/send", &form).await.status(), 303, "the form sent again");
    }
    assert_eq!(app.history("general").await.len(), 3);
}

/// The `client_id` of the rendered form value, from a room page.
fn client_id_in(page: &str) -> String {
    let field = r#"name="client_id" value=""#;
    let start = page.find(field).expect("the form names its message") + field.len();
    page[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_same_form_sent_twice_without_javascript_stores_one_message() {
    let app = TestApp::spawn().await;
    let page = app.get("/rooms/dev").await;
    assert_eq!(page.headers()["cache-control"], "private, no-cache", "no cache shares a page's key");
    let client_id = client_id_in(&page.text().await.unwrap());
    assert_eq!(client_id.len(), 32);
    let form = [("room", "dev"), ("author", "ana"), ("text", "sent twice"), ("client_id", &client_id)];
    for _ in 0..2 {
        let response = app.post_as_browser("/send?room=dev", &form).await;
        assert_eq!(response.status(), 303);
    }
    assert_eq!(app.history("dev").await.len(), 1);
    let next = client_id_in(&app.get("/rooms/dev").await.text().await.unwrap());
    assert_ne!(next, client_id, "each render names a new message");
}

#[tokio::test]
async fn a_retry_over_the_send_rate_gets_the_original_and_nothing_else_gets_through() {
    let app = TestApp::spawn_with(|c| {
        c.send_rate = 0.001;
        c.send_burst = 1;
    })
    .await;
    let body = json!({ "room": "general", "author": "ana", "text": "hi" });
    let first = post(&app, &body, Some("z1")).await;
    assert_eq!(first.status(), 201);
    let original: Message = first.json().await.unwrap();

    let retry = post(&app, &body, Some("z1")).await;
    assert_eq!(retry.status(), 200, "a replay, though the bucket is empty");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Message>().await.unwrap(), original);

    assert_eq!(post(&app, &body, Some("z2")).await.status(), 429, "a new key is a new send");
    assert_eq!(post(&app, &body, None).await.status(), 429);
    let in_body = json!({ "room": "general", "author": "ana", "text": "hi", "client_id": "z1" });
    assert_eq!(post(&app, &in_body, None).await.status(), 429, "over the rate, only the header counts");
    let cross_site = app
        .client
        .post(app.url("/send"))
        .header("idempotency-key", "z1")
        .header("sec-fetch-site", "cross-site");
    assert_eq!(cross_site.json(&body).send().await.unwrap().status(), 403, "the site is checked first");
    assert_eq!(app.history("general").await, vec![original]);
}

#[tokio::test]
async fn a_script_of_an_allowed_origin_can_read_the_key_to_retry_with() {
    let app = TestApp::spawn_with(|c| c.cors_origin = vec!["http://app.example".into()]).await;
    let body = json!({ "room": "general", "author": "ana", "text": "hi" });
    let request = app.client.post(app.url("/send")).header("origin", "http://app.example");
    let response = request.json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("idempotency-key") && exposed.contains("idempotent-replayed"), "{exposed}");
}
