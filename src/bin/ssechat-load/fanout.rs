//! `fanout`: N open streams, M messages at R per second, every delivery timed.
//!
//! Each stream is one task with a raw socket and a 4 KiB buffer: it sends a plain HTTP/1.1
//! request and scans what comes back for message markers, so 20,000 of them cost little.
//! With `--warm` the connection first loads the room page, as a browser's does.
//! Streams are spread over source addresses 127.0.0.1, .2, ... so N can exceed one address's
//! port range. Each message carries `@@<seq>.<intended send time>@@`; latency is measured from
//! the intended time, so a server that falls behind cannot hide it (no coordinated omission).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::either::Either;

use crate::Target;
use crate::h2;
use crate::http::{Endpoint, check_warm};
use crate::open::{connect_from, open_stream};
use crate::stats::AtomicLatency;
use crate::tls::{Alpn, Tls, TlsArgs};
use crate::usage::{ServerUsage, cpu_us_per_delivery, per_delivery_text};

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// The server, as `http://host:port` (or `https://host:port` with `--h2`).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Where messages are posted, if not to `--url` (another node of a cluster).
    #[arg(long)]
    publish_url: Option<String>,
    #[arg(long, value_enum, default_value = "ssechat")]
    pub target: Target,
    /// Streams to open.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Rooms the streams and messages are spread over.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Messages to post in all.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Messages per second, across all rooms.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Keep-alive connections the publisher posts through.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// The source address the publisher posts from (one of 127.0.0.x), so its sends count
    /// for a client of their own [default: the system's choice, 127.0.0.1 on loopback].
    #[arg(long)]
    publish_from: Option<Ipv4Addr>,
    /// Source addresses to spread streams over: 127.0.0.1 up to 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
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
    /// Open each stream the way a browser does: `GET /rooms/{room}` first, read in full,
    /// then the stream request on the same keep-alive connection (ssechat only).
    #[arg(long)]
    warm: bool,
    /// Open the streams over HTTP/2 (needs an `https://` URL): `--streams` requests spread
    /// over `--connections` TLS connections.
    #[arg(long)]
    h2: bool,
    /// With `--h2`, the connections the streams share.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    #[command(flatten)]
    tls: TlsArgs,
}

/// What every stream task shares.
pub struct Shared {
    /// Per room, one bit per message sequence number seen, per stream: (stream, seq).
    received: Vec<AtomicU64>,
    /// Words of `received` per stream.
    words: usize,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    /// Streams that ended or failed before the run was over.
    pub broken: AtomicU64,
    latency: AtomicLatency,
    pub started: Instant,
    last_delivery_us: AtomicU64,
    pub done: AtomicBool,
}

impl Shared {
    fn new(streams: usize, words: usize) -> Self {
        Self {
            received: (0..streams * words).map(|_| AtomicU64::new(0)).collect(),
            words,
            deliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            latency: AtomicLatency::new(),
            started: Instant::now(),
            last_delivery_us: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }
}

pub async fn run(args: FanoutArgs) -> Result<(), String> {
    let (outcome, shared) = measure(&args).await?;
    outcome.print(&args, &shared.latency);
    if args.json {
        println!("{}", outcome.json(&args, &shared.latency));
    }
    Ok(())
}

/// One run: open, hold, post, drain. The streams keep reading until the process ends.
async fn measure(args: &FanoutArgs) -> Result<(Outcome, Arc<Shared>), String> {
    check_warm(args.target, args.warm)?;
    let endpoint = Endpoint::parse_any(&args.url)?;
    let tls = check_tls(args, &endpoint)?;
    let rooms = args.rooms.max(1);
    let prefix = args.room_prefix.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        format!("load{}", now.as_millis())
    });
    let words = args.messages.div_ceil(rooms as u64).div_ceil(64) as usize;
    let shared = Arc::new(Shared::new(args.streams, words));
    let usage = ServerUsage::new(&args.pid);
    let rss_before = usage.rss_bytes();
    let opened = match &tls {
        Some(tls) if args.h2 => h2::open_all(args, &endpoint, tls, &prefix, &shared).await?,
        _ => open_all(args, &endpoint, &prefix, &shared).await?,
    };
    let idle = hold_idle(args, &usage).await;
    let broken_while_idle = shared.broken.load(Ordering::Relaxed) - opened.errors as u64;
    let posting = post_all(args, &prefix, &shared, &usage, tls.as_ref()).await?;
    let outcome = Outcome {
        opened,
        lost: expected_deliveries(opened.open, rooms, args.messages).saturating_sub(posting.deliveries),
        posting,
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        broken: shared.broken.load(Ordering::Relaxed),
        broken_while_idle,
        rss_before,
        idle,
    };
    Ok((outcome, shared))
}

/// `https://` streams go over HTTP/2 only, and `--warm` over HTTP/1.1 only. Returns the TLS
/// connectors when the streams or the posts need them.
fn check_tls(args: &FanoutArgs, endpoint: &Endpoint) -> Result<Option<Tls>, String> {
    match (args.h2, endpoint.tls) {
        (true, false) => {
            return Err("--h2 needs an https:// --url: the server speaks HTTP/2 over TLS".to_owned());
        }
        (false, true) => {
            return Err("an https:// --url needs --h2: streams over TLS are HTTP/2 here".to_owned());
        }
        _ => {}
    }
    if args.h2 && args.warm {
        return Err("--warm loads the page over HTTP/1.1; it can't be combined with --h2".to_owned());
    }
    let publish_tls = match &args.publish_url {
        Some(url) => Endpoint::parse_any(url)?.tls,
        None => endpoint.tls,
    };
    (endpoint.tls || publish_tls).then(|| Tls::new(&args.tls)).transpose()
}

/// The server with every stream open and nothing posted.
#[derive(Debug, Clone, Copy)]
struct Idle {
    rss: Option<u64>,
    /// CPU seconds over `--hold`.
    cpu: Option<f64>,
}

/// Idle cost: memory with every stream open, CPU while they just sit there for `--hold`.
async fn hold_idle(args: &FanoutArgs, usage: &ServerUsage) -> Idle {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = usage.rss_bytes();
    let cpu_start = usage.cpu_seconds();
    if !args.hold.is_zero() {
        tokio::time::sleep(args.hold).await;
    }
    Idle { rss, cpu: usage.cpu_seconds().zip(cpu_start).map(|(b, a)| b - a) }
}

/// The post phase, to the last delivery.
#[derive(Debug, Clone, Copy)]
struct Posting {
    post_errors: u64,
    deliveries: u64,
    /// Deliveries per second, from the first post to the last delivery.
    rate: f64,
    /// Server CPU seconds while posting and draining.
    cpu: Option<f64>,
}

/// Posts every message at its intended time, then waits for the deliveries.
async fn post_all(
    args: &FanoutArgs,
    prefix: &str,
    shared: &Arc<Shared>,
    usage: &ServerUsage,
    tls: Option<&Tls>,
) -> Result<Posting, String> {
    let cpu_start = usage.cpu_seconds();
    let post_started = shared.started.elapsed();
    let publish_to = Arc::new(Endpoint::parse_any(args.publish_url.as_deref().unwrap_or(&args.url))?);
    let post_errors = publish(args, prefix, &publish_to, shared, post_started, tls).await;
    let last_intended =
        post_started + Duration::from_secs_f64(args.messages.saturating_sub(1) as f64 / args.rate);
    wait_for_deliveries(args, shared).await;
    let cpu = usage.cpu_seconds().zip(cpu_start).map(|(b, a)| b - a);
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let last_delivery = Duration::from_micros(shared.last_delivery_us.load(Ordering::Relaxed));
    let window = last_delivery.max(last_intended).saturating_sub(post_started).as_secs_f64().max(1e-3);
    Ok(Posting { post_errors, deliveries, rate: deliveries as f64 / window, cpu })
}

/// How opening the streams went.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    open: usize,
    errors: usize,
    seconds: f64,
}

/// Opens every stream, `--connect-concurrency` at a time; each then reads until the run is
/// over. Returns once every stream has its response head or failed.
async fn open_all(
    args: &FanoutArgs,
    endpoint: &Endpoint,
    prefix: &str,
    shared: &Arc<Shared>,
) -> Result<Opened, String> {
    let server = endpoint.resolve().await?;
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, ready_rx) = unbounded_channel();
    let started = Instant::now();
    for n in 0..args.streams {
        let source = source_address(n, args.sources);
        let requests =
            endpoint.stream_requests(args.target, &room_name(prefix, n, args.rooms), args.warm, None);
        let (shared, connecting, ready) = (Arc::clone(shared), Arc::clone(&connecting), ready_tx.clone());
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("never closed");
            // No message is posted before every stream is open: the body so far is the preamble.
            let opened = open_stream(source, server, &requests).await.map(|(stream, _preamble)| stream);
            drop(permit);
            if let Some(stream) = report_open(&shared, &ready, opened) {
                read_stream(stream, n, &shared).await;
            }
        });
    }
    drop(ready_tx);
    gather_opened(args.streams, ready_rx, started).await
}

/// Stream `n`'s source address: 127.0.0.1 up to 127.0.0.`sources`, in turn.
pub fn source_address(n: usize, sources: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (n % sources.max(1) as usize) as u8)
}

/// Stream `n`'s room: the rooms in turn.
pub fn room_name(prefix: &str, n: usize, rooms: usize) -> String {
    format!("{prefix}-{}", n % rooms.max(1))
}

/// Tells `ready` how opening a stream went (a failure also counts as broken); the opened
/// stream, if it did.
pub fn report_open<T>(
    shared: &Shared,
    ready: &UnboundedSender<Result<(), String>>,
    opened: Result<T, String>,
) -> Option<T> {
    match opened {
        Ok(stream) => {
            let _ = ready.send(Ok(()));
            Some(stream)
        }
        Err(e) => {
            shared.broken.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send(Err(e));
            None
        }
    }
}

/// Waits for every one of `streams` to report on `ready`, for at most 120 s.
pub async fn gather_opened(
    streams: usize,
    mut ready: UnboundedReceiver<Result<(), String>>,
    started: Instant,
) -> Result<Opened, String> {
    let mut opened = Opened { open: 0, errors: 0, seconds: 0.0 };
    let mut first_error = None;
    for _ in 0..streams {
        let result = tokio::time::timeout(Duration::from_secs(120), ready.recv())
            .await
            .map_err(|_| "streams took over 120 s to open")?
            .expect("every stream task reports");
        match result {
            Ok(()) => opened.open += 1,
            Err(e) => {
                opened.errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    opened.seconds = started.elapsed().as_secs_f64();
    eprintln!("{} streams open in {:.1} s, {} failed", opened.open, opened.seconds, opened.errors);
    if let Some(e) = first_error {
        eprintln!("first connect error: {e}");
    }
    Ok(opened)
}

/// Waits for what is still on its way after the last post, bounded by `--drain`, then
/// tells the streams the run is over.
async fn wait_for_deliveries(args: &FanoutArgs, shared: &Shared) {
    let expected =
        expected_deliveries(args.streams, args.rooms.max(1), args.messages) - lost_to_broken(shared, args);
    let deadline = Instant::now() + args.drain;
    while shared.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.done.store(true, Ordering::Relaxed);
}

/// What a run measured, for the summary and the JSON line.
struct Outcome {
    opened: Opened,
    posting: Posting,
    lost: u64,
    duplicates: u64,
    broken: u64,
    broken_while_idle: u64,
    rss_before: Option<u64>,
    idle: Idle,
}

impl Outcome {
    /// Server memory per open stream, in bytes.
    fn rss_per_stream(&self) -> Option<f64> {
        match (self.rss_before, self.idle.rss) {
            (Some(before), Some(open)) if self.opened.open > 0 => {
                Some((open as f64 - before as f64) / self.opened.open as f64)
            }
            _ => None,
        }
    }

    fn print(&self, args: &FanoutArgs, latency: &AtomicLatency) {
        let start = match (args.h2, args.warm) {
            (true, _) => format!("HTTP/2 over TLS, {} connections", args.connections.max(1)),
            (false, true) => "warm: room page first".to_owned(),
            (false, false) => "fresh connections".to_owned(),
        };
        println!(
            "fanout {} ({:?}, {start}): {}/{} streams, {} messages at {}/s over {} room(s)",
            args.url,
            args.target,
            self.opened.open,
            args.streams,
            args.messages,
            args.rate,
            args.rooms.max(1)
        );
        println!(
            "  deliveries {} = {:.0}/s; latency {}; lost {}; duplicates {}; post errors {}; streams broken {}",
            self.posting.deliveries,
            self.posting.rate,
            latency.summary(),
            self.lost,
            self.duplicates,
            self.posting.post_errors,
            self.broken
        );
        if let (Some(before), Some(after)) = (self.rss_before, self.idle.rss) {
            println!(
                "  server RSS {:.1} MiB before, {:.1} MiB with streams open = {:.2} KiB per stream",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                self.rss_per_stream().unwrap_or(0.0) / 1024.0
            );
        }
        if let Some(cpu) = self.posting.cpu {
            println!(
                "  server CPU {cpu:.2} s while posting = {}; idle {:.2} s over {:.0} s held ({} broken)",
                per_delivery_text(self.posting.cpu, self.posting.deliveries),
                self.idle.cpu.unwrap_or(0.0),
                args.hold.as_secs_f64(),
                self.broken_while_idle
            );
        }
    }

    fn json(&self, args: &FanoutArgs, latency: &AtomicLatency) -> serde_json::Value {
        serde_json::json!({
            "mode": "fanout", "url": args.url, "target": format!("{:?}", args.target).to_lowercase(),
            "warm": args.warm, "h2": args.h2, "connections": args.h2.then_some(args.connections.max(1)), "streams": args.streams, "open": self.opened.open,
            "connect_errors": self.opened.errors, "rooms": args.rooms.max(1), "messages": args.messages,
            "rate": args.rate, "deliveries": self.posting.deliveries, "deliveries_per_second": self.posting.rate,
            "lost": self.lost, "duplicates": self.duplicates, "post_errors": self.posting.post_errors,
            "broken": self.broken, "broken_while_idle": self.broken_while_idle,
            "p50_ms": latency.quantile_ms(0.5), "p99_ms": latency.quantile_ms(0.99), "max_ms": latency.max_ms(),
            "rss_before": self.rss_before, "rss_open": self.idle.rss, "rss_per_stream": self.rss_per_stream(),
            "cpu_seconds": self.posting.cpu, "cpu_us_per_delivery": cpu_us_per_delivery(self.posting.cpu, self.posting.deliveries),
            "idle_cpu_seconds": self.idle.cpu, "hold_seconds": args.hold.as_secs_f64(),
            "connect_seconds": self.opened.seconds,
        })
    }
}

fn expected_deliveries(streams: usize, rooms: usize, messages: u64) -> u64 {
    (0..streams).map(|n| (0..messages).filter(|m| (*m as usize) % rooms == n % rooms).count() as u64).sum()
}

/// Deliveries that streams which broke can no longer receive (they are counted as broken).
fn lost_to_broken(shared: &Shared, args: &FanoutArgs) -> u64 {
    shared.broken.load(Ordering::Relaxed) * args.messages.div_ceil(args.rooms.max(1) as u64)
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
        let keep_from = scan(&buf[..filled], index, shared, now_us);
        buf.copy_within(keep_from..filled, 0);
        carry = filled - keep_from;
    }
}

/// Records every marker `@@<seq>.<micros>@@` in `buf` for stream `index`. Returns where the
/// bytes to keep for the next read start: a marker the end of `buf` cut in two.
pub fn scan(buf: &[u8], index: usize, shared: &Shared, now_us: u64) -> usize {
    let filled = buf.len();
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
    keep_from.min(filled)
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
    tls: Option<&Tls>,
) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let padding = "x".repeat(args.text_bytes);
    for _ in 0..args.publishers.max(1) {
        let (endpoint, shared, next, errors) =
            (Arc::clone(endpoint), Arc::clone(shared), Arc::clone(&next), Arc::clone(&errors));
        let (target, rooms, messages, rate, padding, source) = (
            args.target,
            args.rooms.max(1) as u64,
            args.messages,
            args.rate,
            padding.clone(),
            args.publish_from,
        );
        let (prefix, tls) = (prefix.to_owned(), tls.cloned());
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
                // A connection the server closed (it said `connection: close`, or timed it out)
                // is replaced, as any HTTP client does, not counted as a failed post.
                if sender.as_ref().is_none_or(hyper::client::conn::http1::SendRequest::is_closed) {
                    sender = connect(&endpoint, source, tls.as_ref()).await;
                }
                let Some(s) = sender.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match s.send_request(endpoint.publish(target, &room, &text)).await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => {
                        // Said once per run: what a failed post got, to tell the server's
                        // refusals from the tool's own trouble.
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("post {i} answered {}", response.status());
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("post {i} failed: {e}");
                        }
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

/// A keep-alive connection to post through, from `source` if given; over TLS (HTTP/1.1 by
/// ALPN) for an `https://` endpoint.
async fn connect(
    endpoint: &Endpoint,
    source: Option<Ipv4Addr>,
    tls: Option<&Tls>,
) -> Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    let tcp = match source {
        Some(source) => connect_from(source, endpoint.resolve().await.ok()?).await.ok()?,
        None => TcpStream::connect(&endpoint.authority).await.ok()?,
    };
    let _ = tcp.set_nodelay(true);
    let io = match tls {
        Some(tls) if endpoint.tls => Either::Right(tls.connect(tcp, endpoint, Alpn::Http1).await.ok()?),
        _ => Either::Left(tcp),
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fanout: FanoutArgs,
    }

    fn args(flags: &[&str]) -> FanoutArgs {
        Cli::try_parse_from(std::iter::once("fanout").chain(flags.iter().copied()))
            .expect("valid flags")
            .fanout
    }

    /// A real ssechat serving HTTPS (HTTP/2 and HTTP/1.1) with a self-signed certificate, as
    /// `benches/h2.sh` runs it; the limits lifted for one client holding many streams.
    async fn https_server(dir: &std::path::Path) -> std::net::SocketAddr {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
        let mut config = ssechat::Config::defaults();
        config.store = ssechat::config::StoreUrl::Memory;
        config.tls_cert = Some(dir.join("cert.pem"));
        config.tls_key = Some(dir.join("key.pem"));
        config.send_rate = 1_000_000.0;
        config.send_burst = 1_000_000;
        config.max_streams_per_client = 100_000;
        config.max_connections_per_client = 100_000;
        let state = ssechat::AppState::new(config).await.expect("the server starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(ssechat::run(listener, state, std::future::pending()));
        addr
    }

    #[tokio::test]
    async fn h2_streams_over_a_few_tls_connections_receive_every_message() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("https://{}", https_server(dir.path()).await);
        let flags = ["--h2", "--insecure", "--url", &url, "--streams", "30", "--connections", "4"];
        let args = args(
            &[&flags[..], &["--rooms", "2", "--messages", "6", "--rate", "100", "--drain", "20s"]].concat(),
        );
        let (outcome, shared) =
            tokio::time::timeout(Duration::from_secs(60), measure(&args)).await.unwrap().unwrap();
        assert_eq!((outcome.opened.open, outcome.opened.errors), (30, 0));
        assert_eq!(outcome.posting.deliveries, 30 * 3, "each stream gets its room's 3 messages");
        assert_eq!(
            (outcome.lost, outcome.duplicates, outcome.broken, outcome.posting.post_errors),
            (0, 0, 0, 0)
        );
        assert_eq!(shared.latency.count(), 90, "every delivery is timed");
    }

    #[tokio::test]
    async fn tls_and_http2_go_together() {
        let refused = |flags: &[&str]| {
            let args = args(flags);
            check_tls(&args, &Endpoint::parse_any(&args.url).unwrap()).err().expect("refused")
        };
        assert!(refused(&["--h2", "--url", "http://127.0.0.1:1"]).contains("--h2 needs an https://"));
        assert!(refused(&["--url", "https://127.0.0.1:1", "--insecure"]).contains("needs --h2"));
        assert!(refused(&["--h2", "--warm", "--url", "https://127.0.0.1:1"]).contains("--warm"));
        assert!(Cli::try_parse_from(["fanout", "--insecure", "--ca", "x.pem"]).is_err());
    }
}
