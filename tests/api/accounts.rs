//! Accounts and sign-in: the CLI beside a running server (SQLite and Redis), `/login` by form
//! and JSON, the cookie, Bearer and Basic on every path (the stream fast path too), the
//! sign-in limits and equal timing, and honest names.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use ssechat::accounts;

use crate::helpers::{TestApp, WAIT, eventually};
use crate::process::{RedisServer, Server};
use crate::raw::Raw;

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Runs `ssechat ARGS` against `store`; (succeeded, stdout, stderr).
pub async fn cli(store: &str, password: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechat"));
    command.args(args).env("SSECHAT_STORE", store).env_remove("SSECHAT_PASSWORD");
    if let Some(password) = password {
        command.env("SSECHAT_PASSWORD", password);
    }
    command.stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(WAIT, command.output()).await.expect("the command ends").unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// Runs a command that must succeed; its stderr says why when it does not.
async fn succeeds(command: impl std::future::Future<Output = (bool, String, String)>) {
    let (ok, out, err) = command.await;
    assert!(ok, "the command failed: {err}{out}");
}

fn basic(name: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}")))
}

async fn send_as(base: &str, authorization: &str, text: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/send"))
        .header("authorization", authorization)
        .json(&json!({ "author": "typed", "text": text }))
        .send()
        .await
        .unwrap()
}

/// Every command against a running server's store, and the server sees each change at once.
async fn commands_work_beside_a_running_server(store: &str) {
    // Its commands write beside a running server under SQLite's 5 s busy timeout: not while
    // this process holds thousands of sockets (a full run failed one command once, each on
    // SQLite and on Redis, while the abuse tests ran).
    let _heavy = crate::helpers::HEAVY.lock().await;
    commands_work_beside_a_server(store).await;
}

/// [`commands_work_beside_a_running_server`] for a caller that holds `HEAVY` already.
pub async fn commands_work_beside_a_server(store: &str) {
    let server = Server::start(&["--store", store]).await;
    let (ok, out, err) = cli(store, Some("s3cret pass"), &["user", "add", "Ana", "--admin"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("added admin Ana"), "{out}");
    // The password from stdin, when there is no SSECHAT_PASSWORD and no terminal.
    let mut add_bob = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechat"));
    add_bob.args(["user", "add", "bob"]).env("SSECHAT_STORE", store).env_remove("SSECHAT_PASSWORD");
    add_bob.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = add_bob.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    child.stdin.take().unwrap().write_all(b"bob pass\n").await.unwrap();
    assert!(child.wait().await.unwrap().success());
    // The running server keeps guests off the new names within a second (its snapshot).
    let client = reqwest::Client::new();
    let as_guest = |name: &'static str| {
        client.post(format!("{}/send", server.base)).json(&json!({ "author": name, "text": "me?" })).send()
    };
    eventually("a guest refused bob's name", || async { as_guest("Bob").await.unwrap().status() == 403 })
        .await;

    let (ok, _, err) = cli(store, Some("x"), &["user", "add", "ANA"]).await;
    assert!(!ok && err.contains("is taken") && err.contains("\"Ana\""), "{err}");
    let (_, list, _) = cli(store, None, &["user", "list"]).await;
    assert!(list.contains("Ana\tadmin") && list.contains("bob\tuser"), "{list}");
    let (ok, flagged, err) = cli("memory", None, &["user", "list", "--store", store]).await;
    assert!(ok && flagged == list, "--store after the command wins over the environment: {err}");

    // A token: shown once, works as Bearer at once, then deleted.
    let (ok, token, err) =
        cli(store, None, &["token", "add", "bob", "--expires", "1d", "--label", "ci"]).await;
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 43, "256 bits, base64url: {token}");
    let sent = send_as(&server.base, &format!("Bearer {token}"), "by token").await;
    assert_eq!(sent.status(), 201);
    let message: Value = sent.json().await.unwrap();
    assert_eq!((message["author"].as_str(), message["user"].as_bool()), (Some("bob"), Some(true)));
    let (_, tokens, _) = cli(store, None, &["token", "list", "bob"]).await;
    assert!(tokens.contains("\tci") && !tokens.contains(&token), "the secret is not kept: {tokens}");
    succeeds(cli(store, None, &["token", "del", &token])).await;
    assert_eq!(send_as(&server.base, &format!("Bearer {token}"), "deleted").await.status(), 401);

    // A new password: the old one is refused at once, the new one works.
    assert_eq!(send_as(&server.base, &basic("bob", "bob pass"), "old").await.status(), 201);
    succeeds(cli(store, Some("new pass"), &["user", "passwd", "bob"])).await;
    assert_eq!(send_as(&server.base, &basic("bob", "bob pass"), "old").await.status(), 401);
    assert_eq!(send_as(&server.base, &basic("bob", "new pass"), "new").await.status(), 201);
    succeeds(cli(store, None, &["user", "del", "bob"])).await;
    assert_eq!(send_as(&server.base, &basic("bob", "new pass"), "gone").await.status(), 401);

    // Clear errors.
    let (ok, _, err) = cli(store, None, &["user", "del", "zed"]).await;
    assert!(!ok && err.contains("no such user: zed"), "{err}");
    let (ok, _, err) = cli(store, None, &["token", "add", "Ana", "--expires", "3x"]).await;
    assert!(!ok && err.contains("--expires") && err.contains("3x"), "{err}");
}

#[tokio::test]
async fn commands_work_beside_a_running_server_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("chat.db").display());
    commands_work_beside_a_running_server(&store).await;
}

#[tokio::test]
async fn commands_work_beside_a_running_server_on_redis() {
    let redis = RedisServer::start(false);
    commands_work_beside_a_running_server(&redis.url).await;
}

#[tokio::test]
async fn commands_refuse_the_memory_store_clearly() {
    let (ok, _, err) = cli("memory", Some("x"), &["user", "add", "ana"]).await;
    assert!(!ok && err.contains("memory") && err.contains("--store sqlite:"), "{err}");
}

/// An app with the users `ana` (password `ana pass`) and `Coco` (`coco pass`), in its
/// snapshot already (the watcher would take up to a poll).
async fn app_with_users(configure: impl FnOnce(&mut ssechat::Config)) -> TestApp {
    let app = TestApp::spawn_with(configure).await;
    accounts::add_user(&*app.state.store, "ana", "ana pass", false).await.unwrap();
    accounts::add_user(&*app.state.store, "Coco", "coco pass", false).await.unwrap();
    app.state.policy.reload().await.unwrap();
    app
}

async fn sign_in_form(app: &TestApp, form: &[(&str, &str)], headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.post(app.url("/login")).header("accept", BROWSER).form(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn set_cookie(response: &reqwest::Response) -> String {
    response.headers().get("set-cookie").expect("a cookie is set").to_str().unwrap().to_owned()
}

/// `name=value` of a `Set-Cookie`, for the `Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_browser_signs_in_with_the_form_and_is_sent_back() {
    let app = app_with_users(|_| {}).await;
    let page = app.client.get(app.url("/login?next=/rooms/team")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"name="next" value="/rooms/team""#), "{html}");
    assert!(html.contains(r#"name="password" type="password""#));

    let signed_in =
        sign_in_form(&app, &[("name", "ana"), ("password", "ana pass"), ("next", "/rooms/team")], &[]).await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/rooms/team");
    let cookie = set_cookie(&signed_in);
    assert!(cookie.starts_with("ssechat_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");

    // Another site as `next`: the front page instead.
    let away =
        sign_in_form(&app, &[("name", "ana"), ("password", "ana pass"), ("next", "//evil.example/")], &[])
            .await;
    assert_eq!(away.headers()["location"], "./");
    assert_ne!(cookie_pair(&set_cookie(&away)), cookie_pair(&cookie), "a new session at every sign-in");

    // The page knows who it is: no name field, a sign-out button, own messages by the user.
    let page =
        app.client.get(app.url("/rooms/team")).header("cookie", cookie_pair(&cookie)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("Signed in as <b>ana</b>"), "{html}");
    assert!(html.contains(r#"action="../logout?next=/rooms/team""#), "{html}");
    assert!(html.contains(r#"type="hidden" id="author" name="author" value="ana""#), "{html}");
    let guest = app.get("/rooms/team").await.text().await.unwrap();
    assert!(guest.contains(r#"href="../login?next=/rooms/team""#) && !guest.contains("Signed in as"));
}

#[tokio::test]
async fn a_script_signs_in_with_json() {
    let app = app_with_users(|_| {}).await;
    let response = app
        .client
        .post(app.url("/login"))
        .json(&json!({"name": "ANA", "password": "ana pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = set_cookie(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"name": "ana", "admin": false}));
    // The cookie signs the script in: its message is ana's, verified.
    let sent = app
        .client
        .post(app.url("/send"))
        .header("cookie", cookie_pair(&cookie))
        .json(&json!({"author": "someone else", "text": "hi"}))
        .send()
        .await
        .unwrap();
    let message: Value = sent.json().await.unwrap();
    assert_eq!((message["author"].as_str(), message["user"].as_bool()), (Some("ana"), Some(true)));
    // A guest's message carries no `user` at all, as before accounts.
    let guest: Value = app.post_json(json!({"author": "guest", "text": "hi"})).await.json().await.unwrap();
    assert_eq!(guest.get("user"), None);
}

#[tokio::test]
async fn behind_an_https_proxy_the_cookie_is_secure_with_the_host_prefix() {
    let app = app_with_users(|c| c.trusted_proxy = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let form = [("name", "ana"), ("password", "ana pass")];
    let response = sign_in_form(&app, &form, &[("x-forwarded-proto", "https")]).await;
    let cookie = set_cookie(&response);
    assert!(cookie.starts_with("__Host-ssechat_session="), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let page = app.client.get(app.url("/")).header("cookie", cookie_pair(&cookie)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("Signed in as <b>ana</b>"));
}

#[tokio::test]
async fn a_failed_sign_in_says_one_thing_whatever_the_cause() {
    let app = app_with_users(|_| {}).await;
    let wrong = sign_in_form(&app, &[("name", "ana"), ("password", "nope"), ("next", "/rooms/x")], &[]).await;
    let unknown =
        sign_in_form(&app, &[("name", "nobody"), ("password", "nope"), ("next", "/rooms/x")], &[]).await;
    assert_eq!(
        (wrong.status(), unknown.status()),
        (reqwest::StatusCode::UNAUTHORIZED, reqwest::StatusCode::UNAUTHORIZED)
    );
    assert!(wrong.headers().get("set-cookie").is_none());
    let (wrong, unknown) = (wrong.text().await.unwrap(), unknown.text().await.unwrap());
    assert!(wrong.contains("wrong name or password") && wrong.contains(r#"value="/rooms/x""#), "{wrong}");
    assert_eq!(wrong.replace("\"ana\"", "\"nobody\""), unknown, "the same page, but for the name typed");
    let json = |name: &'static str| {
        let client = app.client.clone();
        let url = app.url("/login");
        async move {
            let response =
                client.post(url).json(&json!({"name": name, "password": "nope"})).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    assert_eq!(json("ana").await, json("nobody").await);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = app_with_users(|_| {}).await;
    let cookie = cookie_pair(&set_cookie(
        &sign_in_form(&app, &[("name", "ana"), ("password", "ana pass")], &[]).await,
    ));
    let out = app
        .client
        .post(app.url("/logout"))
        .header("cookie", &cookie)
        .header("accept", BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(set_cookie(&out).contains("Max-Age=0"));
    // The old id is over, even if a browser kept sending it.
    let page = app.client.get(app.url("/")).header("cookie", &cookie).send().await.unwrap();
    assert!(!page.text().await.unwrap().contains("Signed in as"));
}

#[tokio::test]
async fn deleting_a_user_or_changing_the_password_ends_their_sessions_at_once() {
    let app = app_with_users(|_| {}).await;
    let cookie = sign_in(&app).await;
    assert!(signed_in(&app, &cookie).await);
    let credential = ssechat::sign_in::Credential {
        user: ssechat::domain::Author::parse("ana").unwrap(),
        epoch: accounts::find(&*app.state.store, "ana").await.unwrap().epoch,
    };
    assert!(ssechat::accounts::credential_holds(&*app.state.store, &credential).await);
    accounts::set_password(&*app.state.store, "ana", "ana pass").await.unwrap();
    assert!(!signed_in(&app, &cookie).await, "a new password (even the same one) ends the session");
    assert!(!ssechat::accounts::credential_holds(&*app.state.store, &credential).await, "and open streams");

    let cookie = sign_in(&app).await;
    accounts::delete_user(&*app.state.store, "ana").await.unwrap();
    assert!(!signed_in(&app, &cookie).await);
}

/// A signed-in stream of a user whose password changes, or who is deleted, ends at once
/// with `event: revoked` saying so; a guest's stream beside it goes on.
#[tokio::test]
async fn deleting_a_user_or_changing_the_password_ends_their_open_streams() {
    let app = app_with_users(|_| {}).await;
    let open = |authorization: Option<String>| async move {
        let mut raw = Raw::connect(app.addr).await;
        let request = match authorization {
            Some(authorization) => stream_request(&authorization),
            None => "GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n".to_owned(),
        };
        raw.send(&request).await;
        assert_eq!(raw.response().await.status, 200);
        assert!(raw.fill_until(b"retry:").await);
        raw
    };
    let (mut ana, mut coco, mut guest) = (
        open(Some(basic("ana", "ana pass"))).await,
        open(Some(basic("Coco", "coco pass"))).await,
        open(None).await,
    );
    accounts::set_password(&*app.state.store, "ana", "new pass").await.unwrap();
    assert!(ana.fill_until(b"event: revoked").await, "ana's stream ends: {}", ana.text());
    assert!(ana.text().contains("signed out"), "{}", ana.text());
    accounts::delete_user(&*app.state.store, "Coco").await.unwrap();
    assert!(coco.fill_until(b"event: revoked").await, "Coco's stream ends: {}", coco.text());
    app.say("general", "bob", "still here").await;
    assert!(guest.fill_until(b"still here").await, "a guest's stream goes on");
    assert!(!guest.text().contains("revoked"));
}

async fn sign_in(app: &TestApp) -> String {
    let response = sign_in_form(app, &[("name", "ana"), ("password", "ana pass")], &[]).await;
    cookie_pair(&set_cookie(&response))
}

async fn signed_in(app: &TestApp, cookie: &str) -> bool {
    let page = app.client.get(app.url("/")).header("cookie", cookie).send().await.unwrap();
    page.text().await.unwrap().contains("Signed in as")
}

/// What the room's presence says, read over HTTP.
async fn present(app: &TestApp) -> Value {
    app.get("/rooms/general/presence").await.json().await.unwrap()
}

fn stream_request(authorization: &str) -> String {
    format!(
        "GET /events?presence=1 HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nauthorization: {authorization}\r\n\r\n"
    )
}

#[tokio::test]
async fn bearer_and_basic_sign_in_on_every_path() {
    let app = app_with_users(|_| {}).await;
    let (token, _) = accounts::add_token(&*app.state.store, "ana", None, "test").await.unwrap();
    for authorization in [format!("Bearer {token}"), basic("ana", "ana pass")] {
        let sent: Value = send_as(&app.base, &authorization, "hi").await.json().await.unwrap();
        assert_eq!((sent["author"].as_str(), sent["user"].as_bool()), (Some("ana"), Some(true)));
    }
    for wrong in [format!("Bearer {}", accounts::new_secret()), basic("ana", "nope"), "Digest x".to_owned()] {
        let refused = send_as(&app.base, &wrong, "hi").await;
        assert_eq!(refused.status(), 401, "{wrong}");
        let body: Value = refused.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty());
    }

    // The fast path: a stream as a connection's first request. Wrong: 401, never a guest.
    let mut raw = Raw::connect(app.addr).await;
    raw.send(&stream_request(&basic("ana", "nope"))).await;
    let refused = raw.response().await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.body.contains("wrong name or password"));
    let mut stream = Raw::connect(app.addr).await;
    stream.send(&stream_request(&format!("Bearer {token}"))).await;
    assert_eq!(stream.response().await.status, 200);
    eventually("ana named in presence by her token", || async {
        present(&app).await["names"] == json!(["ana"])
    })
    .await;
    drop(stream);

    // After a page on a keep-alive connection, as a browser opens its EventSource.
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET / HTTP/1.1\r\nhost: x\r\naccept: text/html\r\n\r\n").await;
    assert_eq!(raw.response().await.status, 200);
    raw.send(&stream_request(&basic("ana", "nope"))).await;
    assert_eq!(raw.response().await.status, 401);
    let mut raw = Raw::connect(app.addr).await;
    raw.send("GET / HTTP/1.1\r\nhost: x\r\naccept: text/html\r\n\r\n").await;
    assert_eq!(raw.response().await.status, 200);
    raw.send(&stream_request(&basic("ANA", "ana pass"))).await;
    assert_eq!(raw.response().await.status, 200);
    eventually("ana named in presence by Basic", || async { present(&app).await["names"] == json!(["ana"]) })
        .await;
}

fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, n])).build().unwrap()
}

async fn try_sign_in(
    app: &TestApp,
    client: &reqwest::Client,
    name: &str,
    password: &str,
) -> reqwest::Response {
    client.post(app.url("/login")).json(&json!({"name": name, "password": password})).send().await.unwrap()
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_and_per_name() {
    let app = app_with_users(|_| {}).await;
    let burst = ssechat::limits::SIGN_IN_BURST as usize;
    // One client guessing many names.
    let guesser = client_from(2);
    for n in 0..burst {
        assert_eq!(try_sign_in(&app, &guesser, &format!("name{n}"), "x").await.status(), 401);
    }
    let limited = try_sign_in(&app, &guesser, "ana", "ana pass").await;
    assert_eq!(limited.status(), 429, "even the right password waits");
    assert!(limited.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Basic credentials count the same.
    let basic_refused = guesser.get(app.url("/history")).basic_auth("ana", Some("x")).send().await.unwrap();
    assert_eq!(basic_refused.status(), 429);
    // Another client is not limited, for another name.
    assert_eq!(try_sign_in(&app, &client_from(3), "ana", "ana pass").await.status(), 200);

    // Many clients guessing one name.
    for n in 0..burst {
        let status = try_sign_in(&app, &client_from(10 + n as u8), "Coco", "x").await.status();
        assert_eq!(status, 401);
    }
    let limited = try_sign_in(&app, &client_from(40), "coco", "coco pass").await;
    assert_eq!(limited.status(), 429, "the name is limited, in any case");
    let body: Value = limited.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("for this name"), "{body}");
}

#[tokio::test]
async fn an_unknown_name_takes_as_long_as_a_wrong_password() {
    let app = app_with_users(|_| {}).await;
    let store = &*app.state.store;
    let users: Vec<String> = (0..4).map(|n| format!("timing{n}")).collect();
    for user in &users {
        accounts::add_user(store, user, "right", false).await.unwrap();
    }
    // Each client and each name stays within its sign-in burst.
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for round in 0..16u8 {
        let client = client_from(100 + round);
        let user = &users[round as usize % users.len()];
        let started = Instant::now();
        assert_eq!(try_sign_in(&app, &client, user, "wrong").await.status(), 401);
        wrong.push(started.elapsed());
        let started = Instant::now();
        assert_eq!(try_sign_in(&app, &client, &format!("nobody{round}"), "wrong").await.status(), 401);
        unknown.push(started.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (unknown, wrong) = (median(unknown), median(wrong));
    // Generous: only a server that skips the hash for unknown names (≈ a tenth or less of
    // the time) misses it.
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!((0.4..2.5).contains(&ratio), "unknown {unknown:?} vs wrong {wrong:?}");
}

#[tokio::test]
async fn a_guest_cannot_take_a_registered_name_or_a_look_alike() {
    let app = app_with_users(|_| {}).await;
    for (name, why) in [
        ("ana", "belongs to a registered user"),
        ("ANA", "belongs to"),
        ("Сосо", "looks like the registered user \"Coco\""),
    ] {
        let refused = app.post_json(json!({"author": name, "text": "hi"})).await;
        assert_eq!(refused.status(), 403, "{name}");
        let body: Value = refused.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(why), "{name}: {body}");
    }
    assert_eq!(app.post_json(json!({"author": "anna", "text": "hi"})).await.status(), 201);
    // Nor be named in a room's presence under it, nor type under it.
    let refused = app.get("/events?name=Ana").await;
    assert_eq!(refused.status(), 403);
    let typing = app.client.post(app.url("/typing")).json(&json!({"author": "ana"})).send().await.unwrap();
    assert_eq!(typing.status(), 403);
    // The page marks who is verified.
    send_as(&app.base, &basic("ana", "ana pass"), "verified").await;
    let html = app.get("/").await.text().await.unwrap();
    assert!(html.contains(r#"data-user="true""#) && html.contains(r#"class="verified""#), "{html}");
    assert!(html.contains(r#"class="guest""#), "anna's message is a guest's");
}

#[tokio::test]
async fn a_session_in_use_slides_and_its_cookie_is_set_again() {
    let app = app_with_users(|c| c.session_ttl = Duration::from_secs(3600)).await;
    let cookie = sign_in(&app).await;
    let id = cookie.split_once('=').unwrap().1.to_owned();
    let hash = accounts::hash_secret(&id);
    // Used a minute ago at most: nothing to write.
    let page = app.client.get(app.url("/")).header("cookie", &cookie).send().await.unwrap();
    assert!(page.headers().get("set-cookie").is_none());
    // Ten minutes left: this use moves it back to an hour, and the browser is told.
    let soon = ssechat::domain::Timestamp::from_millis(ssechat::domain::Timestamp::now().millis() + 600_000)
        .unwrap();
    app.state.store.extend_session(&hash, soon).await.unwrap();
    let page = app.client.get(app.url("/")).header("cookie", &cookie).send().await.unwrap();
    let renewed = set_cookie(&page);
    assert!(renewed.starts_with(&cookie) && renewed.contains("Max-Age=3600"), "{renewed}");
    let expires = app.state.store.session(&hash).await.unwrap().unwrap().expires.millis();
    assert!(expires - ssechat::domain::Timestamp::now().millis() > 3_000_000, "an hour again");
}
