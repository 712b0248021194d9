//! Lossless resume: Last-Event-ID and ?since, the reset event, and catching up after lag.

use std::time::Duration;

use serde_json::json;
use ssechat::domain::RoomName;
use ssechat::feed::{Feed, FeedRequest};
use ssechat::wire::Format;

use crate::helpers::{EventStream, TestApp, WAIT};

#[tokio::test]
async fn last_event_id_replays_what_was_missed_then_goes_live() {
    let app = TestApp::spawn().await;
    let b = app.id_base("general").await;
    for i in 1..=5 {
        app.say("general", "ana", &format!("m{i}")).await;
    }
    let mut stream = app.subscribe("?room=general", &[("last-event-id", &(b + 2).to_string())]).await;
    for expected in 3..=5 {
        assert_eq!(stream.next_message().await.id, b + expected);
    }
    let live = app.say("general", "bob", "live").await;
    assert_eq!(stream.next_message().await, live);
    stream.expect_quiet().await;
}

#[tokio::test]
async fn since_works_like_last_event_id_and_the_header_wins() {
    let app = TestApp::spawn().await;
    let b = app.id_base("general").await;
    for i in 1..=4 {
        app.say("general", "ana", &format!("m{i}")).await;
    }
    let mut since = app.subscribe(&format!("?room=general&since={}", b + 3), &[]).await;
    assert_eq!(since.next_message().await.id, b + 4);
    // EventSource reconnects to the same URL with a newer Last-Event-ID.
    let query = format!("?room=general&since={}", b + 1);
    let mut both = app.subscribe(&query, &[("last-event-id", &(b + 3).to_string())]).await;
    assert_eq!(both.next_message().await.id, b + 4);
    both.expect_quiet().await;
}

#[tokio::test]
async fn resume_while_others_post_has_no_gap_and_no_duplicate() {
    let app = TestApp::spawn().await;
    let b = app.id_base("general").await;
    let total = 300;
    let (first_posts, mut first_posts_done) = tokio::sync::mpsc::channel::<()>(1);
    let poster = {
        let client = app.client.clone();
        let url = app.url("/send");
        tokio::spawn(async move {
            for i in 1..=total {
                let body = json!({ "room": "general", "author": "ana", "text": format!("m{i}") });
                assert_eq!(client.post(&url).json(&body).send().await.unwrap().status(), 201);
                if i == 50 {
                    first_posts.send(()).await.unwrap();
                }
            }
        })
    };
    first_posts_done.recv().await.unwrap();
    // Resume from 10 while posts 51.. are still arriving.
    let mut stream = app.subscribe("?room=general", &[("last-event-id", &(b + 10).to_string())]).await;
    for expected in 11..=total {
        let message = stream.next_message().await;
        assert_eq!(message.id, b + expected);
        assert_eq!(message.text.as_str(), format!("m{expected}"));
    }
    tokio::time::timeout(WAIT, poster).await.unwrap().unwrap();
    stream.expect_quiet().await;
}

#[tokio::test]
async fn an_id_older_than_history_gets_reset_first() {
    let app = TestApp::spawn_with(|c| c.retain = Some(5)).await;
    let b = app.id_base("general").await;
    for i in 1..=10 {
        app.say("general", "ana", &format!("m{i}")).await;
    }
    let mut stream = app.subscribe("?room=general", &[("last-event-id", &(b + 2).to_string())]).await;
    let reset = stream.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.id, None);
    assert_eq!(reset.json(), json!({ "oldest_id": b + 6 }));
    for expected in 6..=10 {
        assert_eq!(stream.next_message().await.id, b + expected);
    }
    // Exactly at the edge of history is no gap.
    let mut edge = app.subscribe(&format!("?room=general&since={}", b + 5), &[]).await;
    assert_eq!(edge.next_event().await.message().id, b + 6);
}

#[tokio::test]
async fn an_id_this_store_never_gave_gets_reset_and_everything() {
    // What a browser open across a restart of the memory store sends.
    let app = TestApp::spawn().await;
    let first = app.say("general", "ana", "first").await;
    let never = (first.id + 40).to_string();
    let mut stream = app.subscribe("?room=general", &[("last-event-id", &never)]).await;
    let reset = stream.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json(), json!({ "oldest_id": first.id }));
    assert_eq!(stream.next_message().await, first);
    // An id of an earlier life of the store, below where this life's ids start: reset too.
    let earlier = (first.id - 1 - 8).to_string();
    let mut stream = app.subscribe("?room=general", &[("last-event-id", &earlier)]).await;
    assert_eq!(stream.next_event().await.event.as_deref(), Some("reset"));
    assert_eq!(stream.next_message().await, first);
}

#[tokio::test]
async fn the_page_stream_starts_exactly_after_the_rendered_messages() {
    let app = TestApp::spawn().await;
    let b = app.id_base("general").await;
    for i in 1..=3 {
        app.say("general", "ana", &format!("m{i}")).await;
    }
    let page = app.get("/").await.text().await.unwrap();
    let last_id = page.split("data-last-id=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(last_id, (b + 3).to_string());
    assert!(page.contains(&format!("id=\"m{}\"", b + 3)));
    let posted_before_connect = app.say("general", "bob", "while the page loaded").await;
    let mut stream = app.subscribe(&format!("?room=general&since={last_id}"), &[]).await;
    assert_eq!(stream.next_message().await, posted_before_connect);
    let live = app.say("general", "ana", "live").await;
    assert_eq!(stream.next_message().await, live);
}

/// A feed taken from the library and not polled while the room's channel overflows.
async fn lagging_feed(history: usize, buffer: usize, posts: u64) -> (TestApp, EventStream) {
    let app = TestApp::spawn_with(|c| {
        c.retain = Some(history);
        c.buffer = buffer;
    })
    .await;
    let request = FeedRequest {
        room: RoomName::general(),
        resume_from: None,
        format: Format::Sse,
        reader: None,
        reader_id: None,
        presence: false,
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        identity: Default::default(),
        credential: None,
    };
    let body = Feed::open(&app.state, request).await.unwrap().into_stream();
    let mut stream = EventStream::from_body(Default::default(), body);
    assert!(stream.next_block().await.unwrap().retry.is_some(), "subscribed");
    for i in 1..=posts {
        app.say("general", "ana", &format!("m{i}")).await;
    }
    (app, stream)
}

#[tokio::test]
async fn a_reader_behind_the_channel_catches_up_from_history() {
    let (app, mut stream) = lagging_feed(1000, 4, 50).await;
    let b = app.id_base("general").await - 50;
    for expected in 1..=50 {
        assert_eq!(stream.next_message().await.id, b + expected);
    }
    let live = app.say("general", "bob", "live").await;
    assert_eq!(stream.next_message().await, live);
}

#[tokio::test]
async fn a_reader_behind_history_too_gets_reset() {
    let (app, mut stream) = lagging_feed(10, 4, 50).await;
    let b = app.id_base("general").await - 50;
    let reset = stream.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json(), json!({ "oldest_id": b + 41 }));
    for expected in 41..=50 {
        assert_eq!(stream.next_message().await.id, b + expected);
    }
    let quiet = tokio::time::timeout(Duration::from_millis(200), stream.next_block()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");
}

/// A stream written to moments ago waits out `--coalesce`, then sends what piled up at once;
/// a quiet stream is written to at once. (Paused clock: no real waiting, no timing luck.)
#[tokio::test(start_paused = true)]
async fn a_busy_stream_gets_several_messages_per_write() {
    use futures_util::StreamExt;
    let mut config = crate::helpers::test_config();
    config.store = ssechat::config::StoreUrl::Memory;
    config.coalesce = Duration::from_secs(1);
    config.heartbeat = Duration::from_secs(3600);
    let state = ssechat::AppState::new(config).await.unwrap();
    let request = FeedRequest {
        room: RoomName::general(),
        resume_from: None,
        format: Format::Ndjson,
        reader: None,
        reader_id: None,
        presence: false,
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        identity: Default::default(),
        credential: None,
    };
    let stream = Feed::open(&state, request).await.unwrap().into_stream();
    tokio::pin!(stream);
    let post = |text: &str| ssechat::domain::NewMessage::parse("general", Some("ana"), Some(text)).unwrap();

    state.store.append(post("one")).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.iter().filter(|&&b| b == b'\n').count(), 1, "the first message goes at once");
    let written = tokio::time::Instant::now();
    state.store.append(post("two")).await.unwrap();
    state.store.append(post("three")).await.unwrap();
    let batch = stream.next().await.unwrap().unwrap();
    assert_eq!(batch.iter().filter(|&&b| b == b'\n').count(), 2, "two and three in one write");
    assert!(written.elapsed() >= Duration::from_secs(1), "held back for the coalescing interval");

    tokio::time::advance(Duration::from_secs(5)).await;
    let quiet = tokio::time::Instant::now();
    state.store.append(post("four")).await.unwrap();
    stream.next().await.unwrap().unwrap();
    assert_eq!(quiet.elapsed(), Duration::ZERO, "a quiet stream is written to at once");
}
