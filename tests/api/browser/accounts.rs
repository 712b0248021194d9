//! Signing in, in a real browser, with JavaScript on and off; and a guest who tries a
//! member's name.

use std::time::Duration;

use fantoccini::{Client, Locator};
use ssechat::accounts;

use super::{Chrome, ONE_AT_A_TIME, js, open, type_and_send, wait_until};
use crate::helpers::{TestApp, WAIT};

async fn app_with_ana() -> TestApp {
    let app = TestApp::spawn().await;
    accounts::add_user(&*app.state.store, "ana", "ana pass", false).await.unwrap();
    app.state.policy.reload().await.unwrap(); // in the snapshot now, not at the next poll
    app
}

/// Signs in as `ana` through the form of `/login?next=PATH`, as a person does.
pub(super) async fn sign_in(page: &Client, app: &TestApp, path: &str) {
    page.goto(&format!("{}/login?next={path}", app.base)).await.unwrap();
    fill_in_login(page, "ana", "ana pass").await;
    wait_for_text(page, "Signed in as").await;
    assert_eq!(page.current_url().await.unwrap().path(), path);
}

/// Fills in and sends the sign-in form the page shows.
pub(super) async fn fill_in_login(page: &Client, name: &str, password: &str) {
    page.find(Locator::Id("login-name")).await.unwrap().send_keys(name).await.unwrap();
    page.find(Locator::Id("login-password")).await.unwrap().send_keys(password).await.unwrap();
    page.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
}

pub(super) async fn wait_for_text(page: &Client, text: &str) {
    tokio::time::timeout(WAIT, async {
        while !page.source().await.unwrap_or_default().contains(text) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the page never showed {text:?}"));
}

#[tokio::test]
async fn signed_in_with_javascript_a_page_posts_and_reads_as_the_user() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = app_with_ana().await;
    let chrome = Chrome::start().await;
    let page = chrome.session(true).await;
    sign_in(&page, &app, "/rooms/signed").await;
    open(&page, &app.base, "/rooms/signed").await;
    // Named in presence by the session, not by anything typed.
    wait_until(
        &page,
        "[...document.querySelectorAll('#presence li')].map(e => e.textContent).join() === 'ana'",
    )
    .await;
    type_and_send(&page, "hello as ana").await;
    wait_until(
        &page,
        "document.querySelector('#messages .msg:last-child .text')?.textContent === 'hello as ana'",
    )
    .await;
    let last = "document.querySelector('#messages .msg:last-child')";
    assert_eq!(js(&page, &format!("{last}.classList.contains('mine')")).await, true);
    assert_eq!(js(&page, &format!("{last}.querySelector('.verified') !== null")).await, true);
    let message = app.history("signed").await.pop().unwrap();
    assert_eq!((message.author.as_str(), message.user), ("ana", true));
    // A guest's message, arriving live, is marked as a guest's.
    app.say("signed", "bob", "from a guest").await;
    wait_until(&page, "document.querySelector('#messages .msg:last-child .guest') !== null").await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn without_javascript_one_signs_in_posts_and_signs_out() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = app_with_ana().await;
    let chrome = Chrome::start().await;
    let page = chrome.session(false).await;
    sign_in(&page, &app, "/rooms/nojs-signed").await;
    page.find(Locator::Id("text")).await.unwrap().send_keys("posted signed in").await.unwrap();
    page.find(Locator::Css("#composer button")).await.unwrap().click().await.unwrap();
    wait_for_text(&page, "posted signed in").await;
    let message = app.history("nojs-signed").await.pop().unwrap();
    assert_eq!((message.author.as_str(), message.user), ("ana", true));
    page.find(Locator::Css("#logout button")).await.unwrap().click().await.unwrap();
    wait_for_text(&page, "id=\"sign-in\"").await;
    assert!(page.find(Locator::Id("author")).await.is_ok(), "a guest again: the name field is back");
    page.close().await.unwrap();
}

#[tokio::test]
async fn a_guest_cannot_post_under_a_members_name_in_the_browser() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = app_with_ana().await;
    let chrome = Chrome::start().await;
    let page = chrome.session(false).await;
    page.goto(&format!("{}/rooms/names", app.base)).await.unwrap();
    page.find(Locator::Id("author")).await.unwrap().send_keys("Ana").await.unwrap();
    page.find(Locator::Id("text")).await.unwrap().send_keys("pretending").await.unwrap();
    page.find(Locator::Css("#composer button")).await.unwrap().click().await.unwrap();
    wait_for_text(&page, "belongs to a registered user").await;
    assert!(app.history("names").await.is_empty());
    let draft =
        page.find(Locator::Id("text")).await.expect("the room page, with the form").prop("value").await;
    assert_eq!(draft.unwrap().as_deref(), Some("pretending"), "the draft is kept");
    page.close().await.unwrap();
}
