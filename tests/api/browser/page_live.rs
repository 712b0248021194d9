//! The page keeping itself current: a rename replaces the reader, the room list's counts
//! follow the rooms, times are local, and a tab coming back shows where the new messages
//! start.

use std::time::Duration;

use fantoccini::Client;

use super::{Chrome, ONE_AT_A_TIME, js, open, set_name, wait_until};
use crate::helpers::TestApp;

/// Says whether the tab is hidden, as a browser does when it is switched away from.
async fn set_hidden(page: &Client, hidden: bool) {
    let script = format!(
        "Object.defineProperty(document, 'hidden', {{ configurable: true, get: () => {hidden} }}); \
         document.dispatchEvent(new Event('visibilitychange'))"
    );
    page.execute(&script, vec![]).await.unwrap();
}

#[tokio::test]
async fn a_rename_shows_one_reader_and_never_the_old_one_beside_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A long grace: the old, anonymous seat would linger for the whole test.
    let app = TestApp::spawn_with(|c| c.presence_grace = Duration::from_secs(60)).await;
    let chrome = Chrome::start().await;
    let (watcher, zoe) = (chrome.session(true).await, chrome.session(true).await);
    open(&watcher, &app.base, "/rooms/rename").await;
    set_name(&watcher, "watcher").await;
    open(&zoe, &app.base, "/rooms/rename").await;
    wait_until(&watcher, "document.getElementById('anonymous').textContent === 'and 1 other'").await;
    // Every state of "Here" the watcher shows from now on.
    watcher
        .execute(
            "window.seen = []; const here = document.querySelector('.here'); \
             new MutationObserver(() => seen.push(here.textContent.replace(/\\s+/g, ' ').trim())) \
               .observe(here, { childList: true, subtree: true, characterData: true });",
            vec![],
        )
        .await
        .unwrap();
    set_name(&zoe, "zoe").await;
    wait_until(
        &watcher,
        "[...document.querySelectorAll('#presence li')].map(e => e.textContent).join() === 'watcher,zoe' \
         && document.getElementById('anonymous').textContent === ''",
    )
    .await;
    let seen = js(&watcher, "seen").await;
    let both = seen
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .any(|s| s.contains("zoe") && s.contains("other"));
    assert!(!both, "zoe and an anonymous reader at once: {seen}");
    watcher.close().await.unwrap();
    zoe.close().await.unwrap();
}

#[tokio::test]
async fn room_counts_change_without_a_reload_and_times_are_local() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    app.say("elsewhere", "bob", "one").await;
    app.say("counts", "bob", "here").await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/counts").await;
    let count = |room: &str| {
        format!("document.querySelector('#room-list li[data-room=\"{room}\"] .count')?.textContent")
    };
    assert_eq!(js(&page, &count("elsewhere")).await, "1");
    app.say("elsewhere", "bob", "two").await;
    wait_until(&page, &format!("{} === '2'", count("elsewhere"))).await;
    // A room that was not listed appears, with its count and link.
    app.say("brand-new", "cy", "first").await;
    wait_until(&page, &format!("{} === '1'", count("brand-new"))).await;
    let href =
        js(&page, "document.querySelector('#room-list li[data-room=\"brand-new\"] a').getAttribute('href')")
            .await;
    assert_eq!(href, "../rooms/brand-new");
    // The server says "UTC"; the script shows local time, naming the zone in the title.
    let time = js(&page, "document.querySelector('#messages .msg time').textContent").await;
    assert!(!time.as_str().unwrap().contains("UTC") && !time.as_str().unwrap().is_empty(), "{time}");
    assert_ne!(js(&page, "document.querySelector('#messages .msg time').title").await, "");
    page.close().await.unwrap();
}

/// Hides the tab, has bob post `texts` to room `away`, waits until the last one is on the
/// page, and shows the tab again.
async fn away_while(page: &Client, app: &TestApp, texts: &[&str]) {
    set_hidden(page, true).await;
    for text in texts {
        app.say("away", "bob", text).await;
    }
    let last = texts.last().expect("at least one message");
    let arrived =
        format!("document.querySelector('#messages .msg:last-child .text')?.textContent === '{last}'");
    wait_until(page, &arrived).await;
    set_hidden(page, false).await;
}

#[tokio::test]
async fn a_tab_coming_back_shows_where_the_new_messages_start() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn().await;
    app.say("away", "bob", "seen before").await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    open(&page, &app.base, "/rooms/away").await;
    let divider = "document.querySelectorAll('#messages [role=separator]')";
    let after_divider = "document.querySelector('#messages [role=separator]')?.nextElementSibling?.querySelector('.text')?.textContent";
    assert_eq!(js(&page, &format!("{divider}.length")).await, 0, "no divider while watching");
    app.say("away", "bob", "while watching").await;
    wait_until(
        &page,
        "document.querySelector('#messages .msg:last-child .text')?.textContent === 'while watching'",
    )
    .await;
    assert_eq!(js(&page, &format!("{divider}.length")).await, 0);

    away_while(&page, &app, &["first unseen", "second unseen"]).await;
    assert_eq!(js(&page, &format!("{divider}.length")).await, 1);
    assert_eq!(js(&page, after_divider).await, "first unseen");
    assert_eq!(js(&page, &format!("{divider}[0].getAttribute('aria-label')")).await, "New messages");

    // Away again: the one divider moves to the next first unseen message.
    away_while(&page, &app, &["third unseen"]).await;
    assert_eq!(js(&page, &format!("{divider}.length")).await, 1);
    assert_eq!(js(&page, after_divider).await, "third unseen");
    page.close().await.unwrap();
}
