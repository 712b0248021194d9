//! Bad input gets a clear error, names the problem, and changes nothing.

use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Asserts a JSON error naming `needle`, and that nothing was stored anywhere.
async fn assert_refused(app: &TestApp, response: reqwest::Response, status: u16, needle: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    assert!(app.history("general").await.is_empty());
}

#[tokio::test]
async fn invalid_fields_are_400_and_name_the_field() {
    let app = TestApp::spawn().await;
    let long_text = "a".repeat(4001);
    let long_author = "b".repeat(41);
    let cases = [
        (json!({ "room": "general", "author": "ana", "text": "" }), "text"),
        (json!({ "room": "general", "author": "ana", "text": " \n\t  " }), "text"),
        (json!({ "room": "general", "author": "ana" }), "text"),
        (json!({ "room": "general", "author": "ana", "text": long_text }), "text"),
        (json!({ "room": "general", "text": "hi" }), "author"),
        (json!({ "room": "general", "author": "  ", "text": "hi" }), "author"),
        (json!({ "room": "general", "author": long_author, "text": "hi" }), "author"),
        (json!({ "room": "general", "author": "a\tb", "text": "hi" }), "author"),
        (json!({ "room": "general", "author": "a\nb", "text": "hi" }), "author"),
        (json!({ "room": "general", "author": "ana", "text": "bell\u{7}" }), "text"),
        (json!({ "room": "general", "author": "ana", "text": "esc\u{1b}[31mred" }), "text"),
        (json!({ "room": "General!", "author": "ana", "text": "hi" }), "room"),
        (json!({ "room": "", "author": "ana", "text": "hi" }), "room"),
        (json!({ "room": "x".repeat(65), "author": "ana", "text": "hi" }), "room"),
    ];
    for (body, field) in cases {
        let response = app.post_json(body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["field"], field, "{body} -> {error}");
        assert!(error["error"].as_str().unwrap().starts_with(field), "{error}");
    }
    assert!(app.history("general").await.is_empty());
}

#[tokio::test]
async fn form_posts_are_validated_the_same_way() {
    let app = TestApp::spawn().await;
    let response = app.post_form("/send?room=general", &[("author", "ana"), ("text", "   ")]).await;
    assert_refused(&app, response, 400, "text").await;
    let response = app.post_form("/send?room=Nope", &[("author", "ana"), ("text", "hi")]).await;
    assert_refused(&app, response, 400, "room").await;
    let response =
        app.post_form("/send?room=general", &[("room", "dev"), ("author", "ana"), ("text", "hi")]).await;
    assert_refused(&app, response, 400, "room").await;
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let app = TestApp::spawn().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client.post(app.url("/send")).header("content-type", content_type).body(body).send()
    };
    let response = send(r#"{"room":"general","author":"ana","text":"#, "application/json").await.unwrap();
    assert_refused(&app, response, 400, "malformed JSON").await;
    let response = send(r#"{"room":"general","author":"ana","text":5}"#, "application/json").await.unwrap();
    assert_refused(&app, response, 400, "text: must be a string").await;
    let response = send(r#"["general","ana","hi"]"#, "application/json").await.unwrap();
    assert_refused(&app, response, 400, "malformed JSON").await;
    let response = send("author=ana&author=bob&text=hi", "application/x-www-form-urlencoded").await.unwrap();
    assert_refused(&app, response, 400, "malformed form data").await;
    let response = send("author=ana&text=%FF%FE", "application/x-www-form-urlencoded").await.unwrap();
    assert_refused(&app, response, 400, "malformed form data").await;
}

#[tokio::test]
async fn size_type_route_and_method_errors() {
    let app = TestApp::spawn().await;
    let big = format!(r#"{{"room":"general","author":"ana","text":"{}"}}"#, "a".repeat(70_000));
    let response =
        app.client.post(app.url("/send")).header("content-type", "application/json").body(big.clone());
    assert_refused(&app, response.send().await.unwrap(), 413, "larger than").await;
    // Without a Content-Length (chunked), the limit still holds.
    let chunks = futures_util::stream::iter(
        big.into_bytes().chunks(8192).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let response = app
        .client
        .post(app.url("/send"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks));
    assert_refused(&app, response.send().await.unwrap(), 413, "larger than").await;

    let response = app
        .client
        .post(app.url("/send"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_refused(&app, response, 415, "content type").await;
    let response = app.client.post(app.url("/send")).body("author=ana&text=hi").send().await.unwrap();
    assert_refused(&app, response, 415, "content type").await;

    assert_refused(&app, app.get("/nowhere").await, 404, "/nowhere").await;
    assert_refused(&app, app.get("/send").await, 405, "GET").await;
    let response = app.client.delete(app.url("/events")).send().await.unwrap();
    assert_refused(&app, response, 405, "DELETE").await;
}

#[tokio::test]
async fn bad_stream_and_history_parameters_are_400() {
    let app = TestApp::spawn().await;
    for path in [
        "/events?room=Bad",
        "/events?since=abc",
        "/events?since=-1",
        "/history?room=a%20b",
        "/history?since=x",
        "/history?limit=0",
        "/history?limit=1001",
        "/history?limit=ten",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let response =
        app.client.get(app.url("/events")).header("last-event-id", "yesterday").send().await.unwrap();
    assert_refused(&app, response, 400, "Last-Event-ID").await;
    for reader in ["short", "has%20space", &"x".repeat(33)] {
        let response = app.get(&format!("/events?presence=1&reader={reader}")).await;
        assert_eq!(response.status(), 400, "{reader}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["field"], "reader", "{body}");
        assert!(body["error"].as_str().unwrap().contains("8 to 32 characters"), "{body}");
    }
}

#[tokio::test]
async fn a_refused_browser_post_shows_the_page_with_the_reason_and_the_draft() {
    let app = TestApp::spawn().await;
    let form = [("room", "general"), ("author", ""), ("text", "my <precious> words")];
    let response = app.post_as_browser("/send?room=general", &form).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("author: is required"), "{page}");
    assert!(page.contains("my &#60;precious&#62; words</textarea>"), "{page}");
    assert!(app.history("general").await.is_empty());

    let long = "x".repeat(4001);
    let response =
        app.post_as_browser("/send", &[("room", "general"), ("author", "ana"), ("text", &long)]).await;
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("value=\"ana\""), "the name is kept");
    assert!(page.contains("text: is 4001 characters long"), "{page}");
}
