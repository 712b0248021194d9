//! The page on a phone (360×640), with and without JavaScript: the composer stays in view
//! however long the history, rooms and presence are one tap away (`<details>`), every field
//! says what it is for, and nothing scrolls sideways, not even a 64-character room name or a
//! long unbroken message.

use axum::http::Method;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use ssechat::domain::NewMessage;

use super::{Chrome, ONE_AT_A_TIME, js, keep, open, wait_until};
use crate::helpers::TestApp;

/// The longest room name there is, with no hyphen to break at.
const ROOM: &str = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01";
/// How many messages the room has before the page opens: many screens of them.
const HISTORY: usize = 60;

/// The composer's box lies wholly inside the window.
const COMPOSER_IN_VIEW: &str = "(() => { const r = document.getElementById('composer').getBoundingClientRect(); \
     return r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; })()";
/// Where the page's parts are, top to bottom, to explain a failure.
const BOXES: &str = "[...document.querySelectorAll('.top, .drawer, .side, .room, #messages, #composer')] \
     .map(e => { const r = e.getBoundingClientRect(); return `${e.id || e.className} ${r.top}..${r.bottom}`; })";
/// The page is no wider than the window.
const NO_SIDEWAYS: &str = "document.scrollingElement.scrollWidth <= innerWidth";
/// The ids of the fields on screen that show neither a placeholder nor a visible label.
const MUTE_FIELDS: &str = "[...document.querySelectorAll('input:not([type=hidden]), textarea')] \
     .filter(e => e.getClientRects().length) \
     .filter(e => !e.placeholder.trim() && ![...e.labels].some(l => { \
        const r = l.getBoundingClientRect(); return r.width > 1 && r.height > 1 && l.textContent.trim(); })) \
     .map(e => e.id)";
/// Whether an element is laid out (shown) at all.
fn shown(css: &str) -> String {
    format!("document.querySelector('{css}')?.getClientRects().length > 0")
}

fn unbroken() -> String {
    format!("https://example.com/{} and {}", "a".repeat(300), "z".repeat(300))
}

/// A room with a 64-character name, a long history and a long unbroken message in it.
async fn long_room() -> TestApp {
    let app = TestApp::spawn().await;
    for i in 1..=HISTORY {
        let text = if i == HISTORY - 1 { unbroken() } else { format!("message {i}") };
        let message = NewMessage::parse(ROOM, Some("ana"), Some(&text)).unwrap();
        app.state.store.append(message).await.unwrap();
    }
    app
}

async fn phone(chrome: &Chrome, javascript: bool) -> Client {
    let page = chrome.session(javascript).await;
    page.goto("data:text/html,").await.unwrap();
    set_viewport(&page, 360, 640).await;
    page
}

/// Gives the page a `width`×`height` viewport, as Chromium's device emulation does: a window
/// itself is never narrower than 500 px.
pub(crate) async fn set_viewport(page: &Client, width: u32, height: u32) {
    let params = json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false });
    page.issue_cmd(Cdp { cmd: "Emulation.setDeviceMetricsOverride", params }).await.unwrap();
    let sizes = js(page, "[innerWidth, innerHeight]").await;
    assert_eq!(sizes, json!([width, height]));
}

/// `url::ParseError`, named without depending on `url` directly.
type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// A DevTools command, through chromedriver.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &reqwest::Url, session: Option<&str>) -> Result<reqwest::Url, UrlError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({ "cmd": self.cmd, "params": self.params }).to_string()))
    }
}

/// Everything that must hold on a phone whatever the drawer's state.
async fn assert_fits(page: &Client, when: &str) {
    let boxes = js(page, BOXES).await;
    assert_eq!(js(page, COMPOSER_IN_VIEW).await, true, "the composer is in view {when}: {boxes}");
    assert_eq!(js(page, NO_SIDEWAYS).await, true, "nothing scrolls sideways {when}");
    assert_eq!(js(page, MUTE_FIELDS).await, json!([]), "every field says what it is for {when}");
}

/// The drawer is there and closed, opens on a tap and shows the rooms and who is here.
async fn assert_drawer_opens(page: &Client) {
    assert_eq!(js(page, "document.querySelector('details.drawer')?.open").await, false);
    assert_eq!(js(page, &shown("details.drawer summary")).await, true);
    assert_eq!(js(page, &shown(".side .rooms")).await, false, "rooms hidden until asked for");
    page.find(Locator::Css("details.drawer summary")).await.unwrap().click().await.unwrap();
    wait_until(page, "document.querySelector('details.drawer').open").await;
    for part in [".side .rooms", "#go-room", ".side .here"] {
        assert_eq!(js(page, &shown(part)).await, true, "{part} shows once the drawer is open");
    }
    let link = format!("document.querySelector('.rooms a[aria-current=page]').textContent === '#{ROOM}'");
    assert_eq!(js(page, &link).await, true, "the room is listed");
    assert_fits(page, "with the drawer open").await;
}

#[tokio::test]
async fn on_a_phone_the_composer_stays_in_view_and_rooms_are_one_tap_away() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = long_room().await;
    let chrome = Chrome::start().await;
    let page = phone(&chrome, true).await;
    open(&page, &app.base, &format!("/rooms/{ROOM}")).await;
    wait_until(&page, &format!("document.querySelectorAll('#messages .msg').length === {HISTORY}")).await;
    assert_fits(&page, "at load").await;
    keep(page.screenshot().await.unwrap(), "phone-360x640.png");

    // The summary counts who is here, live: this page, then another reader.
    wait_until(&page, "document.getElementById('here-count').textContent === '1 here'").await;
    let _other = app.subscribe(&format!("?room={ROOM}&presence=1"), &[]).await;
    wait_until(&page, "document.getElementById('here-count').textContent === '2 here'").await;

    for i in 1..=5 {
        app.say(ROOM, "bob", &format!("live {i}")).await;
    }
    app.say(ROOM, "bob", &unbroken()).await;
    app.say(ROOM, "bob", "the last one").await;
    wait_until(&page, &format!("document.querySelectorAll('#messages .msg').length === {}", HISTORY + 7))
        .await;
    assert_fits(&page, "after new messages").await;
    // The list followed: the newest message is on screen, above the composer.
    let newest = "document.querySelector('#messages .msg:last-child').getBoundingClientRect().bottom \
         <= document.getElementById('composer').getBoundingClientRect().top + 1";
    wait_until(&page, newest).await;

    assert_drawer_opens(&page).await;
    keep(page.screenshot().await.unwrap(), "phone-360x640-drawer.png");

    // On a wide screen the side panel shows as it always did, without a tap.
    set_viewport(&page, 1100, 760).await;
    wait_until(&page, &format!("!({}) && {}", shown("details.drawer"), shown(".side .here"))).await;
    assert_eq!(js(&page, NO_SIDEWAYS).await, true);
    keep(page.screenshot().await.unwrap(), "room-1100x760.png");
    page.close().await.unwrap();
}

#[tokio::test]
async fn on_a_phone_without_javascript_the_composer_shows_and_the_drawer_opens() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = long_room().await;
    let chrome = Chrome::start().await;
    let page = phone(&chrome, false).await;
    page.goto(&format!("{}/rooms/{ROOM}", app.base)).await.unwrap();
    assert_eq!(js(&page, "document.querySelectorAll('#messages .msg').length").await, Value::from(HISTORY));
    assert_fits(&page, "without JavaScript").await;
    assert_drawer_opens(&page).await;

    // A post comes back to the room, the composer still in view.
    page.find(Locator::Id("author")).await.unwrap().send_keys("nojs").await.unwrap();
    page.find(Locator::Id("text")).await.unwrap().send_keys(&unbroken()).await.unwrap();
    page.find(Locator::Css("#composer button")).await.unwrap().click().await.unwrap();
    let count = format!("document.querySelectorAll('#messages .msg').length === {}", HISTORY + 1);
    wait_until(&page, &count).await;
    assert_fits(&page, "after posting without JavaScript").await;
    // Back at the message just sent (`#mID`), not at the top of the history.
    let mine = "(() => { const m = document.querySelector('#messages .msg:last-child').getBoundingClientRect(); \
                const list = document.getElementById('messages').getBoundingClientRect(); \
                return m.bottom > list.top && m.top < list.bottom; })()";
    assert_eq!(js(&page, mine).await, true, "the message just sent is in view");
    page.close().await.unwrap();
}

/// Signed in under the longest name there is: the header wraps it, nothing scrolls sideways,
/// here or on the page that edits a message.
#[tokio::test]
async fn on_a_phone_a_long_user_name_fits() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = long_room().await;
    let name = "n".repeat(40);
    ssechat::accounts::add_user(&*app.state.store, &name, "a long pass", false).await.unwrap();
    app.state.policy.reload().await.unwrap();
    let chrome = Chrome::start().await;
    let page = phone(&chrome, true).await;
    page.goto(&format!("{}/login?next=/rooms/{ROOM}", app.base)).await.unwrap();
    super::accounts::fill_in_login(&page, &name, "a long pass").await;
    wait_until(&page, "document.getElementById('signed-in') !== null").await;
    wait_until(&page, "document.getElementById('status').textContent === 'live'").await;
    assert_fits(&page, "signed in").await;
    keep(page.screenshot().await.unwrap(), "phone-360x640-signed-in.png");

    // The page that edits a message fits too.
    super::type_and_send(&page, "mine to edit").await;
    wait_until(&page, "document.querySelector('#messages .msg:last-child .edit')").await;
    page.find(Locator::Css("#messages .msg:last-child .edit")).await.unwrap().click().await.unwrap();
    wait_until(&page, "document.getElementById('edit') !== null").await;
    assert_eq!(js(&page, NO_SIDEWAYS).await, true, "nothing scrolls sideways on the edit page");
    assert_eq!(js(&page, MUTE_FIELDS).await, json!([]), "the edit page says what its field is for");
    keep(page.screenshot().await.unwrap(), "phone-360x640-edit.png");
    page.close().await.unwrap();
}
