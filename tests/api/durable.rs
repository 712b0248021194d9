//! Durable history on SQLite: crash safety, restarts, faults, retention, the room list.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use ssechat::config::StoreUrl;
use ssechat::domain::Message;
use ssechat::hub::Hub;
use ssechat::store::{Retention, SqliteStore};
use ssechat::{AppState, Config};

use crate::helpers::{EventStream, TestApp, WAIT};
use crate::process::Server;

fn sqlite(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

async fn history(client: &reqwest::Client, base: &str, room: &str) -> Vec<Message> {
    let url = format!("{base}/history?room={room}&since=0&limit=1000");
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Many posters, SIGKILL the moment enough are acknowledged, restart: everything
/// acknowledged is there, exactly, and ids go on.
#[tokio::test]
async fn every_acknowledged_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Server::start(&["--store", &sqlite(&db)]).await;
    let client = reqwest::Client::new();
    let rooms = ["alpha", "beta", "gamma", "delta"];
    let target = 300;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let mut posters = Vec::new();
    for poster in 0..16 {
        let client = client.clone();
        let url = format!("{}/send", server.base);
        let acked_tx = acked_tx.clone();
        posters.push(tokio::spawn(async move {
            for i in 0.. {
                let room = rooms[(poster + i) % rooms.len()];
                let body = json!({ "room": room, "author": format!("p{poster}"), "text": format!("p{poster} #{i}") });
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 201 => {
                        if acked_tx.send(r.json().await.unwrap()).is_err() {
                            return;
                        }
                    }
                    _ => return, // the server is gone
                }
            }
        }));
    }
    drop(acked_tx);
    let mut acked = Vec::new();
    while acked.len() < target {
        acked.push(tokio::time::timeout(WAIT, acked_rx.recv()).await.unwrap().unwrap());
    }
    // Killed while the posters are still sending: some requests are in flight.
    server.kill9().await;
    acked_rx.close();
    for poster in posters {
        let _ = poster.await;
    }
    while let Ok(message) = acked_rx.try_recv() {
        acked.push(message);
    }

    let server = Server::start(&["--store", &sqlite(&db)]).await;
    let mut stored: HashMap<&str, Vec<Message>> = HashMap::new();
    for room in rooms {
        let messages = history(&client, &server.base, room).await;
        let ids: Vec<u64> = messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, (1..=messages.len() as u64).collect::<Vec<_>>(), "{room}: dense, in order");
        stored.insert(room, messages);
    }
    for message in &acked {
        let room = stored[message.room.as_str()].iter().find(|m| m.id == message.id);
        assert_eq!(
            room,
            Some(message),
            "acknowledged message {} in {} is stored exactly",
            message.id,
            message.room
        );
    }

    // A stream resuming from an old id gets exactly the rest, then ids go on.
    let alpha = &stored["alpha"];
    let response = client
        .get(format!("{}/events?room=alpha", server.base))
        .header("last-event-id", "10")
        .send()
        .await
        .unwrap();
    let mut stream = EventStream::new(response);
    for expected in &alpha[10..] {
        assert_eq!(&stream.next_message().await, expected);
    }
    let body = json!({ "room": "alpha", "author": "after", "text": "restart" });
    let next: Message =
        client.post(format!("{}/send", server.base)).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(next.id, alpha.len() as u64 + 1, "ids continue, never reused");
    assert_eq!(stream.next_message().await, next);
}

/// In-process app on a SQLite file; the store is returned for its test seams.
async fn sqlite_app(
    path: &Path,
    retention: Retention,
    configure: impl FnOnce(&mut Config),
) -> (TestApp, Arc<SqliteStore>) {
    let mut config = crate::helpers::test_config();
    config.store = StoreUrl::Sqlite(path.to_owned());
    configure(&mut config);
    let hub = Hub::new(config.buffer);
    let store = Arc::new(SqliteStore::open(path, Arc::clone(&hub), retention).unwrap());
    let app = TestApp::serve(AppState::with_store(config, hub, store.clone())).await;
    (app, store)
}

#[tokio::test]
async fn a_page_open_across_a_restart_gets_what_it_missed_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let (app, store) = sqlite_app(&db, Retention::count(100), |_| {}).await;
    let mut stream = app.subscribe("?room=general", &[]).await;
    for i in 1..=3 {
        app.say("general", "ana", &format!("before {i}")).await;
        assert_eq!(stream.next_message().await.id, i);
    }
    drop(store);
    app.stop().await;
    stream.expect_end().await;

    let (app, _store) = sqlite_app(&db, Retention::count(100), |_| {}).await;
    let missed =
        [app.say("general", "bob", "while you were away").await, app.say("general", "bob", "and this").await];
    let mut stream = app.subscribe("?room=general", &[("last-event-id", "3")]).await;
    for expected in &missed {
        assert_eq!(&stream.next_message().await, expected);
    }
    let live = app.say("general", "ana", "back").await;
    assert_eq!(live.id, 6);
    assert_eq!(stream.next_message().await, live);
    stream.expect_quiet().await;
}

#[tokio::test]
async fn a_failing_disk_is_503_then_recovers_and_streams_stay_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let (app, store) =
        sqlite_app(&db, Retention::count(100), |c| c.heartbeat = Duration::from_millis(100)).await;
    let mut stream = app.subscribe("?room=general", &[]).await;
    let first = app.say("general", "ana", "before").await;
    assert_eq!(stream.next_message().await, first);

    store.fail_writes(true);
    for _ in 0..3 {
        let response = app.post_json(json!({ "room": "general", "author": "ana", "text": "lost?" })).await;
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("nothing was saved"), "{body}");
    }
    let browser =
        app.post_as_browser("/send", &[("room", "general"), ("author", "ana"), ("text", "kept draft")]).await;
    assert_eq!(browser.status(), 503);
    assert!(browser.text().await.unwrap().contains("kept draft</textarea>"));
    assert_eq!(app.history("general").await, vec![first.clone()], "nothing unacknowledged is stored");
    // The stream is still served: heartbeats, and no message appeared.
    let beat = stream.next_block().await.unwrap();
    assert_eq!(beat.comments, ["heartbeat"]);
    assert!(app.get("/").await.status().is_success(), "pages still render");

    store.fail_writes(false);
    let after = app.say("general", "ana", "after").await;
    assert_eq!(after.id, 2, "no id was used up by the failed writes");
    assert_eq!(stream.next_message().await, after);
}

#[tokio::test]
async fn retention_prunes_for_real_and_resume_past_it_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let (app, store) = sqlite_app(&db, Retention::count(5), |_| {}).await;
    for i in 1..=20 {
        app.say("general", "ana", &format!("m{i}")).await;
    }
    let held: Vec<u64> = app.history("general").await.iter().map(|m| m.id).collect();
    assert_eq!(held, [16, 17, 18, 19, 20], "retention is exact before any pruning");
    assert_eq!(store.prune().await.unwrap(), 15);
    let check = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = check.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 5);
    assert_eq!(store.prune().await.unwrap(), 0);

    let mut stream = app.subscribe("?room=general", &[("last-event-id", "3")]).await;
    let reset = stream.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json(), json!({ "oldest_id": 16 }));
    assert_eq!(stream.next_message().await.id, 16);
}

#[tokio::test]
async fn the_schema_version_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let (app, store) = sqlite_app(&db, Retention::count(5), |_| {}).await;
    app.say("general", "ana", "hi").await;
    let check = rusqlite::Connection::open(&db).unwrap();
    let version: i32 = check.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, ssechat::store::SCHEMA_VERSION);
    let mode: String = check.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    drop((app, store));
}

#[tokio::test]
async fn rooms_are_listed_by_activity_in_json_and_on_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store) = sqlite_app(&dir.path().join("chat.db"), Retention::count(100), |_| {}).await;
    app.say("quiet", "ana", "hello").await;
    tokio::time::sleep(Duration::from_millis(5)).await; // distinct millisecond timestamps
    app.say("busy", "ana", "one").await;
    app.say("busy", "bob", "two").await;
    let rooms: Vec<Value> = app.get("/rooms").await.json().await.unwrap();
    assert_eq!(rooms.len(), 2);
    assert_eq!(rooms[0]["name"], "busy");
    assert_eq!(rooms[0]["messages"], 2);
    assert!(rooms[0]["last_activity"].as_str().unwrap().ends_with('Z'));
    assert_eq!(rooms[1]["name"], "quiet");
    let one: Vec<Value> = app.get("/rooms?limit=1").await.json().await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(app.get("/rooms?limit=0").await.status(), 400);

    let page = app.get("/rooms/quiet").await.text().await.unwrap();
    assert!(page.contains("href=\"../rooms/busy\""), "{page}");
    assert!(page.contains("href=\"../rooms/quiet\" aria-current=\"page\""));
}

/// Start-up faults: the binary exits non-zero with a message naming the path and reason.
#[tokio::test]
async fn bad_database_paths_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing_parent = dir.path().join("no/such/dir/chat.db");
    let err = Server::try_start(&["--store", &sqlite(&missing_parent)]).await.err().unwrap();
    assert!(err.contains(&missing_parent.display().to_string()) && err.contains("No such file"), "{err}");

    let err = Server::try_start(&["--store", &sqlite(dir.path())]).await.err().unwrap();
    assert!(err.contains(&dir.path().display().to_string()) && err.contains("directory"), "{err}");

    // A directory nobody may write to, not even root.
    let read_only = if is_root() { Path::new("/sys/fs").to_owned() } else { read_only_dir(dir.path()) };
    let db = read_only.join("ssechat-test.db");
    let err = Server::try_start(&["--store", &sqlite(&db)]).await.err().unwrap();
    assert!(err.contains(&db.display().to_string()) && err.contains("denied"), "{err}");
}

#[tokio::test]
async fn files_that_are_not_ours_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&garbage, &bytes).unwrap();
    let err = Server::try_start(&["--store", &sqlite(&garbage)]).await.err().unwrap();
    assert!(err.contains("garbage.db") && err.contains("not a SQLite database"), "{err}");
    assert!(std::fs::read(&garbage).unwrap() == bytes, "never overwritten");

    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)").unwrap();
    drop(conn);
    let before = std::fs::read(&other).unwrap();
    let err = Server::try_start(&["--store", &sqlite(&other)]).await.err().unwrap();
    assert!(err.contains("other.db") && err.contains("another application"), "{err}");
    assert!(std::fs::read(&other).unwrap() == before, "never touched");

    let newer = dir.path().join("newer.db");
    let (app, store) = sqlite_app(&newer, Retention::count(5), |_| {}).await;
    drop(store);
    app.stop().await; // closes the store, and with it the file
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    // The file is let go when the last task still holding the stopped app's store (a policy
    // poll, a room-count read under way) ends: moments later, longer on a loaded machine.
    let err = tokio::time::timeout(crate::helpers::WAIT, async {
        loop {
            let err = Server::try_start(&["--store", &sqlite(&newer)]).await.err().unwrap();
            if !err.contains("in use by another running ssechat") {
                return err;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stopped app lets go of its file");
    assert!(err.contains("newer.db") && err.contains("newer ssechat") && err.contains("99"), "{err}");
}

#[tokio::test]
async fn a_file_in_use_by_another_ssechat_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let first = Server::start(&["--store", &sqlite(&db)]).await;
    let err = Server::try_start(&["--store", &sqlite(&db)]).await.err().unwrap();
    assert!(err.contains("chat.db") && err.contains("in use by another running ssechat"), "{err}");
    let client = reqwest::Client::new();
    let body = json!({ "room": "general", "author": "ana", "text": "still mine" });
    let response = client.post(format!("{}/send", first.base)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "the first server is unaffected");
    assert_eq!(history(&client, &first.base, "general").await.len(), 1);
    // And the in-process store refuses it the same way.
    let err = SqliteStore::open(&db, Hub::new(4), Retention::count(5)).err().unwrap();
    assert!(err.contains("in use"), "{err}");
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

fn read_only_dir(parent: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join("read-only");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    dir
}
