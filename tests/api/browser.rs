//! The page in a real browser: headless Chromium driven over WebDriver (chromedriver).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Browser tests
//! run one at a time: several Chromiums at once on a small machine only test the machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use ssechat::AppState;
use ssechat::config::StoreUrl;
use ssechat::domain::{Author, RoomName};

use crate::helpers::{TestApp, WAIT};

mod accounts;
mod https;
mod moderation;
mod page_live;
mod phone;

pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver on a free port; every session gets a fresh profile.
pub(crate) struct Chrome {
    driver: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Chrome {
    pub(crate) async fn start() -> Chrome {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver)");
        let chrome = Chrome {
            driver,
            url: format!("http://127.0.0.1:{port}"),
            profiles: tempfile::tempdir().unwrap(),
        };
        tokio::time::timeout(WAIT, async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("chromedriver starts");
        chrome
    }

    pub(crate) async fn session(&self, javascript: bool) -> Client {
        self.session_with(javascript, &[]).await
    }

    /// A session whose browser also gets `extra` command-line flags.
    pub(crate) async fn session_with(&self, javascript: bool, extra: &[String]) -> Client {
        let profile = tempfile::tempdir_in(self.profiles.path()).unwrap().keep();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1100,760".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra.iter().cloned());
        let mut options = json!({ "binary": "/usr/bin/chromium", "args": args });
        if !javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(caps).connect(&self.url).await.expect("a browser session")
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Evaluates `condition` (JavaScript, returning a boolean) until it holds; panics after `WAIT`.
pub(crate) async fn wait_until(page: &Client, condition: &str) {
    let script = format!("return !!({condition});");
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            if page.execute(&script, vec![]).await.ok() == Some(Value::Bool(true)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if outcome.is_err() {
        let html = page.source().await.unwrap_or_default();
        panic!("timed out waiting for `{condition}`; page:\n{html}");
    }
}

pub(crate) async fn js(page: &Client, expression: &str) -> Value {
    page.execute(&format!("return {expression};"), vec![]).await.unwrap()
}

/// Keeps a screenshot as a test artifact, in `test-artifacts/NAME`.
pub(crate) fn keep(png: Vec<u8>, name: &str) {
    assert!(png.starts_with(b"\x89PNG"));
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(name), png).unwrap();
}

/// Opens `path` and waits until its stream is live.
pub(crate) async fn open(page: &Client, app_url: &str, path: &str) {
    page.goto(&format!("{app_url}{path}")).await.unwrap();
    wait_until(page, "document.getElementById('status').textContent === 'live'").await;
}

/// Sets the name the way a person does: type it, leave the field.
async fn set_name(page: &Client, name: &str) {
    let field = page.find(Locator::Id("author")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(name).await.unwrap();
    page.execute("document.getElementById('author').dispatchEvent(new Event('change'))", vec![])
        .await
        .unwrap();
    wait_until(page, "document.getElementById('status').textContent === 'live'").await;
}

pub(crate) async fn type_and_send(page: &Client, text: &str) {
    let field = page.find(Locator::Id("text")).await.unwrap();
    field.send_keys(text).await.unwrap();
    field.send_keys("\u{E007}").await.unwrap(); // Enter
}

fn texts_of(expression: &str) -> String {
    format!("[...document.querySelectorAll('{expression}')].map(e => e.textContent)")
}

#[tokio::test]
async fn two_people_see_each_others_messages_presence_and_typing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    let chrome = Chrome::start().await;
    let (ana, bob) = (chrome.session(true).await, chrome.session(true).await);
    open(&ana, &app.base, "/rooms/browser").await;
    set_name(&ana, "ana").await;
    open(&bob, &app.base, "/rooms/browser").await;
    set_name(&bob, "bob").await;

    wait_until(
        &ana,
        "[...document.querySelectorAll('#presence li')].map(e => e.textContent).join() === 'ana,bob'",
    )
    .await;
    wait_until(
        &bob,
        "[...document.querySelectorAll('#presence li')].map(e => e.textContent).join() === 'ana,bob'",
    )
    .await;

    type_and_send(&ana, "hello bob").await;
    wait_until(
        &bob,
        "document.querySelector('#messages .msg:last-child .text')?.textContent === 'hello bob'",
    )
    .await;
    wait_until(&ana, "document.querySelector('#messages .msg:last-child')?.classList.contains('mine')").await;
    assert_eq!(js(&ana, "document.getElementById('text').value").await, "", "the field is cleared");

    // Bob types: Ana sees it, and it goes when his message arrives.
    bob.find(Locator::Id("text")).await.unwrap().send_keys("hi a").await.unwrap();
    wait_until(&ana, "document.getElementById('typing').textContent === 'bob is typing…'").await;
    type_and_send(&bob, "na").await;
    wait_until(&ana, "document.querySelector('#messages .msg:last-child .text')?.textContent === 'hi ana'")
        .await;
    wait_until(&ana, "document.getElementById('typing').textContent === ''").await;
    assert_eq!(
        js(&ana, "document.querySelector('#messages .msg:last-child').classList.contains('mine')").await,
        false
    );

    // Shift+Enter makes a new line instead of sending.
    let field = ana.find(Locator::Id("text")).await.unwrap();
    field.send_keys("line one").await.unwrap();
    ana.execute(
        "document.getElementById('text').dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', shiftKey: true}))",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(app.history("browser").await.len(), 2, "nothing sent on Shift+Enter");
    ana.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test]
async fn without_javascript_a_page_can_read_and_post() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    app.say("nojs", "ana", "already here").await;
    let chrome = Chrome::start().await;
    let page = chrome.session(false).await;
    page.goto(&format!("{}/rooms/nojs", app.base)).await.unwrap();
    let html = page.source().await.unwrap();
    assert!(html.contains("already here"));
    assert!(html.contains(" UTC</time>"), "times say they are in UTC: {html}");
    page.find(Locator::Id("author")).await.unwrap().send_keys("nojs-user").await.unwrap();
    page.find(Locator::Id("text")).await.unwrap().send_keys("posted without script").await.unwrap();
    page.find(Locator::Css("#composer button")).await.unwrap().click().await.unwrap();
    tokio::time::timeout(WAIT, async {
        while !page.source().await.unwrap().contains("posted without script") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the page after the post shows the message");
    assert_eq!(page.current_url().await.unwrap().path(), "/rooms/nojs");
    let history = app.history("nojs").await;
    assert_eq!(history.last().unwrap().author.as_str(), "nojs-user");
    page.close().await.unwrap();
}

#[tokio::test]
async fn a_reload_shows_the_history_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    let b = app.id_base("reload").await;
    for i in 1..=3 {
        app.say("reload", "ana", &format!("before {i}")).await;
    }
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/reload").await;
    app.say("reload", "bob", "live one").await;
    wait_until(&page, "document.querySelectorAll('#messages .msg').length === 4").await;
    let reader = js(&page, "sessionStorage.getItem('ssechat-reader')").await;
    page.refresh().await.unwrap();
    wait_until(&page, "document.getElementById('status').textContent === 'live'").await;
    // The tab keeps its reader id across the reload, and its stream gives it: a stream
    // under the same id (the same reader, reconnected elsewhere) is counted once.
    assert_eq!(js(&page, "sessionStorage.getItem('ssechat-reader')").await, reader);
    let reader = reader.as_str().expect("the page made a reader id").to_owned();
    let _same = app.subscribe(&format!("?room=reload&presence=1&reader={reader}"), &[]).await;
    let _other = app.subscribe("?room=reload&presence=1&reader=another-tab", &[]).await;
    crate::helpers::eventually("the page's reader and the other counted, the same reader once", || async {
        let view: serde_json::Value = app.get("/rooms/reload/presence").await.json().await.unwrap();
        view["anonymous"] == 2
    })
    .await;
    app.say("reload", "bob", "after reload").await;
    wait_until(&page, "document.querySelectorAll('#messages .msg').length === 5").await;
    let ids =
        js(&page, "[...document.querySelectorAll('#messages .msg')].map(e => Number(e.dataset.id))").await;
    assert_eq!(ids, json!([b + 1, b + 2, b + 3, b + 4, b + 5]));
    page.close().await.unwrap();
}

#[tokio::test]
async fn a_page_open_across_a_server_restart_reconnects_and_misses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("chat.db");
    let config = |db: PathBuf| {
        let mut c = crate::helpers::test_config();
        c.store = StoreUrl::Sqlite(db);
        c.retry = Duration::from_millis(500);
        c
    };
    let app = TestApp::serve(AppState::new(config(db.clone())).await.unwrap()).await;
    let addr = app.addr.to_string();
    let base = app.base.clone();
    app.say("restart", "ana", "before").await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &base, "/rooms/restart").await;

    app.stop().await;
    wait_until(&page, "document.getElementById('status').textContent === 'reconnecting…'").await;

    let app = TestApp::serve_on(AppState::new(config(db)).await.unwrap(), &addr).await;
    // Posted while the page is still away: it must get each exactly once when it is back.
    app.say("restart", "bob", "while you were away").await;
    app.say("restart", "bob", "and this").await;
    wait_until(&page, "document.getElementById('status').textContent === 'live'").await;
    app.say("restart", "ana", "back live").await;
    wait_until(&page, "document.querySelectorAll('#messages .msg').length === 4").await;
    let texts = js(&page, &texts_of("#messages .msg .text")).await;
    assert_eq!(texts, json!(["before", "while you were away", "and this", "back live"]));
    page.close().await.unwrap();
}

#[tokio::test]
async fn markup_in_a_message_stays_text() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    let evil =
        "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> see https://example.com/x";
    app.say("xss", "mallory", evil).await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/xss").await;
    app.say("xss", "mallory", evil).await;
    wait_until(&page, "document.querySelectorAll('#messages .msg').length === 2").await;
    assert_eq!(js(&page, "typeof window.pwned").await, "undefined");
    assert_eq!(js(&page, "document.querySelectorAll('#messages script, #messages img').length").await, 0);
    let texts = js(&page, &texts_of("#messages .msg .text")).await;
    assert_eq!(texts, json!([evil, evil]), "shown as typed, server-rendered and live alike");
    let links =
        js(&page, "[...document.querySelectorAll('#messages a')].map(a => a.href + ' ' + a.rel)").await;
    assert_eq!(
        links,
        json!(["https://example.com/x noopener nofollow", "https://example.com/x noopener nofollow"])
    );
    page.close().await.unwrap();
}

/// A screenshot of a busy room: saved as a test artifact, and the source of the README's.
#[tokio::test]
async fn a_busy_room_looks_right() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    let lines = [
        ("ana", "Morning all! Release notes are up: https://example.com/releases/1.4"),
        ("bob", "Nice. Did the resume fix make it in?"),
        ("ana", "Yes: a browser left open across a restart gets exactly what it missed."),
        ("cy", "Tested it on my phone on the train; it came back without a gap."),
        ("bob", "Ship it!"),
        ("dee", "Question: what does Shift+Enter do?\nLike this: a new line."),
        ("ana", "Exactly that."),
    ];
    for (who, text) in lines {
        app.say("release", who, text).await;
    }
    app.say("design", "cy", "mockups attached").await;
    let chrome = Chrome::start().await;
    let (ana, bob) = (chrome.session(true).await, chrome.session(true).await);
    open(&bob, &app.base, "/rooms/release").await;
    set_name(&bob, "bob").await;
    open(&ana, &app.base, "/rooms/release").await;
    set_name(&ana, "ana").await;
    let _curl = app.subscribe("?room=release", &[]).await;
    bob.find(Locator::Id("text")).await.unwrap().send_keys("Looks good").await.unwrap();
    wait_until(&ana, "document.getElementById('typing').textContent === 'bob is typing…'").await;
    wait_until(&ana, "document.getElementById('anonymous').textContent !== ''").await;
    keep(ana.screenshot().await.unwrap(), "busy-room.png");

    // Every field has a label a screen reader can read out.
    let unlabelled = "[...document.querySelectorAll('input:not([type=hidden]), textarea')].filter(e => !e.labels.length).length";
    assert_eq!(js(&ana, unlabelled).await, 0);
    // On a phone-sized screen nothing scrolls sideways.
    phone::set_viewport(&ana, 390, 844).await; // a window is never narrower than 500 px
    wait_until(&ana, "document.documentElement.scrollWidth <= document.documentElement.clientWidth").await;
    keep(ana.screenshot().await.unwrap(), "busy-room-phone.png");
    ana.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test]
async fn a_hidden_tab_counts_unread_messages_in_its_title() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/tabs").await;
    let title = js(&page, "document.title").await;
    // Headless tabs are never hidden; make this one say it is.
    page.execute(
        "Object.defineProperty(document, 'hidden', { configurable: true, get: () => true })",
        vec![],
    )
    .await
    .unwrap();
    app.say("tabs", "bob", "one").await;
    app.say("tabs", "bob", "two").await;
    wait_until(&page, &format!("document.title === '(2) ' + {title}")).await;
    page.execute(
        "Object.defineProperty(document, 'hidden', { configurable: true, get: () => false }); \
         document.dispatchEvent(new Event('visibilitychange'))",
        vec![],
    )
    .await
    .unwrap();
    wait_until(&page, &format!("document.title === {title}")).await;
    page.close().await.unwrap();
}

/// The measured freeze: 19,000 typing events rebuilt the whole line each time (2 GB of
/// strings). Now the line names two and counts the rest, tracking at most 50 typists.
#[tokio::test]
async fn a_flood_of_typists_shows_a_capped_line_and_the_page_keeps_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/flood").await;
    let room = RoomName::parse("flood").unwrap();
    let typist = |i: usize| Author::parse(&format!("typist{i}")).unwrap();
    for i in 0..3 {
        app.state.store.typing(&room, &typist(i)).await.unwrap();
    }
    wait_until(
        &page,
        "document.getElementById('typing').textContent === 'typist0, typist1 and 1 other are typing…'",
    )
    .await;
    // 2,000 authors at once, as straight from the store as a flood across many clients.
    for i in 3..2_000 {
        app.state.store.typing(&room, &typist(i)).await.unwrap();
    }
    // Which two are named depends on which events arrived in time; the count does not.
    let capped = "/^typist\\d+, typist\\d+ and 48 others are typing…$/";
    wait_until(&page, &format!("{capped}.test(document.getElementById('typing').textContent)")).await;
    app.say("flood", "ana", "still keeping up").await;
    wait_until(
        &page,
        "document.querySelector('#messages .msg:last-child .text')?.textContent === 'still keeping up'",
    )
    .await;
    // Every typist expires, and the line with them.
    wait_until(&page, "document.getElementById('typing').textContent === ''").await;
    page.close().await.unwrap();
}

/// A page whose access is revoked says why and does not reconnect, even once the room opens
/// again (a reload does).
#[tokio::test]
async fn a_revoked_page_says_why_and_stops_reconnecting() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_with(|c| c.retry = Duration::from_millis(100)).await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/ops").await;
    let rule = |perm: &str| ssechat::policy::Rule {
        subject: ssechat::policy::Subject::Everyone,
        pattern: ssechat::policy::RoomPattern::parse("ops").unwrap(),
        perm: ssechat::policy::Perm::parse(perm).unwrap(),
    };
    app.state.store.set_rule(&rule("deny")).await.unwrap();
    wait_until(&page, "document.getElementById('status').textContent === 'no access'").await;
    let error = js(&page, "document.getElementById('error').textContent").await;
    assert!(error.as_str().unwrap().contains("guests may not read room \"ops\""), "{error}");
    app.state.store.set_rule(&rule("rw")).await.unwrap();
    app.state.policy.reload().await.unwrap();
    // A page that reconnected (`retry:` is 100 ms) would open a stream again: none comes.
    let reopened = tokio::time::timeout(crate::helpers::QUIET, async {
        while app.state.streams.open() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(reopened.is_err(), "the page reconnected");
    assert_eq!(js(&page, "document.getElementById('status').textContent").await, "no access");
    page.close().await.unwrap();
}
