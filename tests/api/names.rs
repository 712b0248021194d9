//! Names and texts that lie (issue 11, part 4) and bodies that decode two ways (part 5):
//! each is refused with a 400 naming the field, over real HTTP, as JSON and as a form.

use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Every way a name has been seen to pass for another, or for nothing.
const LYING_AUTHORS: &[(&str, &str)] = &[
    ("\u{202E}nimda", "U+202E"),
    ("\u{200B}\u{200C}\u{200D}", "U+200B"),
    ("\u{3164}", "U+3164"),
    ("ana\u{2066}\u{202E}bob\u{2069}", "U+2066"),
    ("ana\u{2028}bob", "U+2028"),
    ("\u{430}na", "mix writing systems"),
];

fn zalgo() -> String {
    format!("a{}", "\u{363}".repeat(39))
}

/// Asserts a `400` naming `field` and `needle`, and that nothing was stored.
async fn assert_refused(app: &TestApp, response: reqwest::Response, field: &str, needle: &str) {
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("{field}: ")), "{error:?} should name {field}");
    assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    assert!(app.history("general").await.is_empty());
}

#[tokio::test]
async fn lying_authors_are_refused_as_json_and_as_forms() {
    let app = TestApp::spawn().await;
    let zalgo = zalgo();
    let cases = LYING_AUTHORS.iter().copied().chain([(zalgo.as_str(), "more than 4 combining marks")]);
    for (author, needle) in cases {
        let response = app.post_json(json!({ "room": "general", "author": author, "text": "hi" })).await;
        assert_refused(&app, response, "author", needle).await;
        let response = app.post_form("/send", &[("author", author), ("text", "hi")]).await;
        assert_refused(&app, response, "author", needle).await;
    }
}

#[tokio::test]
async fn a_lookalike_name_is_refused_while_the_real_one_posts() {
    let app = TestApp::spawn().await;
    let ana = app.say("general", "ana", "I am ana").await;
    assert_eq!(ana.author.as_str(), "ana");
    let response = app.post_json(json!({ "author": "\u{430}na", "text": "I am ana too" })).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "author");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("Cyrillic") && error.contains("Latin"), "{error}");
    assert_eq!(app.history("general").await, vec![ana]);
}

#[tokio::test]
async fn lying_texts_are_refused() {
    let app = TestApp::spawn().await;
    for (text, needle) in [
        ("see \u{202E}gnp.exe", "U+202E"),
        ("a\u{2067}b\u{2069}", "U+2067"),
        ("\u{200B}\u{200D}", "at least one visible character"),
        ("\u{3164}", "at least one visible character"),
    ] {
        let response = app.post_json(json!({ "author": "ana", "text": text })).await;
        assert_refused(&app, response, "text", needle).await;
        let response = app.post_form("/send", &[("author", "ana"), ("text", text)]).await;
        assert_refused(&app, response, "text", needle).await;
    }
}

#[tokio::test]
async fn real_names_and_texts_in_many_scripts_are_stored_in_nfc() {
    let app = TestApp::spawn().await;
    let cases = [
        ("Jose\u{301}", "José", "cafe\u{301}", "café"),
        ("山田たろう", "山田たろう", "こんにちは", "こんにちは"),
        ("דוד", "דוד", "שלום עולם (and some English)", "שלום עולם (and some English)"),
        ("مريم", "مريم", "مرحبا", "مرحبا"),
        (
            "Ana Петрова",
            "Ana Петрова",
            "👨\u{200D}👩\u{200D}👧 🇫🇷 1\u{FE0F}\u{20E3}",
            "👨\u{200D}👩\u{200D}👧 🇫🇷 1\u{FE0F}\u{20E3}",
        ),
    ];
    for (author, stored_author, text, stored_text) in cases {
        let posted = app.say("general", author, text).await;
        assert_eq!((posted.author.as_str(), posted.text.as_str()), (stored_author, stored_text));
        let response = app.post_form("/send", &[("author", author), ("text", text)]).await;
        assert_eq!(response.status(), 201);
        let form: Value = response.json().await.unwrap();
        assert_eq!(
            (form["author"].as_str(), form["text"].as_str()),
            (Some(stored_author), Some(stored_text))
        );
    }
    assert_eq!(app.history("general").await.len(), 2 * cases.len());
}

#[tokio::test]
async fn a_browser_sees_why_its_name_was_refused() {
    let app = TestApp::spawn().await;
    let response = app.post_as_browser("/send", &[("author", "\u{202E}nimda"), ("text", "hello")]).await;
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("author: must not contain invisible"), "{page}");
    assert!(page.contains("U+202E"), "{page}");
    assert!(page.contains("hello</textarea>"), "the draft is kept: {page}");
    assert!(app.history("general").await.is_empty());
}

/// Query strings are decoded as strictly as forms, on every path: the fast path's streams,
/// the router's, and the rest.
#[tokio::test]
async fn malformed_percent_escapes_in_a_query_name_their_parameter() {
    let app = TestApp::spawn().await;
    for (path, field) in [
        ("/events?name=%ZZ", "name"),
        ("/events?room=general&since=1%", "since"),
        ("/history?room=general&limit=%G1", "limit"),
    ] {
        let response = app.get(path).await;
        assert_refused(&app, response, field, "is not a %XX escape").await;
    }
    let response = app.get("/history?other=%ZZ").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("\"other\" \"%ZZ\" is not a %XX escape"), "{body}");
    assert_eq!(app.get("/history?room=gen%65ral").await.status(), 200, "valid escapes decode");
}

#[tokio::test]
async fn malformed_percent_escapes_in_a_form_name_their_field() {
    let app = TestApp::spawn().await;
    let send = |body: &'static str| {
        app.client
            .post(app.url("/send"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    for (body, field) in [
        ("author=%ZZ&text=hi", "author"),
        ("author=ana&text=100%", "text"),
        ("author=ana&text=%4", "text"),
        ("room=gen%zzeral&author=ana&text=hi", "room"),
    ] {
        let response = send(body).await.unwrap();
        assert_refused(&app, response, field, "is not a %XX escape").await;
    }
    // Escapes that are valid still decode.
    let response = send("author=ana&text=100%25%20sure").await.unwrap();
    assert_eq!(response.status(), 201);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["text"], "100% sure");
}

#[tokio::test]
async fn a_json_key_given_twice_is_refused() {
    let app = TestApp::spawn().await;
    for body in [
        r#"{"author":"ana","author":"bob","text":"hi"}"#,
        r#"{"author":"ana","text":"hi","text":"bye"}"#,
        r#"{"author":"ana","text":"hi","extra":1,"extra":2}"#,
    ] {
        let response = app
            .client
            .post(app.url("/send"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        let error = error["error"].as_str().unwrap();
        assert!(error.contains("is given more than once"), "{body}: {error}");
    }
    assert!(app.history("general").await.is_empty());
}
