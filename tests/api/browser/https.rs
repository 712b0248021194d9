//! Many tabs of one room over HTTPS: the browser speaks HTTP/2, every tab's EventSource
//! shares one connection, and every tab is live. (Over plain HTTP/1.1 a browser opens at
//! most 6 connections per origin, so a seventh tab's stream waits: the README says so; it is
//! not a test here, since it is a browser's limit, not ours.)

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Chrome, ONE_AT_A_TIME, js, wait_until};
use crate::helpers::TestApp;

const TABS: usize = 10;

#[tokio::test]
async fn ten_tabs_of_a_room_over_https_all_receive_a_message() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let app = TestApp::spawn_with(|c| {
        c.tls_cert = Some(cert_file.clone());
        c.tls_key = Some(key_file.clone());
    })
    .await;
    // The browser trusts exactly this key (the test's CA, in effect).
    let spki = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(key.public_key_der()));
    let chrome = Chrome::start().await;
    let page = chrome.session_with(true, &[format!("--ignore-certificate-errors-spki-list={spki}")]).await;
    let room = format!("https://127.0.0.1:{}/rooms/tabs", app.addr.port());
    let mut tabs = Vec::new();
    for i in 0..TABS {
        if i > 0 {
            let tab = page.new_window(true).await.unwrap();
            page.switch_to_window(tab.handle).await.unwrap();
        }
        page.goto(&room).await.unwrap();
        wait_until(&page, "document.getElementById('status').textContent === 'live'").await;
        assert_eq!(js(&page, "performance.getEntriesByType('navigation')[0].nextHopProtocol").await, "h2");
        tabs.push(page.window().await.unwrap());
    }
    assert_eq!(app.state.streams.open(), TABS, "one stream per tab");
    let new = ssechat::domain::NewMessage::parse("tabs", Some("bob"), Some("to every tab")).unwrap();
    app.state.store.append(new).await.unwrap();
    for tab in tabs {
        page.switch_to_window(tab).await.unwrap();
        wait_until(
            &page,
            "document.querySelector('#messages .msg:last-child .text')?.textContent === 'to every tab'",
        )
        .await;
    }
    page.close().await.unwrap();
}
