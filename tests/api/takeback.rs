//! Deleting and editing: the routes for guests, authors, other users and admins, and the log
//! mechanics end to end (some deletes and edits written straight through the store).

use reqwest::Method;
use serde_json::{Value, json};
use ssechat::domain::{Change, MessageText, RoomName, TakeBack};

use crate::helpers::TestApp;

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Logs a change the way the routes do once allowed: through the store.
async fn take_back(app: &TestApp, room: &str, target: u64, change: Change) {
    let change = TakeBack { room: RoomName::parse(room).unwrap(), target, change };
    let what = format!("{change:?}");
    app.state.store.take_back(change).await.unwrap().expect(&what);
}

fn edit(text: &str) -> Change {
    Change::Edit(MessageText::parse(text).unwrap())
}

/// Every way to take message `id` of `room` back: (method, path, JSON body, as a browser).
fn routes(room: &str, id: &str) -> Vec<(Method, String, Option<Value>, bool)> {
    let at = format!("/rooms/{room}/messages/{id}");
    vec![
        (Method::DELETE, at.clone(), None, false),
        (Method::PATCH, at.clone(), Some(json!({ "text": "changed" })), false),
        (Method::POST, format!("{at}/delete"), None, true),
        (Method::GET, format!("{at}/edit"), None, true),
        (Method::POST, format!("{at}/edit"), None, true),
    ]
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    browser: bool,
) -> reqwest::Response {
    let mut request = app.client.request(method.clone(), app.url(path));
    request = match (body, browser) {
        (Some(body), _) => request.json(&body),
        (None, true) if method == Method::POST => request.form(&[("text", "changed")]),
        (None, _) => request,
    };
    if browser {
        request = request.header("accept", BROWSER);
    }
    request.send().await.unwrap()
}

/// The status, and the error's words: from JSON, or from an HTML page's alert.
async fn refusal(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let html = response.headers()["content-type"].to_str().unwrap().starts_with("text/html");
    let body = response.text().await.unwrap();
    if html {
        return (status, body);
    }
    let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}"));
    (status, error["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn guests_may_not_delete_or_edit_on_any_route() {
    let app = TestApp::spawn().await;
    let message = app.say("general", "ana", "mine").await;
    for (method, path, body, browser) in routes("general", &message.id.to_string()) {
        let (status, words) = refusal(call(&app, method.clone(), &path, body, browser).await).await;
        assert_eq!(status, 401, "{method} {path}: {words}");
        assert!(words.contains("sign in to"), "{method} {path}: {words}");
    }
    assert_eq!(app.history("general").await, [message], "nothing changed");
}

#[tokio::test]
async fn unknown_deleted_and_elsewhere_messages_are_404() {
    let app = TestApp::spawn().await;
    let kept = app.say("general", "ana", "kept").await;
    let gone = app.say("general", "ana", "gone").await;
    take_back(&app, "general", gone.id, Change::Delete).await;
    let edit_entry = gone.id + 1;
    let cases = [
        ("general", gone.id + 50, "never given"),
        ("general", gone.id, "deleted"),
        ("general", edit_entry, "a delete is no message"),
        ("elsewhere", kept.id, "in another room"),
    ];
    for (room, id, why) in cases {
        for (method, path, body, browser) in routes(room, &id.to_string()) {
            let (status, words) = refusal(call(&app, method.clone(), &path, body, browser).await).await;
            assert_eq!(status, 404, "{why}: {method} {path}: {words}");
            assert!(words.contains(&format!("no message #{id} in #{room}")), "{why}: {words}");
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_naming_the_field() {
    let app = TestApp::spawn().await;
    let id = app.say("general", "ana", "hi").await.id;
    let patch = |path: String| app.client.patch(app.url(&path));
    let at = format!("/rooms/general/messages/{id}");
    let cases = [
        (
            patch("/rooms/general/messages/abc".into()).json(&json!({"text": "x"})),
            400,
            "\"abc\" is not a message id",
        ),
        (
            patch("/rooms/general/messages/9007199254740993".into()).json(&json!({"text": "x"})),
            400,
            "larger than any message id",
        ),
        (
            patch(format!("/rooms/Bad%20Room/messages/{id}")).json(&json!({"text": "x"})),
            400,
            "not a valid room name",
        ),
        (patch(at.clone()).json(&json!({"text": ""})), 400, "text: must not be empty"),
        (patch(at.clone()).json(&json!({"text": "  \n "})), 400, "text: must not be empty"),
        (patch(at.clone()).json(&json!({})), 400, "text: must not be empty"),
        (patch(at.clone()).json(&json!({"text": "a".repeat(4001)})), 400, "the limit is 4000"),
        (patch(at.clone()).json(&json!({"text": 5})), 400, "text: must be a string"),
        (
            patch(at.clone()).header("content-type", "application/json").body("{\"text\": "),
            400,
            "malformed JSON (expected an object with text)",
        ),
        (
            patch(at.clone()).header("content-type", "application/json").body(r#"{"text":"a","text":"b"}"#),
            400,
            "\"text\" is given more than once",
        ),
        (patch(at.clone()).body("text"), 415, "unsupported content type"),
        (app.client.delete(app.url(&format!("/rooms/general/messages/{id}x"))), 400, "is not a message id"),
    ];
    for (request, status, needle) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "application/json");
        let (got, words) = refusal(response).await;
        assert_eq!((got, words.contains(needle)), (status, true), "{words:?} should mention {needle:?}");
    }
    let put = app.client.put(app.url(&at)).send().await.unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(app.history("general").await[0].text.as_str(), "hi");
}

#[tokio::test]
async fn a_refused_edit_form_shows_the_form_again_with_the_reason_and_the_text() {
    let app = TestApp::spawn().await;
    let id = app.say("general", "ana", "hi").await.id;
    let path = format!("/rooms/general/messages/{id}/edit");
    let response = app.post_as_browser(&path, &[("text", "bell\u{7}")]).await;
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("control characters"), "{page}");
    assert!(page.contains(&format!("action=\"../../../../rooms/general/messages/{id}/edit\"")), "{page}");
    assert!(page.contains(">bell\u{7}</textarea>"), "what was typed is kept: {page}");
}

#[tokio::test]
async fn a_cross_site_form_post_is_refused() {
    let app = TestApp::spawn().await;
    let id = app.say("general", "ana", "hi").await.id;
    let response = app
        .client
        .post(app.url(&format!("/rooms/general/messages/{id}/delete")))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    let (status, words) = refusal(response).await;
    assert_eq!(status, 403);
    assert!(words.contains("cross-site request refused"), "{words}");
}

#[tokio::test]
async fn a_live_stream_receives_deletes_and_edits_with_their_own_ids() {
    let app = TestApp::spawn().await;
    let b = app.id_base("live").await;
    let mut stream = app.subscribe("?room=live", &[]).await;
    let one = app.say("live", "ana", "one").await;
    app.say("live", "ana", "two").await;
    take_back(&app, "live", b + 1, edit("one, <b>edited</b>")).await;
    take_back(&app, "live", b + 2, Change::Delete).await;
    assert_eq!(stream.next_message().await.id, b + 1);
    assert_eq!(stream.next_message().await.id, b + 2);
    let edited = stream.next_event().await;
    assert_eq!((edited.id.as_deref(), edited.event.as_deref()), (Some(&*(b + 3).to_string()), Some("edit")));
    let data = edited.json();
    assert_eq!(data["id"], b + 1);
    assert_eq!(data["text"], "one, <b>edited</b>");
    assert_eq!((&data["author"], &data["time"]), (&json!("ana"), &json!(one.time)));
    assert!(data["edited"].as_str().is_some_and(|t| t.ends_with('Z')), "{data}");
    let deleted = stream.next_event().await;
    assert_eq!(
        (deleted.id.as_deref(), deleted.event.as_deref()),
        (Some(&*(b + 4).to_string()), Some("delete"))
    );
    assert_eq!(deleted.data.as_deref(), Some(&*format!("{{\"id\":{}}}", b + 2)));
    stream.expect_quiet().await;
}

/// The next `n` events of `stream`: each one's id (less `base`) and kind.
async fn kinds_after(stream: &mut crate::helpers::EventStream, n: usize, base: u64) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let block = stream.next_event().await;
        seen.push((block.id.unwrap().parse::<u64>().unwrap() - base, block.event.unwrap()));
    }
    seen
}

#[tokio::test]
async fn resuming_replays_deletes_and_edits_in_order() {
    let app = TestApp::spawn().await;
    let b = app.id_base("resume").await;
    app.say("resume", "ana", "one").await;
    app.say("resume", "ana", "two").await;
    take_back(&app, "resume", b + 1, edit("one!")).await;
    take_back(&app, "resume", b + 2, Change::Delete).await;
    app.say("resume", "ana", "three").await;
    let mut stream = app.subscribe("?room=resume", &[("last-event-id", &(b + 1).to_string())]).await;
    let seen = kinds_after(&mut stream, 4, b).await;
    assert_eq!(
        seen,
        [(2, "message".into()), (3, "edit".into()), (4, "delete".into()), (5, "message".into())]
    );
    stream.expect_quiet().await;
    // From the edit's id on: only what came after it.
    let mut after = app.subscribe(&format!("?room=resume&since={}", b + 3), &[]).await;
    assert_eq!(after.next_event().await.event.as_deref(), Some("delete"));
    assert_eq!(after.next_message().await.id, b + 5);
}

#[tokio::test]
async fn history_and_the_page_show_the_current_state() {
    let app = TestApp::spawn().await;
    let b = app.id_base("now").await;
    app.say("now", "ana", "first words").await;
    app.say("now", "ana", "regrettable words").await;
    app.say("now", "bob", "kept words").await;
    take_back(&app, "now", b + 1, edit("better words")).await;
    take_back(&app, "now", b + 2, Change::Delete).await;
    let history: Value = app.get("/history?room=now").await.json().await.unwrap();
    let shown: Vec<(u64, &str, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_u64().unwrap() - b, m["text"].as_str().unwrap(), m.get("edited").is_some()))
        .collect();
    assert_eq!(shown, [(1, "better words", true), (3, "kept words", false)]);
    let page = app.get("/rooms/now").await.text().await.unwrap();
    assert!(page.contains("better words") && page.contains("(edited)"), "{page}");
    assert!(page.contains("kept words"));
    assert!(!page.contains("first words") && !page.contains("regrettable"), "{page}");
    assert!(page.contains(&format!("data-last-id=\"{}\"", b + 5)), "the stream starts after the entries");
    // A guest is offered no controls.
    assert!(!page.contains("/delete\"") && !page.contains("/edit\""), "{page}");
}

#[tokio::test]
async fn ndjson_and_plain_text_carry_deletes_and_edits() {
    let app = TestApp::spawn().await;
    let b = app.id_base("lines").await;
    app.say("lines", "ana", "one").await;
    take_back(&app, "lines", b + 1, edit("uno\ndos")).await;
    take_back(&app, "lines", b + 1, Change::Delete).await;
    let since = format!("?room=lines&since={b}");
    let mut ndjson = app.events(&since, &[("accept", "application/x-ndjson")]).await;
    let lines: Vec<Value> = {
        let mut lines = Vec::new();
        for _ in 0..3 {
            lines.push(serde_json::from_str(&ndjson.next_line().await.unwrap()).unwrap());
        }
        lines
    };
    assert_eq!(lines[0]["text"], "one");
    assert_eq!(
        (&lines[1]["event"], &lines[1]["entry"], &lines[1]["id"]),
        (&json!("edit"), &json!(b + 2), &json!(b + 1))
    );
    assert_eq!(lines[1]["text"], "uno\ndos");
    assert_eq!(lines[2], json!({ "event": "delete", "id": b + 1, "entry": b + 3 }));
    let mut plain = app.events(&since, &[("accept", "text/plain")]).await;
    let mut text = Vec::new();
    for _ in 0..4 {
        text.push(plain.next_line().await.unwrap());
    }
    assert!(text[0].ends_with("] ana: one"), "{text:?}");
    assert!(text[1].ends_with("] ana (edited): uno"), "{text:?}");
    assert_eq!(text[2].trim(), "dos");
    assert_eq!(text[3], format!("-- message #{} was deleted --", b + 1));
}

#[tokio::test]
async fn the_edit_window_is_a_flag_of_15_minutes_by_default() {
    use clap::Parser;
    let flag = ssechat::Config::try_parse_from(["ssechat", "--edit-window", "2m"]).unwrap();
    assert_eq!(flag.edit_window, std::time::Duration::from_secs(120));
    assert_eq!(ssechat::Config::defaults().edit_window, std::time::Duration::from_secs(900));
    let refused = ssechat::Config::try_parse_from(["ssechat", "--edit-window", "soon"]);
    assert!(refused.is_err());
}

#[tokio::test]
async fn a_page_shows_deletes_and_edits_live_and_after_a_reload_with_and_without_javascript() {
    use crate::browser::{Chrome, ONE_AT_A_TIME, js, open, wait_until};
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    let b = app.id_base("tb").await;
    app.say("tb", "ana", "first").await;
    app.say("tb", "ana", "second").await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/tb").await;
    take_back(&app, "tb", b + 1, edit("first, edited")).await;
    take_back(&app, "tb", b + 2, Change::Delete).await;
    let (one, two) = (format!("m{}", b + 1), format!("m{}", b + 2));
    let current = format!(
        "document.querySelector('#{one} .text').textContent === 'first, edited' \
         && document.querySelector('#{one} .edited') && !document.getElementById('{two}')"
    );
    wait_until(&page, &current).await;
    // The stream went on after the entries' ids: the next message shows once.
    app.say("tb", "bob", "third").await;
    wait_until(&page, "document.querySelectorAll('#messages .msg').length === 2").await;
    page.refresh().await.unwrap();
    wait_until(&page, "document.getElementById('status').textContent === 'live'").await;
    wait_until(&page, &current).await;
    let ids =
        js(&page, "[...document.querySelectorAll('#messages .msg')].map(e => Number(e.dataset.id))").await;
    assert_eq!(ids, json!([b + 1, b + 5]));
    assert_eq!(
        js(&page, "document.querySelectorAll('#messages form, #messages a.edit').length").await,
        json!(0),
        "a guest gets no controls"
    );
    page.close().await.unwrap();

    let plain = chrome.session(false).await;
    plain.goto(&app.url("/rooms/tb")).await.unwrap();
    let texts = js(&plain, "[...document.querySelectorAll('#messages .text')].map(e => e.textContent)").await;
    assert_eq!(texts, json!(["first, edited", "third"]));
    plain.close().await.unwrap();
}

/// On a store given by `store`: entries replay on resume, in order, and history folds them.
async fn replays_and_folds(store: ssechat::config::StoreUrl) {
    let app = TestApp::spawn_with(|c| c.store = store).await;
    // (A Redis room's ids start at its first message: `id_base` can't tell before.)
    let b = app.say("stores", "ana", "one").await.id - 1;
    app.say("stores", "ana", "two").await;
    take_back(&app, "stores", b + 1, edit("one!")).await;
    take_back(&app, "stores", b + 2, Change::Delete).await;
    let mut stream = app.subscribe("?room=stores", &[("last-event-id", &b.to_string())]).await;
    let seen = kinds_after(&mut stream, 4, b).await;
    assert_eq!(
        seen,
        [(1, "message".into()), (2, "message".into()), (3, "edit".into()), (4, "delete".into())]
    );
    let history = app.history("stores").await;
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].text.as_str(), history[0].edited.is_some()), ("one!", true));
}

#[tokio::test]
async fn sqlite_and_redis_replay_and_fold_entries_like_memory() {
    let dir = tempfile::tempdir().unwrap();
    replays_and_folds(ssechat::config::StoreUrl::Sqlite(dir.path().join("chat.db"))).await;
    let redis = crate::process::RedisServer::start(false);
    replays_and_folds(ssechat::config::StoreUrl::Redis(redis.url.clone())).await;
}

#[tokio::test]
async fn a_delete_and_an_edit_on_one_node_reach_every_node() {
    let redis = crate::process::RedisServer::start(false);
    let node = || TestApp::spawn_with(|c| c.store = ssechat::config::StoreUrl::Redis(redis.url.clone()));
    let (a, b) = (node().await, node().await);
    let mut on_b = b.subscribe("?room=nodes", &[]).await;
    let sent = a.say("nodes", "ana", "hello").await;
    take_back(&a, "nodes", sent.id, edit("hello!")).await;
    take_back(&a, "nodes", sent.id, Change::Delete).await;
    assert_eq!(on_b.next_message().await, sent);
    let edited = on_b.next_event().await;
    assert_eq!((edited.event.as_deref(), edited.json()["text"].as_str()), (Some("edit"), Some("hello!")));
    assert_eq!(edited.id, Some((sent.id + 1).to_string()));
    let deleted = on_b.next_event().await;
    assert_eq!((deleted.event.as_deref(), deleted.json()), (Some("delete"), json!({ "id": sent.id })));
    assert!(b.history("nodes").await.is_empty(), "history is shared, and current");
}

// Signed in: the author, another user, an admin.

fn basic(name: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}")))
}

/// An app with the users `ana` and `bob` (password `pw`), and the admin `root`.
async fn app_with_users(configure: impl FnOnce(&mut ssechat::Config)) -> TestApp {
    let app = TestApp::spawn_with(configure).await;
    for (name, admin) in [("ana", false), ("bob", false), ("root", true)] {
        ssechat::accounts::add_user(&*app.state.store, name, "pw", admin).await.unwrap();
    }
    app
}

/// `text` posted in `general` by the signed-in `name`.
async fn post_as(app: &TestApp, name: &str, text: &str) -> Value {
    let response = app
        .client
        .post(app.url("/send"))
        .header("authorization", basic(name, "pw"))
        .json(&json!({ "room": "general", "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn change_as(
    app: &TestApp,
    name: &str,
    method: Method,
    id: &Value,
    text: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(&format!("/rooms/general/messages/{id}")))
        .header("authorization", basic(name, "pw"));
    if let Some(text) = text {
        request = request.json(&json!({ "text": text }));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_author_deletes_and_edits_their_message_and_streams_hear_of_it() {
    let app = app_with_users(|_| {}).await;
    let mut stream = app.subscribe("?room=general", &[]).await;
    let posted = post_as(&app, "ana", "first words").await;
    assert_eq!(posted["user"], true);
    assert_eq!(stream.next_message().await.id, posted["id"].as_u64().unwrap());

    let edited = change_as(&app, "ana", Method::PATCH, &posted["id"], Some("better words")).await;
    assert_eq!(edited.status(), 200);
    let edit = stream.next_event().await;
    assert_eq!(edit.event.as_deref(), Some("edit"));
    let edit = edit.json();
    assert_eq!((edit["text"].clone(), edit["user"].clone()), (json!("better words"), json!(true)));
    assert!(edit["edited"].is_string(), "{edit}");

    let deleted = change_as(&app, "ana", Method::DELETE, &posted["id"], None).await;
    assert_eq!(deleted.status(), 200);
    let delete = stream.next_event().await;
    assert_eq!(delete.event.as_deref(), Some("delete"));
    assert_eq!(delete.json(), json!({ "id": posted["id"] }));
    assert!(app.history("general").await.is_empty());
}

#[tokio::test]
async fn the_form_posts_work_for_a_signed_in_author_without_javascript() {
    let app = app_with_users(|_| {}).await;
    let posted = post_as(&app, "ana", "typo here").await;
    let at = format!("/rooms/general/messages/{}", posted["id"]);
    let form = |path: String, fields: &[(&str, &str)]| {
        app.client
            .post(app.url(&path))
            .header("accept", BROWSER)
            .header("authorization", basic("ana", "pw"))
            .form(fields)
    };
    let edit_page = app
        .client
        .get(app.url(&format!("{at}/edit")))
        .header("accept", BROWSER)
        .header("authorization", basic("ana", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(edit_page.status(), 200);
    assert!(edit_page.text().await.unwrap().contains("typo here"));
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let edited =
        no_redirects.execute(form(format!("{at}/edit"), &[("text", "no typo")]).build().unwrap()).await;
    assert_eq!(edited.unwrap().status(), 303);
    assert_eq!(app.history("general").await[0].text.as_str(), "no typo");
    let deleted = no_redirects.execute(form(format!("{at}/delete"), &[]).build().unwrap()).await;
    assert_eq!(deleted.unwrap().status(), 303);
    assert!(app.history("general").await.is_empty());
}

#[tokio::test]
async fn past_the_edit_window_an_edit_is_409_and_a_delete_still_works() {
    let app = app_with_users(|c| c.edit_window = std::time::Duration::ZERO).await;
    let posted = post_as(&app, "ana", "said").await;
    let late = change_as(&app, "ana", Method::PATCH, &posted["id"], Some("unsaid")).await;
    let (status, words) = refusal(late).await;
    assert_eq!(status, 409, "{words}");
    assert!(words.contains("edit"), "{words}");
    assert_eq!(change_as(&app, "ana", Method::DELETE, &posted["id"], None).await.status(), 200);
}

#[tokio::test]
async fn others_may_not_change_a_message_and_an_admin_may_only_delete_it() {
    let app = app_with_users(|_| {}).await;
    let posted = post_as(&app, "ana", "mine").await;
    for method in [Method::DELETE, Method::PATCH] {
        let text = (method == Method::PATCH).then_some("bob's now");
        let (status, words) =
            refusal(change_as(&app, "bob", method.clone(), &posted["id"], text).await).await;
        assert_eq!(status, 403, "{method}: {words}");
        assert!(words.contains("author"), "{method} names who may: {words}");
    }
    let (status, words) =
        refusal(change_as(&app, "root", Method::PATCH, &posted["id"], Some("admin's words")).await).await;
    assert_eq!(status, 403, "an admin does not edit other people's words: {words}");
    assert_eq!(change_as(&app, "root", Method::DELETE, &posted["id"], None).await.status(), 200);
}

#[tokio::test]
async fn a_guests_message_under_a_name_registered_later_is_not_that_users() {
    let app = TestApp::spawn().await;
    let guest = app.say("general", "carol", "a guest said this").await;
    ssechat::accounts::add_user(&*app.state.store, "carol", "pw", false).await.unwrap();
    let id = json!(guest.id);
    for method in [Method::DELETE, Method::PATCH] {
        let text = (method == Method::PATCH).then_some("carol's now");
        let (status, words) = refusal(change_as(&app, "carol", method.clone(), &id, text).await).await;
        assert_eq!(status, 403, "{method}: {words}");
    }
    assert_eq!(app.history("general").await, [guest]);
}

#[tokio::test]
async fn a_ban_with_purge_deletes_the_users_recent_messages_as_entries() {
    let app = app_with_users(|_| {}).await;
    let mut stream = app.subscribe("?room=general", &[]).await;
    let first = post_as(&app, "ana", "spam one").await;
    post_as(&app, "bob", "a real message").await;
    post_as(&app, "ana", "spam two").await;
    app.say("general", "carol", "a guest's message").await;
    for _ in 0..4 {
        stream.next_message().await;
    }
    let ban = |body: Value| {
        app.client
            .post(app.url("/admin/bans"))
            .header("authorization", basic("root", "pw"))
            .json(&body)
            .send()
    };
    let (status, words) =
        refusal(ban(json!({ "target": "203.0.113.9", "purge": true })).await.unwrap()).await;
    assert_eq!(status, 400, "{words}");
    assert!(words.contains("purge") && words.contains("do not record the address"), "{words}");

    let banned = ban(json!({ "target": "ana", "purge": true })).await.unwrap();
    assert_eq!(banned.status(), 201);
    let banned: Value = banned.json().await.unwrap();
    assert_eq!(banned["purged"], 2, "{banned}");
    let delete = stream.next_event().await;
    assert_eq!((delete.event.as_deref(), delete.json()), (Some("delete"), json!({ "id": first["id"] })));
    let left: Vec<String> = app.history("general").await.iter().map(|m| m.text.as_str().to_owned()).collect();
    assert_eq!(left, ["a real message", "a guest's message"], "only what ana posted");
}

#[tokio::test]
async fn the_rules_and_bans_apply_before_anything_is_said_about_a_message() {
    let app = app_with_users(|_| {}).await;
    let posted = post_as(&app, "ana", "mine").await;
    let ban = ssechat::policy::Ban {
        target: ssechat::policy::BanTarget::parse("ana").unwrap(),
        room: None,
        until: None,
    };
    app.state.store.add_ban(&ban).await.unwrap();
    app.state.policy.reload().await.unwrap();
    let (status, words) = refusal(change_as(&app, "ana", Method::DELETE, &posted["id"], None).await).await;
    assert_eq!(status, 403, "{words}");
    assert!(words.contains("ana is banned"), "{words}");

    let deny = ssechat::policy::Rule {
        subject: ssechat::policy::Subject::Everyone,
        pattern: ssechat::policy::RoomPattern::parse("general").unwrap(),
        perm: ssechat::policy::Perm::Deny,
    };
    app.state.store.set_rule(&deny).await.unwrap();
    app.state.policy.reload().await.unwrap();
    for id in [posted["id"].clone(), json!(999_999)] {
        let response =
            app.client.delete(app.url(&format!("/rooms/general/messages/{id}"))).send().await.unwrap();
        let (status, words) = refusal(response).await;
        assert_eq!(status, 401, "a guest learns nothing of the room, not even a 404: {words}");
    }
}
