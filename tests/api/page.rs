//! The server-rendered page, the no-JavaScript form, assets and health.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_page_shows_recent_history_oldest_first() {
    let app = TestApp::spawn().await;
    let first = app.say("general", "ana", "first").await;
    app.say("general", "bob", "second").await;
    app.say("dev", "cy", "elsewhere").await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    let a = page.find("first").unwrap();
    let b = page.find("second").unwrap();
    assert!(a < b, "oldest first");
    assert!(page.contains("<b class=\"author\">ana</b>"));
    assert!(page.contains(&format!("datetime=\"{}\"", first.time.rfc3339())));
    // Without JavaScript, times are in UTC and say so.
    assert!(page.contains(&format!(">{} UTC</time>", first.time.clock())), "{page}");
    assert!(!page.contains("elsewhere"));
    assert!(page.contains("name=\"author\"") && page.contains("name=\"text\""));
}

#[tokio::test]
async fn every_url_in_the_page_is_relative() {
    let app = TestApp::spawn().await;
    app.say("dev", "ana", "hi").await;
    let page = app.get("/rooms/dev").await.text().await.unwrap();
    assert!(page.contains("#dev"));
    assert!(page.contains("action=\"../send?room=dev\""), "{page}");
    assert!(page.contains("href=\"../assets/chat.css\""));
    assert!(page.contains("src=\"../assets/chat.js\""));
    assert!(page.contains("data-root=\"../\""));
    for absolute in ["href=\"/", "src=\"/", "action=\"/", "http://", "https://"] {
        assert!(!page.contains(absolute), "{absolute} in {page}");
    }
    let top = app.get("/").await.text().await.unwrap();
    assert!(top.contains("action=\"./send?room=general\""));
    let script = app.get("/assets/chat.js").await.text().await.unwrap();
    assert!(!script.contains("\"/") && !script.contains("`/"), "the script uses relative URLs");
}

#[tokio::test]
async fn a_bad_room_name_is_a_404_page_that_says_why() {
    let app = TestApp::spawn().await;
    for path in ["/rooms/General", "/rooms/a%20b", &format!("/rooms/{}", "x".repeat(65))] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let page = response.text().await.unwrap();
        assert!(page.contains("1 to 64 characters of a-z, 0-9"), "{page}");
    }
}

#[tokio::test]
async fn without_javascript_the_form_posts_and_redirects_back() {
    let app = TestApp::spawn().await;
    let (dev, general) = (app.id_base("dev").await + 1, app.id_base("general").await + 1);
    let response = app
        .post_as_browser(
            "/send?room=dev",
            &[("room", "dev"), ("author", "ana"), ("text", "no script needed")],
        )
        .await;
    assert_eq!(response.status(), 303);
    // Back at the message: the list scrolls to it, also without a script.
    assert_eq!(response.headers()["location"], format!("rooms/dev#m{dev}").as_str());
    let page = app.get("/rooms/dev").await.text().await.unwrap();
    assert!(page.contains("no script needed") && page.contains(&format!("id=\"m{dev}\"")));

    let response =
        app.post_as_browser("/send", &[("room", "general"), ("author", "ana"), ("text", "to general")]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], format!("./#m{general}").as_str());
}

#[tokio::test]
async fn curl_form_and_json_posts_get_201_with_the_message() {
    let app = TestApp::spawn().await;
    let response = app.post_form("/send?room=general", &[("author", "ana"), ("text", "hello")]).await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], app.history("general").await[0].id);
    assert_eq!(body["room"], "general");
    assert_eq!(body["author"], "ana");
    assert_eq!(body["text"], "hello");
    let time = body["time"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    assert_eq!(body.as_object().unwrap().len(), 5);

    let response =
        app.post_form("/send", &[("room", "dev"), ("author", "ana"), ("text", "room in body")]).await;
    assert_eq!(response.status(), 201);
    let sent = app.say("dev", "bob", "json").await;
    assert_eq!(sent.id, app.history("dev").await[0].id + 1);
    assert_eq!(app.history("dev").await.len(), 2);
}

#[tokio::test]
async fn markup_in_messages_is_shown_as_text() {
    let app = TestApp::spawn().await;
    app.say("general", "<img src=x onerror=alert(2)>", "<script>alert(1)</script>").await;
    let page = app.get("/").await.text().await.unwrap();
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"));
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
}

#[tokio::test]
async fn assets_are_embedded_and_revalidated() {
    let app = TestApp::spawn().await;
    let router = ssechat::router(app.state.clone());
    let response =
        router.clone().oneshot(Request::get("/assets/chat.js").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/javascript; charset=utf-8");
    let etag = response.headers()["etag"].clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&body).unwrap().contains("EventSource"));

    let request = Request::get("/assets/chat.js").header("if-none-match", etag).body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    let css =
        router.clone().oneshot(Request::get("/assets/chat.css").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let missing = router.oneshot(Request::get("/assets/nope.js").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}

/// The README's sizes: one small script, one small stylesheet, small templates.
#[test]
fn the_page_is_as_small_as_the_readme_says() {
    assert!(include_str!("../../assets/chat.js").len() < 16_000);
    assert!(include_str!("../../assets/chat.css").len() < 5_000);
    let templates = [
        include_str!("../../templates/base.html"),
        include_str!("../../templates/room.html"),
        include_str!("../../templates/_message.html"),
        include_str!("../../templates/error.html"),
        include_str!("../../templates/edit.html"),
        include_str!("../../templates/login.html"),
    ];
    assert!(templates.iter().map(|t| t.len()).sum::<usize>() < 8_000);
    let readme = include_str!("../../README.md");
    assert!(readme.contains("`chat.js` under 16 KB, `chat.css` under 5 KB, the templates under 8 KB"));
}
