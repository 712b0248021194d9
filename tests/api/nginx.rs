//! The shipped nginx configs (`deploy/`), run by a real nginx through `deploy/run-nginx.sh`
//! in front of the real binary: what browsers behind a proxy get.
//!
//! Nodes run with `--trusted-proxy 127.0.0.1`, as the README says, in the tests whose
//! behaviour needs it (who a client is, and the CSRF check against X-Forwarded-Host). The
//! others start nodes without it, so they run on any build.

mod fixture;

use std::process::Command;
use std::time::Duration;

use futures_util::future::join_all;
use ssechat::domain::Message;

use crate::helpers::WAIT;
use crate::process::Server;
use fixture::{
    Deployment, Nginx, Reader, client, client_from, free_port, open_stream, open_streams, post_json,
    repo_file, send, wait_for_streams_on_every_node,
};

/// How nodes behind the shipped configs are started (README: "Behind a proxy").
const BEHIND_PROXY: &[&str] = &["--trusted-proxy", "127.0.0.1"];

/// Posts the room's form the way a browser does on a plain-http page: `Origin`, no
/// `Sec-Fetch-Site`, HTML preferred.
async fn post_as_browser(client: &reqwest::Client, url: &str, origin: &str, text: &str) -> reqwest::Response {
    client
        .post(url)
        .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        .header("origin", origin)
        .form(&[("author", "ana"), ("text", text)])
        .send()
        .await
        .unwrap()
}

/// Loads a page and every stylesheet and script it links to, as a browser resolves them.
async fn assert_page_and_assets_load(client: &reqwest::Client, page_url: &str) {
    let page = client.get(page_url).send().await.unwrap();
    assert_eq!(page.status(), 200, "{page_url}");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    let base = reqwest::Url::parse(page_url).unwrap();
    let assets: Vec<&str> = ["href=\"", "src=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .filter(|link| link.contains("assets/"))
        .collect();
    assert_eq!(assets.len(), 2, "the page links its stylesheet and script: {assets:?}");
    for link in assets {
        let url = base.join(link).unwrap();
        let response = client.get(url.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{url}");
    }
}

#[tokio::test]
async fn the_page_and_its_assets_load_through_the_proxy() {
    let deployment = Deployment::start(&[]).await;
    assert_page_and_assets_load(&client(), &deployment.nginx.url("/")).await;
    assert_page_and_assets_load(&client(), &deployment.nginx.url("/rooms/lobby")).await;
    deployment.nginx.assert_no_alerts();
}

/// The bug this config once had: `Host $host` dropped the port, so a browser's
/// `Origin: http://host:8080` never matched and every form post got 403.
#[tokio::test]
async fn a_browsers_form_post_through_the_proxy_on_its_own_port_is_same_origin() {
    let deployment = Deployment::start(BEHIND_PROXY).await;
    let (nginx, client) = (&deployment.nginx, client());
    let response = post_as_browser(&client, &nginx.url("/send?room=general"), &nginx.base, "hi").await;
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    assert!(response.headers()["location"].to_str().unwrap().starts_with("./#m"), "back at the message");
    let other_port = format!("http://127.0.0.1:{}", free_port());
    for origin in ["http://evil.example", other_port.as_str()] {
        let response = post_as_browser(&client, &nginx.url("/send?room=general"), origin, "no").await;
        assert_eq!(response.status(), 403, "Origin {origin} is another site");
    }
    let history: Vec<Message> =
        client.get(nginx.url("/history?room=general")).send().await.unwrap().json().await.unwrap();
    assert_eq!(history.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["hi"]);
    nginx.assert_no_alerts();
}

/// DNS rebinding through the proxy: nginx passes the browser's `Host` on (`$http_host`), and
/// nodes on a loopback address answer only for loopback names and those they are told.
#[tokio::test]
async fn a_foreign_host_through_the_proxy_is_misdirected_and_the_sites_own_passes() {
    let deployment = Deployment::start(&[BEHIND_PROXY, &["--allowed-host", "chat.example"]].concat()).await;
    let nginx = &deployment.nginx;
    let own = nginx.base.strip_prefix("http://").unwrap();
    for (host, status) in [("evil.example:8080", 421), ("chat.example", 200), (own, 200)] {
        for path in ["/healthz", "/events?room=general"] {
            let mut raw = crate::raw::Raw::connect(own).await;
            raw.send(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
            let answer = raw.response().await;
            assert_eq!(answer.status, status, "Host {host}, {path}: {answer:?}");
        }
    }
    nginx.assert_no_alerts();
}

#[tokio::test]
async fn a_message_reaches_a_stream_through_the_proxy_within_a_second() {
    let deployment = Deployment::start(&[]).await;
    let (nginx, client) = (&deployment.nginx, client());
    let mut stream = open_stream(&client, &nginx.url("/events?room=general"), None).await;
    for text in ["one", "two"] {
        let sent = send(&client, &nginx.url("/send"), text).await;
        let received = tokio::time::timeout(Duration::from_secs(1), stream.next_message()).await;
        assert_eq!(received.expect("delivered within 1 s: the proxy buffers nothing"), sent);
    }
}

/// 30 people chatting through one nginx once shared one bucket: the proxy's address.
#[tokio::test]
async fn each_client_behind_the_proxy_has_its_own_send_bucket() {
    let limits = ["--send-burst", "3", "--send-rate", "0.01"];
    let deployment = Deployment::start(&[BEHIND_PROXY, &limits].concat()).await;
    let url = deployment.nginx.url("/send");
    let (greedy, polite) = (client_from(2), client_from(3));
    // Refused several times in a row: its bucket is empty on both nodes.
    let (mut posts, mut refused_in_a_row) = (0, 0);
    while refused_in_a_row < 4 {
        posts += 1;
        assert!(posts <= 50, "a client over its burst is refused");
        let response = post_json(&greedy, &url, &format!("greedy {posts}")).await;
        match response.status().as_u16() {
            429 => refused_in_a_row += 1,
            201 => refused_in_a_row = 0,
            other => panic!("unexpected {other}: {:?}", response.text().await),
        }
    }
    for i in 1..=3 {
        let response = post_json(&polite, &url, &format!("polite {i}")).await;
        assert_eq!(response.status(), 201, "another client keeps its own bucket");
    }
}

#[tokio::test]
async fn a_killed_nodes_streams_resume_on_the_other_node_through_the_proxy() {
    let mut deployment = Deployment::start(&[]).await;
    let (events, send_url) = (deployment.nginx.url("/events?room=general"), deployment.nginx.url("/send"));
    let mut readers = Vec::new();
    for _ in 0..4 {
        readers.push(Reader::open(client(), events.clone()).await);
    }
    wait_for_streams_on_every_node(&deployment.nodes, 4).await;
    let before = send(&client(), &send_url, "before").await;
    for reader in &mut readers {
        assert_eq!(reader.next_message().await, before);
    }

    deployment.nodes.remove(0).kill9().await;
    let mut missed = Vec::new();
    for text in ["m1", "m2", "m3"] {
        missed.push(send(&client(), &send_url, text).await);
    }
    for reader in &mut readers {
        for expected in &missed {
            assert_eq!(&reader.next_message().await, expected, "in order, nothing lost");
        }
        reader.stream.expect_quiet().await;
    }
    assert!(readers.iter().any(|r| r.reconnects > 0), "some streams were on the killed node");
    deployment.nginx.assert_no_alerts();
}

/// 240 readers from 240 addresses, as through one office's proxy: after a node dies they
/// all land on the other, which sees 240 clients, not one client with 240 streams.
#[tokio::test]
async fn two_hundred_forty_readers_all_reconnect_to_the_surviving_node() {
    let mut deployment = Deployment::start(BEHIND_PROXY).await;
    let events = deployment.nginx.url("/events?room=general");
    let mut readers = Vec::new();
    for n in 0..240u8 {
        readers.push(Reader::open(client_from(10 + n), events.clone()).await);
    }
    wait_for_streams_on_every_node(&deployment.nodes, 240).await;
    let send_url = deployment.nginx.url("/send");
    let before = send(&client(), &send_url, "before").await;
    let received = join_all(readers.iter_mut().map(|r| r.next_message())).await;
    assert!(received.iter().all(|m| *m == before), "every reader got the first message");

    deployment.nodes.remove(0).kill9().await;
    let sent = send(&client(), &send_url, "still here").await;
    let received = join_all(readers.iter_mut().map(|r| r.next_message())).await;
    assert!(received.iter().all(|m| *m == sent), "every reader got the message sent meanwhile");
    let moved = readers.iter().filter(|r| r.reconnects > 0).count();
    assert!(moved > 0, "some readers were on the killed node");
    let survivor = &deployment.nodes[0];
    crate::helpers::eventually("all 240 open on the survivor", || async {
        open_streams(survivor).await == 240
    })
    .await;
    deployment.nginx.assert_no_alerts();
}

/// A body over ssechat's limit is refused by nginx with ssechat's answer, every time (a node
/// refusing it mid-upload would make nginx answer 502 now and then).
#[tokio::test]
async fn a_body_over_the_limit_gets_ssechats_413_through_the_proxy() {
    let deployment = Deployment::start(&[]).await;
    for _ in 0..5 {
        let response = post_json(&client(), &deployment.nginx.url("/send"), &"x".repeat(100_000)).await;
        assert_eq!(response.status(), 413);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "request body is larger than the limit of 65536 bytes");
    }
}

/// As root, nginx's workers run as nobody: a response the client does not read fast enough
/// goes through the temp directory in the prefix, and must still arrive whole.
#[tokio::test]
async fn a_response_buffered_to_a_temp_file_in_the_prefix_arrives_whole() {
    let node = Server::start(&["--store", "memory"]).await;
    let posts = (0..8).map(|task| {
        let url = format!("{}/send", node.base);
        async move {
            let client = reqwest::Client::new();
            for i in 0..125 {
                let text = format!("{task}-{i} {}", "x".repeat(3_990));
                assert_eq!(post_json(&client, &url, &text).await.status(), 201);
            }
        }
    });
    join_all(posts).await;
    let nginx = Nginx::start("nginx.conf", &[&node]).await;

    // A small receive window, so what the kernel holds for this client stays small too.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket =
        socket.connect(nginx.base.strip_prefix("http://").unwrap().parse().unwrap()).await.unwrap();
    let request = "GET /history?room=general&since=0&limit=1000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut socket, request.as_bytes()).await.unwrap();
    // Not reading: nginx has to put the rest of the 4 MB answer somewhere.
    crate::helpers::eventually("nginx buffers the answer to a temp file", || async {
        let log = nginx.error_log();
        log.contains("buffered to a temporary file") || log.contains("[crit]")
    })
    .await;
    nginx.assert_no_alerts();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut response))
        .await
        .expect("the answer arrives")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let history: Vec<Message> = serde_json::from_str(body).expect("the whole JSON array");
    assert_eq!(history.len(), 1000);
    nginx.assert_no_alerts();
}

/// The README's "Behind a proxy" block is `deploy/nginx-chat.conf`, run as is.
#[tokio::test]
async fn the_readmes_proxy_block_serves_the_chat_under_a_path_prefix() {
    let node = Server::start_deployed(&["--store", "memory"]).await;
    let nginx = Nginx::start("nginx-chat.conf", &[&node]).await;
    assert_page_and_assets_load(&client(), &nginx.url("/chat/")).await;
    assert_page_and_assets_load(&client(), &nginx.url("/chat/rooms/lobby")).await;
    let client = client();
    let mut stream = open_stream(&client, &nginx.url("/chat/events?room=general"), None).await;
    let sent = send(&client, &nginx.url("/chat/send"), "under a prefix").await;
    assert_eq!(stream.next_message().await, sent);
    nginx.assert_no_alerts();
}

#[tokio::test]
async fn a_browsers_form_post_under_the_path_prefix_is_same_origin() {
    let node = Server::start_deployed(&[&["--store", "memory"], BEHIND_PROXY].concat()).await;
    let nginx = Nginx::start("nginx-chat.conf", &[&node]).await;
    let client = client();
    let url = nginx.url("/chat/send?room=general");
    let response = post_as_browser(&client, &url, &nginx.base, "hi").await;
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    let back =
        reqwest::Url::parse(&url).unwrap().join(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(back.path(), "/chat/", "back to the room, under the prefix");
    let page = client.get(back).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("hi"));
    nginx.assert_no_alerts();
}

/// The README shows the single-node config whole; it must be the file that is tested.
#[test]
fn the_readmes_proxy_block_is_deploy_nginx_chat_conf() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let section = readme.split("\n## Behind a proxy\n").nth(1).expect("a Behind a proxy section");
    let block =
        section.split("```nginx\n").nth(1).and_then(|b| b.split("```\n").next()).expect("an nginx block");
    let file = std::fs::read_to_string(repo_file("deploy/nginx-chat.conf")).unwrap();
    assert_eq!(block, file, "README.md's block and deploy/nginx-chat.conf differ");
}

/// The README's node commands trust the proxy, and start nginx the tested way (each
/// section's text before its first subsection: the Redis Cluster recipe has no proxy).
#[test]
fn the_readmes_recipes_start_the_nodes_behind_the_proxy() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    for (section, config) in
        [("Behind a proxy", "deploy/nginx-chat.conf"), ("Running several nodes", "deploy/nginx.conf")]
    {
        let text = readme.split(&format!("\n## {section}\n")).nth(1).unwrap().split("\n##").next().unwrap();
        let nodes: Vec<&str> = text.lines().filter(|l| l.contains("ssechat --listen")).collect();
        assert!(!nodes.is_empty(), "{section}: a node command");
        for node in nodes {
            assert!(node.contains("--trusted-proxy 127.0.0.1"), "{section}: {node}");
        }
        assert!(text.contains(&format!("deploy/run-nginx.sh {config} ")), "{section}: starts {config}");
    }
}

/// `nginx -t` on the files as shipped, under the usual open-file limit of 1024: nothing to
/// warn about, and everything it writes (pid, logs, temp directories) lands in the prefix.
#[test]
fn the_shipped_configs_pass_nginx_t_and_write_only_in_their_prefix() {
    for config in ["deploy/nginx.conf", "deploy/nginx-chat.conf"] {
        let prefix = tempfile::tempdir().unwrap();
        let output = Command::new("sh")
            .args(["-c", "ulimit -S -n 1024 2>/dev/null; exec nginx -t -p \"$1\" -e stderr -c \"$2\"", "sh"])
            .arg(prefix.path())
            .arg(repo_file(config))
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("nginx is installed (apt-get install nginx)");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && said.contains("test is successful"), "{config}: {said}");
        for complaint in ["[warn]", "[alert]", "[emerg]"] {
            assert!(!said.contains(complaint), "{config}: {said}");
        }
        let mut written: Vec<String> = std::fs::read_dir(prefix.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        written.sort();
        let expected = [
            "access.log",
            "client_body_temp",
            "error.log",
            "fastcgi_temp",
            "nginx.pid",
            "proxy_temp",
            "scgi_temp",
            "uwsgi_temp",
        ];
        assert_eq!(written, expected, "{config}");
    }
}
