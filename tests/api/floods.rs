//! Typing and presence floods: what one client can make every reader of a room receive.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{EventStream, TestApp};
use crate::raw::Raw;

/// POST /typing as `author`, from the client `forwarded_for` names (the app trusts 127.0.0.1).
async fn typing(app: &TestApp, author: &str, forwarded_for: &str) -> reqwest::Response {
    let body = json!({ "room": "general", "author": author });
    let request = app.client.post(app.url("/typing")).header("x-forwarded-for", forwarded_for);
    request.json(&body).send().await.unwrap()
}

fn typing_refusals(metrics: &str) -> u64 {
    let line = metrics.lines().find(|l| l.starts_with("ssechat_rate_limited_total{limit=\"typing\"}"));
    line.and_then(|l| l.split(' ').nth(1)).and_then(|n| n.parse().ok()).expect(metrics)
}

/// The next presence event's data, skipping anything else.
async fn next_presence(stream: &mut EventStream) -> String {
    loop {
        let event = stream.next_event().await;
        if event.event.as_deref() == Some("presence") {
            return event.data.unwrap();
        }
    }
}

/// The room's presence, once it is `expected` (presence settles over 100 ms).
pub async fn wait_for_presence(app: &TestApp, expected: Value) {
    let mut last = Value::Null;
    let settled = tokio::time::timeout(crate::helpers::WAIT, async {
        loop {
            last = app.get("/rooms/general/presence").await.json().await.unwrap();
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "presence is {last}, never {expected}");
}

/// The measured flood: 20,000 signals under as many names from one address, all sent on.
#[tokio::test]
async fn a_client_typing_under_many_names_is_limited_before_its_bodies_are_read() {
    let app = TestApp::spawn_with(|c| {
        c.typing_burst = 3;
        c.typing_rate = 0.01;
        c.trusted_proxy = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut reader = app.subscribe("?room=general&presence=1", &[]).await;
    next_presence(&mut reader).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let response = typing(&app, &format!("author{i}"), "203.0.113.1").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(wait >= 1, "{wait}");
            let body: Value = response.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("typing signals from this client"), "{body}");
        }
    }
    assert_eq!(statuses, [[204; 3].as_slice(), &[429; 17]].concat());
    for i in 0..3 {
        assert_eq!(reader.next_event().await.json(), json!({ "author": format!("author{i}") }));
    }
    reader.expect_quiet().await;
    assert_eq!(typing(&app, "someone", "203.0.113.2").await.status(), 204, "another client has its own");

    // Over the limit, the answer comes before the body: this one never sends its body.
    let mut raw = Raw::connect(app.addr).await;
    raw.send(
        "POST /typing HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 203.0.113.1\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n",
    )
    .await;
    assert_eq!(raw.response().await.status, 429);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(typing_refusals(&metrics), 18);
}

#[tokio::test]
async fn a_presence_view_lists_the_first_names_to_arrive_and_counts_the_rest() {
    let app = TestApp::spawn_with(|c| {
        c.presence_names = 3;
        c.names_per_client = 100;
    })
    .await;
    let mut readers = Vec::new();
    for name in ["zed", "yan", "xu", "a1", "a2", "a3", "a4"] {
        readers.push(app.subscribe(&format!("?room=general&name={name}"), &[]).await);
    }
    readers.push(app.subscribe("?room=general", &[]).await);
    // The first three, in name order; the four later names and the anonymous reader counted.
    let expected = json!({ "names": ["xu", "yan", "zed"], "anonymous": 5 });
    wait_for_presence(&app, expected.clone()).await;
    let mut watcher = app.subscribe("?room=general&presence=1", &[]).await;
    let mut seen: Value = serde_json::from_str(&next_presence(&mut watcher).await).unwrap();
    seen.as_object_mut().unwrap().remove("version");
    assert_eq!(seen, json!({ "names": ["xu", "yan", "zed"], "anonymous": 6 }));
    let page = app.get("/rooms/general").await.text().await.unwrap();
    assert!(page.contains("<p id=\"anonymous\">and 6 others</p>"), "{page}");
}

/// The measured flood: 1,000 named streams sent one presence reader 6 MB. Now every view
/// lists at most 20 names, so each costs under 1 KB however many read.
#[tokio::test]
async fn every_presence_event_stays_under_a_kilobyte_however_many_names_read() {
    let app = TestApp::spawn_with(|c| c.names_per_client = 1_000).await;
    let mut watcher = app.subscribe("?room=general&presence=1", &[]).await;
    next_presence(&mut watcher).await;
    let mut readers = Vec::new();
    for i in 0..60 {
        let name = format!("{i:0>2}{}", "n".repeat(38)); // 40 characters, the longest allowed
        readers.push(app.subscribe(&format!("?room=general&name={name}"), &[]).await);
    }
    loop {
        let data = next_presence(&mut watcher).await;
        assert!(data.len() < 1024, "{} bytes: {data}", data.len());
        let view: Value = serde_json::from_str(&data).unwrap();
        assert!(view["names"].as_array().unwrap().len() <= 20, "{view}");
        if view["anonymous"] == 41 {
            break;
        }
    }
}

#[tokio::test]
async fn a_client_is_listed_under_five_names_at_most_and_reads_on_under_more() {
    let app = TestApp::spawn_with(|c| {
        c.presence_grace = Duration::from_millis(200);
        c.trusted_proxy = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let from = |client: &'static str| [("x-forwarded-for", client)];
    let mut mine = Vec::new();
    for name in ["n1", "n2", "n3", "n4", "n5", "n6", "n7"] {
        mine.push(app.subscribe(&format!("?room=general&name={name}"), &from("203.0.113.1")).await);
    }
    let _other = app.subscribe("?room=general&name=n6", &from("203.0.113.2")).await;
    let five = json!(["n1", "n2", "n3", "n4", "n5", "n6"]);
    wait_for_presence(&app, json!({ "names": five, "anonymous": 2 })).await;
    // The stream under a sixth name from the first client works; it is just not named.
    let sent = app.say("general", "ana", "still reading").await;
    assert_eq!(mine[6].next_message().await, sent);
    // n1 leaves: after the grace period the client may take another name.
    mine.remove(0);
    wait_for_presence(&app, json!({ "names": ["n2", "n3", "n4", "n5", "n6"], "anonymous": 2 })).await;
    let _n8 = app.subscribe("?room=general&name=n8", &from("203.0.113.1")).await;
    wait_for_presence(&app, json!({ "names": ["n2", "n3", "n4", "n5", "n6", "n8"], "anonymous": 2 })).await;
}
