//! Who may do what: access rules, refusals on every endpoint, streams that lose access, bans
//! and slow mode; the `ssechat access|ban|unban|room` commands against the real binary.
//!
//! Every request here is a guest's (subject `*`): the precedence between users, `@users` and
//! `*` is covered by the unit tests of `policy::evaluate`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ssechat::domain::{NewMessage, RoomName, Timestamp};
use ssechat::policy::{Ban, BanTarget, DefaultAccess, Perm, RoomPattern, RoomSettings, Rule, Subject};

use crate::helpers::{EventStream, TestApp, WAIT, eventually};
use crate::process::{RedisServer, Server};
use crate::raw::Raw;

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn rule(subject: &str, pattern: &str, perm: &str) -> Rule {
    Rule {
        subject: Subject::parse(subject).unwrap(),
        pattern: RoomPattern::parse(pattern).unwrap(),
        perm: Perm::parse(perm).unwrap(),
    }
}

async fn set_rule(app: &TestApp, subject: &str, pattern: &str, perm: &str) {
    app.state.store.set_rule(&rule(subject, pattern, perm)).await.unwrap();
}

/// Status and `error` of a JSON answer (a stream's body is left unread).
async fn refusal(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    if status < 400 {
        return (status, String::new());
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

/// What a guest gets from every endpoint that reads or writes `room`.
async fn every_endpoint(app: &TestApp, room: &str) -> Vec<(&'static str, u16, String)> {
    let c = &app.client;
    let message = json!({ "room": room, "author": "ana", "text": "hi" });
    vec![
        ("events", refusal(app.get(&format!("/events?room={room}")).await).await),
        ("history", refusal(app.get(&format!("/history?room={room}")).await).await),
        ("send", refusal(app.post_json(message).await).await),
        (
            "typing",
            refusal(
                c.post(app.url("/typing"))
                    .json(&json!({"room": room, "author": "ana"}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ),
        ("presence", refusal(app.get(&format!("/rooms/{room}/presence")).await).await),
    ]
    .into_iter()
    .map(|(what, (status, error))| (what, status, error))
    .collect()
}

#[tokio::test]
async fn default_deny_refuses_guests_everywhere_until_a_rule_opens_the_room() {
    let app = TestApp::spawn_with(|c| c.default_access = DefaultAccess::Deny).await;
    for (what, status, error) in every_endpoint(&app, "team").await {
        assert_eq!(status, 401, "{what}: {error}");
        assert!(error.contains("\"team\"") && error.contains("default access (deny)"), "{what}: {error}");
    }
    // A browser gets a page that links to the sign-in page, coming back here.
    let page = app.client.get(app.url("/rooms/team")).header("accept", BROWSER).send().await.unwrap();
    assert_eq!(page.status(), 401);
    let html = page.text().await.unwrap();
    assert!(html.contains("login?next=%2Frooms%2Fteam"), "{html}");
    let form = app.post_as_browser("/send", &[("room", "team"), ("author", "ana"), ("text", "hi")]).await;
    assert_eq!(form.status(), 401);
    assert!(form.text().await.unwrap().contains("login?next=%2Frooms%2Fteam"));

    set_rule(&app, "*", "team", "rw").await;
    eventually("the rule to apply", || async { app.get("/history?room=team").await.status() == 200 }).await;
    for (what, status, error) in every_endpoint(&app, "team").await {
        assert!(matches!(status, 200 | 201 | 204), "{what}: {status} {error}");
    }
    assert_eq!(app.get("/history?room=other").await.status(), 401, "other rooms stay closed");
}

#[tokio::test]
async fn the_room_list_hides_rooms_a_guest_may_not_read() {
    let app = TestApp::spawn().await;
    app.say("lobby", "ana", "hi").await;
    let secret = NewMessage::parse("secret-plans", Some("ana"), Some("shh")).unwrap();
    app.state.store.append(secret).await.unwrap();
    set_rule(&app, "*", "secret-*", "deny").await;
    eventually("the secret room to be hidden", || async {
        let rooms: Vec<Value> = app.get("/rooms").await.json().await.unwrap();
        rooms.iter().all(|r| r["name"] != "secret-plans") && rooms.iter().any(|r| r["name"] == "lobby")
    })
    .await;
    let page = app.client.get(app.url("/rooms/lobby")).header("accept", BROWSER).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("rooms/lobby") && !html.contains("secret-plans"), "{html}");
}

#[tokio::test]
async fn a_read_only_room_shows_its_messages_and_why_no_one_may_post_and_wo_posts_blind() {
    let app = TestApp::spawn().await;
    let said = app.say("news", "ana", "extra extra").await;
    set_rule(&app, "*", "news", "ro").await;
    set_rule(&app, "*", "inbox", "wo").await;
    eventually("the rules to apply", || async {
        app.post_json(json!({"room": "news", "author": "bob", "text": "x"})).await.status() == 401
    })
    .await;
    let html = app.get("/rooms/news").await.text().await.unwrap();
    assert!(html.contains(said.text.as_str()), "the messages are shown");
    assert!(html.contains("id=\"read-only\"") && html.contains("guests may not post in room"), "{html}");
    assert!(
        html.contains(
            "id=\"composer\" class=\"composer\" method=\"post\" action=\"../send?room=news\" hidden"
        )
    );
    let (status, error) =
        refusal(app.post_json(json!({"room": "news", "author": "bob", "text": "x"})).await).await;
    assert_eq!(status, 401);
    assert!(error.contains("`* news ro`"), "{error}");
    // Write-only: posting works, reading does not.
    app.say("inbox", "bob", "for the team").await;
    assert_eq!(app.get("/history?room=inbox").await.status(), 401);
    assert_eq!(app.get("/events?room=inbox").await.status(), 401);
}

/// Opens a stream on a raw connection (the fast path), after `before` on the same one.
async fn raw_stream(app: &TestApp, before: Option<&str>, room: &str) -> Raw {
    let mut raw = Raw::connect(app.addr).await;
    if let Some(path) = before {
        raw.send(&format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")).await;
        assert_eq!(raw.response().await.status, 200);
    }
    raw.send(&format!("GET /events?room={room} HTTP/1.1\r\nhost: x\r\n\r\n")).await;
    let head = raw.response().await;
    assert_eq!(head.status, 200);
    assert!(raw.fill_until(b"retry:").await);
    raw
}

/// Reads to `event: revoked` and then to the end of the stream (the connection closes).
async fn revoked(raw: &mut Raw) -> String {
    assert!(raw.fill_until(b"event: revoked").await, "revoked: {}", raw.text());
    assert!(raw.fill_until(b"0\r\n\r\n").await, "the body ends: {}", raw.text());
    raw.text()
}

#[tokio::test]
async fn a_rule_change_ends_open_streams_on_both_paths_with_a_revoked_event() {
    let app = TestApp::spawn_with(|c| c.cors_origin = vec!["http://friend.example".into()]).await;
    let mut fast = raw_stream(&app, None, "ops").await;
    let mut after_page = raw_stream(&app, Some("/rooms/ops"), "ops").await;
    // With an Origin that CORS may allow, the stream is served by the router.
    let mut routed = app.subscribe("?room=ops", &[("origin", "http://friend.example")]).await;
    let mut elsewhere = app.subscribe("?room=lobby", &[]).await;
    let mut ndjson = app.events("?room=ops", &[("accept", "application/x-ndjson")]).await;

    set_rule(&app, "*", "ops", "deny").await;
    let text = revoked(&mut fast).await;
    assert!(text.contains("guests may not read room \\\"ops\\\""), "{text}");
    revoked(&mut after_page).await;
    let block = routed.next_event().await;
    assert_eq!(block.event.as_deref(), Some("revoked"));
    assert!(block.json()["reason"].as_str().unwrap().contains("`* ops deny`"));
    routed.expect_end().await;
    let line = ndjson.next_line().await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["event"], "revoked", "{line}");
    ndjson.expect_end().await;
    elsewhere.expect_quiet().await;
    // (A new connection: the server closed those of the streams it ended on the fast path.)
    let again = reqwest::get(app.url("/events?room=ops")).await.unwrap();
    assert_eq!(again.status(), 401, "and it stays closed");
}

#[tokio::test]
async fn an_ip_ban_refuses_posts_saying_until_when_and_ends_the_clients_streams() {
    let app = TestApp::spawn().await;
    // Its own client: the server closes the connection of the stream it ends.
    let mut stream = EventStream::new(reqwest::get(app.url("/events?room=lobby")).await.unwrap());
    assert!(stream.next_block().await.unwrap().retry.is_some(), "subscribed");
    let until = Timestamp::from_millis(Timestamp::now().millis() + 3_600_000).unwrap();
    let ban = Ban { target: BanTarget::parse("127.0.0.0/8").unwrap(), room: None, until: Some(until) };
    app.state.store.add_ban(&ban).await.unwrap();
    let block = stream.next_event().await;
    assert_eq!(block.event.as_deref(), Some("revoked"));
    assert!(block.json()["reason"].as_str().unwrap().contains("127.0.0.0/8 is banned"));
    stream.expect_end().await;
    let (status, error) =
        refusal(app.post_json(json!({"room": "lobby", "author": "x", "text": "y"})).await).await;
    assert_eq!(status, 403);
    assert!(error.contains(&format!("until {}", until.rfc3339())), "{error}");
    // Lifted: allowed again.
    app.state.store.remove_ban(&ban.target, None).await.unwrap();
    eventually("the ban to lift", || async { app.get("/history?room=lobby").await.status() == 200 }).await;
}

#[tokio::test]
async fn slow_mode_answers_429_with_the_true_retry_after_and_the_page_says_so() {
    let app = TestApp::spawn().await;
    let room = RoomName::parse("calm").unwrap();
    app.state.store.set_room(&room, RoomSettings { slow: Some(Duration::from_secs(60)) }).await.unwrap();
    app.state.policy.reload().await.unwrap();
    app.say("calm", "ana", "first").await;
    let second = app.post_json(json!({"room": "calm", "author": "ana", "text": "second"})).await;
    assert_eq!(second.status(), 429);
    let wait: u64 = second.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let (_, error) = refusal(second).await;
    assert!(error.contains("slow mode") && error.contains("1m"), "{error}");
    app.say("busy", "ana", "other rooms are not slow").await;
    let html = app.get("/rooms/calm").await.text().await.unwrap();
    assert!(html.contains("id=\"slow-mode\"") && html.contains("one message per 1m"), "{html}");
}

#[tokio::test]
async fn the_admin_api_is_for_administrators_only() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/admin/bans").await.status(), 401);
    let add =
        app.client.post(app.url("/admin/bans")).json(&json!({"target": "10.0.0.1"})).send().await.unwrap();
    assert_eq!(add.status(), 401);
    let remove = app.client.delete(app.url("/admin/bans?target=10.0.0.1")).send().await.unwrap();
    assert_eq!(remove.status(), 401);
    assert!(app.state.store.directory().await.unwrap().bans.is_empty());
}

/// Runs `ssechat ARGS` to its end: exit success, stdout, stderr.
async fn command(args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechat"))
            .args(["--log", "warn"])
            .args(args)
            .output(),
    )
    .await
    .expect("the command ends")
    .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn commands_change_a_running_servers_rules_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("chat.db").display());
    let server = Server::start(&["--store", &store]).await;
    let client = reqwest::Client::new();
    let status = |room: &'static str| {
        let url = format!("{}/history?room={room}", server.base);
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("secret").await, 200);

    let (ok, out, err) = command(&["access", "*", "secret", "deny", "--store", &store]).await;
    assert!(ok, "{err}");
    assert!(out.contains("rule set: * secret deny"), "{out}");
    eventually("the server to refuse", || async { status("secret").await == 401 }).await;
    let (ok, out, _) = command(&["--store", &store, "access"]).await;
    assert!(ok && out.contains("* secret deny"), "{out}");

    let (ok, out, err) = command(&["access", "--reset", "*", "--store", &store]).await;
    assert!(ok && out.contains("removed 1 rule"), "{out}{err}");
    eventually("the server to allow", || async { status("secret").await == 200 }).await;

    let (ok, out, err) = command(&["ban", "127.0.0.1", "--for", "1h", "--store", &store]).await;
    assert!(ok && out.contains("127.0.0.1/32 is banned from every room until 20"), "{out}{err}");
    eventually("the ban to apply", || async { status("lobby").await == 403 }).await;
    let (ok, out, _) = command(&["unban", "127.0.0.1", "--store", &store]).await;
    assert!(ok && out.contains("lifted"), "{out}");
    eventually("the ban to lift", || async { status("lobby").await == 200 }).await;

    let (ok, out, _) = command(&["room", "calm", "--slow", "30s", "--store", &store]).await;
    assert!(ok && out.contains("one message per 30s"), "{out}");
    let page = format!("{}/rooms/calm", server.base);
    eventually("the page to say so", || async {
        client.get(&page).send().await.unwrap().text().await.unwrap().contains("id=\"slow-mode\"")
    })
    .await;
    let (ok, out, _) = command(&["room", "calm", "--slow", "off", "--store", &store]).await;
    assert!(ok && out.contains("room calm: slow mode off"), "{out}");

    for (args, says) in [
        (&["access", "*", "secret", "write"][..], "rw, ro, wo, deny or mod"),
        (&["access", "*", "Bad Room", "rw"], "is not a room pattern"),
        (&["access", "*", "secret"], "usage: ssechat access"),
        (&["ban", "10.0.0.300"], "not an IP address or CIDR range"),
        (&["unban", "10.9.9.9"], "no such ban"),
        (&["room", "calm", "--slow", "soon"], "not a duration"),
    ] {
        let (ok, _, err) = command(&[args, &["--store", &store][..]].concat()).await;
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    let (ok, _, err) = command(&["access", "--store", "memory"]).await;
    assert!(!ok && err.contains("memory store lives inside the server process"), "{err}");
}

#[tokio::test]
async fn a_rule_set_with_redis_ends_a_stream_on_another_node_within_a_second() {
    let redis = RedisServer::start(false);
    let store = redis.url.clone();
    let one = Server::start(&["--store", &store]).await;
    let two = Server::start(&["--store", &store]).await;
    let client = reqwest::Client::new();
    let open = |base: &str| client.get(format!("{base}/events?room=ops")).send();
    let mut on_one = EventStream::new(open(&one.base).await.unwrap());
    let mut on_two = EventStream::new(open(&two.base).await.unwrap());
    assert!(on_one.next_block().await.unwrap().retry.is_some());
    assert!(on_two.next_block().await.unwrap().retry.is_some());

    let (ok, _, err) = command(&["access", "*", "ops", "deny", "--store", &store]).await;
    assert!(ok, "{err}");
    let written = Instant::now();
    for stream in [&mut on_one, &mut on_two] {
        let block = stream.next_event().await;
        assert_eq!(block.event.as_deref(), Some("revoked"), "{block:?}");
        stream.expect_end().await;
    }
    let took = written.elapsed();
    assert!(took < Duration::from_secs(1), "every node ended its stream {took:?} after the write");
    // A new connection: the ended streams' connections were closed by the server.
    let refused = reqwest::get(format!("{}/history?room=ops", two.base)).await.unwrap();
    assert_eq!(refused.status(), 401);
    let (ok, out, _) = command(&["access", "--store", &store]).await;
    assert!(ok && out.contains("* ops deny"), "{out}");
}

#[tokio::test]
async fn slow_mode_holds_across_nodes_sharing_redis() {
    let redis = RedisServer::start(false);
    let node = || {
        let url = redis.url.clone();
        TestApp::spawn_with(move |c| c.store = ssechat::config::StoreUrl::Redis(url))
    };
    let (one, two) = (node().await, node().await);
    let room = RoomName::parse("calm").unwrap();
    one.state.store.set_room(&room, RoomSettings { slow: Some(Duration::from_secs(60)) }).await.unwrap();
    eventually("both nodes to see slow mode", || async {
        let one_sees = one.state.policy.directory().await.unwrap().settings(&room).slow.is_some();
        one_sees && two.state.policy.directory().await.unwrap().settings(&room).slow.is_some()
    })
    .await;
    one.say("calm", "ana", "first").await;
    let second = two.post_json(json!({"room": "calm", "author": "ana", "text": "second"})).await;
    assert_eq!(second.status(), 429, "the turn was taken on the other node");
    assert!(second.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn in_slow_mode_a_retry_of_a_stored_message_gets_the_original() {
    let app = TestApp::spawn().await;
    let room = RoomName::parse("calm").unwrap();
    app.state.store.set_room(&room, RoomSettings { slow: Some(Duration::from_secs(60)) }).await.unwrap();
    app.state.policy.reload().await.unwrap();
    let send = || {
        let body = json!({"room": "calm", "author": "ana", "text": "once"});
        app.client.post(app.url("/send")).header("idempotency-key", "retry-1").json(&body).send()
    };
    assert_eq!(send().await.unwrap().status(), 201);
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), 200, "a replay, not a second turn");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn an_ip_ban_behind_a_trusted_proxy_is_for_the_client_it_names() {
    let app = TestApp::spawn_with(|c| c.trusted_proxy = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let ban = Ban { target: BanTarget::parse("203.0.113.7").unwrap(), room: None, until: None };
    app.state.store.add_ban(&ban).await.unwrap();
    app.state.policy.reload().await.unwrap();
    let from = |client: &str| {
        let body = json!({"room": "lobby", "author": "x", "text": "y"});
        app.client.post(app.url("/send")).header("x-forwarded-for", client).json(&body).send()
    };
    let (status, error) = refusal(from("203.0.113.7").await.unwrap()).await;
    assert_eq!(status, 403);
    assert!(error.contains("until the ban is lifted"), "{error}");
    assert_eq!(from("203.0.113.8").await.unwrap().status(), 201, "the proxy itself is not banned");
    let stream = app.client.get(app.url("/events?room=lobby")).header("x-forwarded-for", "203.0.113.7");
    assert_eq!(stream.send().await.unwrap().status(), 403);
}
