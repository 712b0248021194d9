//! `fanout`: N open streams, M messages at R per second, every delivery timed.
//!
//! Each stream is one task with a raw socket and a 4 KiB buffer: it sends a plain HTTP/1.1
//! request and scans what comes back for message markers, so 20,000 of them cost little.
//! Streams are spread over source addresses 127.0.0.1, .2, ... so N can exceed one address's
//! port range. Each message carries `@@<seq>.<intended send time>@@`; latency is measured from
//! the intended time, so a server that falls behind cannot hide it (no coordinated omission).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::Target;
use crate::http::Endpoint;
use crate::stats::AtomicLatency;
use crate::usage::ServerUsage;

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// The server, as `http://host:port`.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Where messages are posted, if not to `--url` (another node of a cluster).
    #[arg(long)]
    publish_url: Option<String>,
    #[arg(long, value_enum, default_value = "ssechat")]
    target: Target,
    /// Streams to open.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Rooms the streams and messages are spread over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Messages to post in all.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Messages per second, across all rooms.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Keep-alive connections the publisher posts through.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Source addresses to spread streams over: 127.0.0.1 up to 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Streams being connected at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Keep the streams open this long before posting (to measure idle cost).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// After the last post, how long to wait for deliveries still on their way.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// The server's process ids (comma-separated), for its CPU time and memory.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Room names are `<prefix>-0`, `<prefix>-1`, ...; by default unique to this run, so
    /// history left by an earlier run is never counted.
    #[arg(long)]
    room_prefix: Option<String>,
    /// Bytes of padding per message.
    #[arg(long, default_value_t = 32)]
    text_bytes: usize,
    /// Print the result as one JSON line as well.
    #[arg(long)]
    json: bool,
}

/// What every stream task shares.
struct Shared {
    /// Per room, one bit per message sequence number seen, per stream: (stream, seq).
    received: Vec<AtomicU64>,
    /// Words of `received` per stream.
    words: usize,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    /// Streams that ended or failed before the run was over.
    broken: AtomicU64,
    latency: AtomicLatency,
    started: Instant,
    last_delivery_us: AtomicU64,
    done: AtomicBool,
}

pub async fn run(args: FanoutArgs) -> Result<(), String> {
    let endpoint = Arc::new(Endpoint::parse(&args.url)?);
    let server = endpoint.resolve().await?;
    let rooms = args.rooms.max(1);
    let prefix = args.room_prefix.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        format!("load{}", now.as_millis())
    });
    let per_room = args.messages.div_ceil(rooms as u64);
    let words = per_room.div_ceil(64) as usize;
    let shared = Arc::new(Shared {
        received: (0..args.streams * words).map(|_| AtomicU64::new(0)).collect(),
        words,
        deliveries: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        broken: AtomicU64::new(0),
        latency: AtomicLatency::new(),
        started: Instant::now(),
        last_delivery_us: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let usage = ServerUsage::new(&args.pid);
    let rss_before = usage.rss_bytes();

    // Open every stream; each reports once its response has started.
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let connect_started = Instant::now();
    for n in 0..args.streams {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (n % args.sources.max(1) as usize) as u8);
        let room = format!("{prefix}-{}", n % rooms);
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
            endpoint.stream_path(args.target, &room),
            endpoint.authority
        );
        let (shared, connecting, ready) = (Arc::clone(&shared), Arc::clone(&connecting), ready_tx.clone());
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("never closed");
            // No message is posted before every stream is open: the body so far is the preamble.
            let stream = match open_stream(source, server, &request).await {
                Ok((stream, _preamble)) => stream,
                Err(e) => {
                    shared.broken.fetch_add(1, Ordering::Relaxed);
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            drop(permit);
            let _ = ready.send(Ok(()));
            read_stream(stream, n, &shared).await;
        });
    }
    drop(ready_tx);
    let mut open = 0;
    let mut connect_errors = Vec::new();
    for _ in 0..args.streams {
        let result = tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
            .await
            .map_err(|_| "streams took over 120 s to open")?
            .expect("every stream task reports");
        match result {
            Ok(()) => open += 1,
            Err(e) => connect_errors.push(e),
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    eprintln!("{open} streams open in {connect_secs:.1} s, {} failed", connect_errors.len());
    if let Some(e) = connect_errors.first() {
        eprintln!("first connect error: {e}");
    }

    // Idle cost: memory with every stream open, CPU while they just sit there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = usage.rss_bytes();
    let idle_cpu_start = usage.cpu_seconds();
    if !args.hold.is_zero() {
        tokio::time::sleep(args.hold).await;
    }
    let idle_cpu = usage.cpu_seconds().zip(idle_cpu_start).map(|(b, a)| b - a);
    let broken_while_idle = shared.broken.load(Ordering::Relaxed) - connect_errors.len() as u64;

    // Post every message at its intended time.
    let cpu_start = usage.cpu_seconds();
    let post_started = shared.started.elapsed();
    let publish_to = Arc::new(Endpoint::parse(args.publish_url.as_deref().unwrap_or(&args.url))?);
    let post_errors = publish(&args, &prefix, &publish_to, &shared, post_started).await;
    let last_intended =
        post_started + Duration::from_secs_f64(args.messages.saturating_sub(1) as f64 / args.rate);
    // Wait for what is still on its way, bounded by --drain.
    let expected = expected_deliveries(args.streams, rooms, args.messages) - lost_to_broken(&shared, &args);
    let drain_deadline = Instant::now() + args.drain;
    while shared.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.done.store(true, Ordering::Relaxed);
    let cpu = usage.cpu_seconds().zip(cpu_start).map(|(b, a)| b - a);
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let last_delivery = Duration::from_micros(shared.last_delivery_us.load(Ordering::Relaxed));
    let window = last_delivery.max(last_intended).saturating_sub(post_started).as_secs_f64().max(1e-3);
    let rate = deliveries as f64 / window;
    let lost = expected_deliveries(open, rooms, args.messages).saturating_sub(deliveries);
    let latency = &shared.latency;

    let per_stream_rss = match (rss_before, rss_open) {
        (Some(before), Some(open_rss)) if open > 0 => Some((open_rss as f64 - before as f64) / open as f64),
        _ => None,
    };
    println!(
        "fanout {} ({:?}): {open}/{} streams, {} messages at {}/s over {rooms} room(s)",
        args.url, args.target, args.streams, args.messages, args.rate
    );
    println!(
        "  deliveries {deliveries} = {rate:.0}/s; latency {}; lost {lost}; duplicates {}; post errors {post_errors}; streams broken {}",
        latency.summary(),
        shared.duplicates.load(Ordering::Relaxed),
        shared.broken.load(Ordering::Relaxed)
    );
    if let (Some(before), Some(after)) = (rss_before, rss_open) {
        println!(
            "  server RSS {:.1} MiB before, {:.1} MiB with streams open = {:.2} KiB per stream",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            per_stream_rss.unwrap_or(0.0) / 1024.0
        );
    }
    if let Some(cpu) = cpu {
        println!(
            "  server CPU {cpu:.2} s while posting; idle {:.2} s over {:.0} s held ({broken_while_idle} broken)",
            idle_cpu.unwrap_or(0.0),
            args.hold.as_secs_f64()
        );
    }
    if args.json {
        let line = serde_json::json!({
            "mode": "fanout", "url": args.url, "target": format!("{:?}", args.target).to_lowercase(),
            "streams": args.streams, "open": open, "connect_errors": connect_errors.len(),
            "rooms": rooms, "messages": args.messages, "rate": args.rate,
            "deliveries": deliveries, "deliveries_per_second": rate, "lost": lost,
            "duplicates": shared.duplicates.load(Ordering::Relaxed), "post_errors": post_errors,
            "broken": shared.broken.load(Ordering::Relaxed), "broken_while_idle": broken_while_idle,
            "p50_ms": latency.quantile_ms(0.5), "p99_ms": latency.quantile_ms(0.99), "max_ms": latency.max_ms(),
            "rss_before": rss_before, "rss_open": rss_open, "rss_per_stream": per_stream_rss,
            "cpu_seconds": cpu, "idle_cpu_seconds": idle_cpu, "hold_seconds": args.hold.as_secs_f64(),
            "connect_seconds": connect_secs,
        });
        println!("{line}");
    }
    Ok(())
}

fn expected_deliveries(streams: usize, rooms: usize, messages: u64) -> u64 {
    (0..streams).map(|n| (0..messages).filter(|m| (*m as usize) % rooms == n % rooms).count() as u64).sum()
}

/// Deliveries that streams which broke can no longer receive (they are counted as broken).
fn lost_to_broken(shared: &Shared, args: &FanoutArgs) -> u64 {
    shared.broken.load(Ordering::Relaxed) * args.messages.div_ceil(args.rooms.max(1) as u64)
}

/// Connects from `source`, sends `request`, and reads the response head. Returns the socket
/// and whatever body bytes arrived with the head (a replay can come in the same read).
pub async fn open_stream(
    source: Ipv4Addr,
    server: SocketAddr,
    request: &str,
) -> Result<(TcpStream, Vec<u8>), String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0))).map_err(|e| format!("bind {source}: {e}"))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(server))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect from {source}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .map_err(|_| "no response head in 30 s".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".to_owned());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = head.split_off(end + 4);
            if !head.starts_with(b"HTTP/1.1 200") {
                let line = String::from_utf8_lossy(&head[..head.len().min(60)]).into_owned();
                return Err(format!("unexpected response: {line}"));
            }
            return Ok((stream, body));
        }
        if head.len() > 16 * 1024 {
            return Err("response head too large".to_owned());
        }
    }
}

/// Reads until the run is over, counting every marker `@@<seq>.<micros>@@` seen.
async fn read_stream(mut stream: TcpStream, index: usize, shared: &Shared) {
    let mut buf = vec![0u8; 4096];
    let mut carry = 0; // bytes of a marker split across reads, kept at the front
    loop {
        let n = match stream.read(&mut buf[carry..]).await {
            Ok(0) | Err(_) => {
                if !shared.done.load(Ordering::Relaxed) {
                    shared.broken.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Ok(n) => n,
        };
        let now_us = shared.started.elapsed().as_micros() as u64;
        let filled = carry + n;
        let mut at = 0;
        let mut keep_from = filled.saturating_sub(40); // a marker is shorter than 40 bytes
        while let Some(start) = find(&buf[at..filled], b"@@").map(|i| at + i) {
            let Some(end) = find(&buf[start + 2..filled], b"@@").map(|i| start + 2 + i) else {
                keep_from = keep_from.min(start);
                break;
            };
            if let Some((seq, sent_us)) = parse_marker(&buf[start + 2..end]) {
                record(shared, index, seq, sent_us, now_us);
            }
            at = end + 2;
            keep_from = keep_from.max(at);
        }
        buf.copy_within(keep_from.min(filled)..filled, 0);
        carry = filled - keep_from.min(filled);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_marker(marker: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(marker).ok()?;
    let (seq, sent) = text.split_once('.')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

fn record(shared: &Shared, stream: usize, seq: u64, sent_us: u64, now_us: u64) {
    // `seq` counts messages within the stream's room (see `publish`).
    let word = stream * shared.words + (seq / 64) as usize;
    let Some(slot) = shared.received.get(word) else { return };
    let bit = 1u64 << (seq % 64);
    if slot.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        shared.duplicates.fetch_add(1, Ordering::Relaxed);
        return;
    }
    shared.deliveries.fetch_add(1, Ordering::Relaxed);
    shared.latency.record_us(now_us.saturating_sub(sent_us));
    shared.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
}

/// Posts message i at `start + i / rate` to room `i % rooms`, through a few keep-alive
/// connections. Returns the number of failed posts.
async fn publish(
    args: &FanoutArgs,
    prefix: &str,
    endpoint: &Arc<Endpoint>,
    shared: &Arc<Shared>,
    start: Duration,
) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let padding = "x".repeat(args.text_bytes);
    for _ in 0..args.publishers.max(1) {
        let (endpoint, shared, next, errors) =
            (Arc::clone(endpoint), Arc::clone(shared), Arc::clone(&next), Arc::clone(&errors));
        let (target, rooms, messages, rate, padding) =
            (args.target, args.rooms.max(1) as u64, args.messages, args.rate, padding.clone());
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut sender = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return;
                }
                let intended = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until((shared.started + intended).into()).await;
                let room = format!("{prefix}-{}", i % rooms);
                // Per-room sequence numbers, so each stream's bitmap is dense.
                let text = format!("@@{}.{}@@ {padding}", i / rooms, intended.as_micros());
                if sender.is_none() {
                    sender = connect(&endpoint).await;
                }
                let Some(s) = sender.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match s.send_request(endpoint.publish(target, &room, &text)).await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        sender = None;
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    errors.load(Ordering::Relaxed)
}

async fn connect(
    endpoint: &Endpoint,
) -> Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    let tcp = TcpStream::connect(&endpoint.authority).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}
