//! What an idle stream costs the server, on the real binary: the README's "at most 5 KiB of
//! memory per idle stream" holds for streams opened on a fresh connection and for streams
//! opened the way browsers open them, after loading the page on the same connection.
//! (Memory, not speed: the figure does not depend on how fast the machine is.)

use futures_util::StreamExt;

use crate::process::Server;
use crate::raw::Raw;

const STREAMS: usize = 2_000;
/// The bound the README quotes, in KiB per idle stream.
const README_KIB: f64 = 5.0;

fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens a stream on a new connection; `warm`: after loading the room page on it.
async fn open_stream(addr: &str, warm: bool) -> Raw {
    let mut raw = Raw::connect(addr).await;
    if warm {
        raw.send("GET /rooms/capacity HTTP/1.1\r\nhost: localhost\r\naccept: text/html\r\n\r\n").await;
        assert_eq!(raw.response().await.status, 200);
    }
    raw.send("GET /events?room=capacity HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\n\r\n")
        .await;
    assert_eq!(raw.response().await.status, 200);
    assert!(raw.fill_until(b"retry:").await, "the stream starts");
    raw
}

/// Server memory per idle stream, in KiB, with `STREAMS` of them open.
async fn kib_per_stream(warm: bool) -> f64 {
    let server = Server::start(&[
        "--store",
        "memory",
        "--max-streams-per-client",
        "100000",
        "--max-connections-per-client",
        "100000",
    ])
    .await;
    // Whatever is made once (pools, lazy tables) is made before the first reading.
    drop(open_stream(server.addr(), true).await);
    let before = rss_kib(server.pid());
    let streams: Vec<Raw> = futures_util::stream::iter(0..STREAMS)
        .map(|_| open_stream(server.addr(), warm))
        .buffer_unordered(64)
        .collect()
        .await;
    let grown = rss_kib(server.pid()) - before;
    drop(streams);
    grown / STREAMS as f64
}

#[tokio::test]
async fn an_idle_stream_costs_at_most_the_readme_figure_whichever_way_it_was_opened() {
    for warm in [false, true] {
        let kib = kib_per_stream(warm).await;
        eprintln!("{kib:.2} KiB per stream (page loaded first: {warm})");
        assert!(kib <= README_KIB, "{kib:.2} KiB per stream (page loaded first: {warm})");
    }
    let readme = include_str!("../../README.md");
    assert!(readme.contains("at most 5 KiB of server memory"), "the README quotes the bound tested here");
}
