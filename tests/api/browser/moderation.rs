//! Private rooms and moderation in a real browser: a room closed to guests opens after
//! signing in; an author's delete and edit reach another browser live and stay after a
//! reload; a ban ends the banned user's stream.

use fantoccini::{Client, Locator};
use ssechat::policy::{Ban, BanTarget, Perm, RoomPattern, Rule, Subject};

use super::accounts::{fill_in_login, sign_in, wait_for_text};
use super::{Chrome, ONE_AT_A_TIME, js, open, wait_until};
use crate::helpers::TestApp;

/// Guests may read nothing; anyone signed in may read and post everywhere; `ana` (password
/// `ana pass`) is a user.
async fn private_app() -> TestApp {
    let app = TestApp::spawn_with(|c| c.default_access = ssechat::policy::DefaultAccess::Deny).await;
    ssechat::accounts::add_user(&*app.state.store, "ana", "ana pass", false).await.unwrap();
    let rule = Rule { subject: Subject::Users, pattern: RoomPattern::parse("*").unwrap(), perm: Perm::Rw };
    app.state.store.set_rule(&rule).await.unwrap();
    app.state.policy.reload().await.unwrap();
    app
}

async fn click(page: &Client, css: &str) {
    page.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

#[tokio::test]
async fn a_private_room_is_refused_to_a_guest_and_opens_after_signing_in() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = private_app().await;
    app.state
        .store
        .append(ssechat::domain::NewMessage::parse("team", Some("ana"), Some("for members")).unwrap())
        .await
        .unwrap();
    let chrome = Chrome::start().await;
    for javascript in [true, false] {
        let page = chrome.session(javascript).await;
        page.goto(&format!("{}/rooms/team", app.base)).await.unwrap();
        wait_for_text(&page, "guests may not read room").await;
        assert!(!page.source().await.unwrap().contains("for members"), "nothing of the room shows");
        click(&page, "#login").await;
        fill_in_login(&page, "ana", "ana pass").await;
        wait_for_text(&page, "for members").await;
        assert_eq!(page.current_url().await.unwrap().path(), "/rooms/team", "back where they came from");
        page.close().await.unwrap();
    }
}

#[tokio::test]
async fn an_authors_edit_and_delete_without_javascript_reach_another_browser_live_and_stay() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = private_app().await;
    ssechat::accounts::add_user(&*app.state.store, "bob", "bob pass", false).await.unwrap();
    let chrome = Chrome::start().await;
    let ana = chrome.session(false).await;
    sign_in(&ana, &app, "/rooms/team").await;
    ana.find(Locator::Id("text")).await.unwrap().send_keys("frist post").await.unwrap();
    click(&ana, "#composer button").await;
    wait_for_text(&ana, "frist post").await;

    // Bob reads the room live, with JavaScript.
    let bob = chrome.session(true).await;
    bob.goto(&format!("{}/login?next=/rooms/team", app.base)).await.unwrap();
    fill_in_login(&bob, "bob", "bob pass").await;
    wait_until(&bob, "document.getElementById('status').textContent === 'live'").await;
    assert_eq!(js(&bob, "document.querySelectorAll('#messages .edit, #messages .delete').length").await, 0);

    click(&ana, "#messages .msg:last-child a.edit").await;
    let text = ana.find(Locator::Id("text")).await.unwrap();
    text.clear().await.unwrap();
    text.send_keys("first post").await.unwrap();
    click(&ana, "#edit button").await;
    wait_for_text(&ana, "(edited)").await;
    wait_until(
        &bob,
        "document.querySelector('#messages .msg:last-child .text')?.textContent === 'first post'",
    )
    .await;

    click(&ana, "#messages .msg:last-child form.delete button").await;
    wait_until(&bob, "document.querySelectorAll('#messages .msg').length === 0").await;
    bob.refresh().await.unwrap();
    wait_until(&bob, "document.getElementById('status').textContent === 'live'").await;
    assert!(!bob.source().await.unwrap().contains("first post"), "a reload shows the current state");
    ana.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test]
async fn a_ban_ends_the_banned_users_stream_and_the_page_says_why() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = private_app().await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    sign_in(&page, &app, "/rooms/team").await;
    open(&page, &app.base, "/rooms/team").await;
    let ban = Ban { target: BanTarget::parse("ana").unwrap(), room: None, until: None };
    app.state.store.add_ban(&ban).await.unwrap();
    wait_until(&page, "document.getElementById('status').textContent === 'no access'").await;
    let error = js(&page, "document.getElementById('error').textContent").await;
    assert!(error.as_str().unwrap().contains("ana is banned from every room"), "{error}");
    page.close().await.unwrap();
}
