//! `soak`: many clients connecting, reading, posting and disconnecting for a long while,
//! checking that every client sees every message of its room exactly once across all its
//! reconnects (it resumes with `Last-Event-ID`), and watching the server's memory and open
//! file descriptors at the start, the middle and the end.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Target;
use crate::http::Endpoint;
use crate::open::{connect_from, open_stream};
use crate::usage::{ServerUsage, cpu_us_per_delivery, per_delivery_text};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// The server, as `http://host:port`.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Clients, each one stream at a time.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Rooms the clients are spread over.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// How long the soak runs.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How often, on average, a client posts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    post_every: Duration,
    /// Source addresses to spread clients over: 127.0.0.1 up to 127.0.0.N.
    #[arg(long, default_value_t = 32)]
    sources: u8,
    /// The server's process ids (comma-separated), for its memory and open files.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Open each stream the way a browser does: `GET /rooms/{room}` first, read in full,
    /// then the stream request on the same keep-alive connection.
    #[arg(long)]
    warm: bool,
}

#[derive(Default)]
struct Totals {
    connections: AtomicU64,
    posted: AtomicU64,
    post_errors: AtomicU64,
    deliveries: AtomicU64,
    /// Ids skipped: messages a client never saw.
    lost: AtomicU64,
    duplicates: AtomicU64,
    resets: AtomicU64,
    connect_errors: AtomicU64,
}

pub async fn run(args: SoakArgs) -> Result<(), String> {
    let endpoint = Arc::new(Endpoint::parse(&args.url)?);
    let server = endpoint.resolve().await?;
    let usage = ServerUsage::new(&args.pid);
    let prefix = format!(
        "soak{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
    );
    let totals = Arc::new(Totals::default());
    let started = Instant::now();
    let deadline = started + args.duration;
    let sample = |label: &str| {
        let fds = args
            .pid
            .iter()
            .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
            .map(|d| d.count())
            .sum::<usize>();
        let rss = usage.rss_bytes().unwrap_or(0) as f64 / 1048576.0;
        println!("  {label:>6}: server RSS {rss:.1} MiB, open fds {fds}");
        serde_json::json!({ "at": label, "rss_mib": rss, "fds": fds })
    };
    let start = if args.warm { "warm: room page first" } else { "fresh connections" };
    println!(
        "soak {} ({start}): {} clients over {} rooms for {:?}",
        args.url, args.clients, args.rooms, args.duration
    );
    let mut samples = vec![sample("start")];
    let cpu_start = usage.cpu_seconds();

    let mut tasks = Vec::new();
    for n in 0..args.clients {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (n % args.sources.max(1) as usize) as u8);
        let client = Client {
            source,
            server,
            endpoint: Arc::clone(&endpoint),
            room: format!("{prefix}-{}", n % args.rooms.max(1)),
            post_every: args.post_every,
            deadline,
            warm: args.warm,
        };
        let totals = Arc::clone(&totals);
        tasks.push(tokio::spawn(async move { client.run(&totals).await }));
        if n % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(50)).await; // ramp up
        }
    }
    let middle = started + args.duration / 2;
    tokio::time::sleep_until(middle.into()).await;
    samples.push(sample("middle"));
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let the server notice the last closes
    samples.push(sample("end"));
    let cpu = usage.cpu_seconds().zip(cpu_start).map(|(b, a)| b - a);

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "  {} connections, {} posted ({} failed), {} deliveries, lost {}, duplicates {}, resets {}, connect errors {}",
        get(&totals.connections),
        get(&totals.posted),
        get(&totals.post_errors),
        get(&totals.deliveries),
        get(&totals.lost),
        get(&totals.duplicates),
        get(&totals.resets),
        get(&totals.connect_errors)
    );
    if let Some(cpu) = cpu {
        println!("  server CPU {cpu:.2} s = {}", per_delivery_text(Some(cpu), get(&totals.deliveries)));
    }
    let line = serde_json::json!({
        "mode": "soak", "warm": args.warm, "clients": args.clients, "seconds": args.duration.as_secs(),
        "connections": get(&totals.connections), "posted": get(&totals.posted), "post_errors": get(&totals.post_errors),
        "deliveries": get(&totals.deliveries), "lost": get(&totals.lost), "duplicates": get(&totals.duplicates),
        "resets": get(&totals.resets), "connect_errors": get(&totals.connect_errors), "samples": samples,
        "cpu_seconds": cpu, "cpu_us_per_delivery": cpu_us_per_delivery(cpu, get(&totals.deliveries)),
    });
    println!("{line}");
    Ok(())
}

/// One client's settings: where it connects from and to, and for how long.
struct Client {
    source: Ipv4Addr,
    server: SocketAddr,
    endpoint: Arc<Endpoint>,
    room: String,
    post_every: Duration,
    deadline: Instant,
    warm: bool,
}

impl Client {
    /// Connect (resuming), read a while, maybe post, disconnect, pause, again.
    async fn run(&self, totals: &Totals) {
        // The last id seen; `None` until the first message.
        let mut last: Option<u64> = None;
        while Instant::now() < self.deadline {
            let requests = self.endpoint.stream_requests(Target::Ssechat, &self.room, self.warm, last);
            let (stream, first_bytes) = match open_stream(self.source, self.server, &requests).await {
                Ok(opened) => opened,
                Err(_) => {
                    totals.connect_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            totals.connections.fetch_add(1, Ordering::Relaxed);
            let stay = Duration::from_millis(fastrand::u64(1_000..=20_000));
            let until = (Instant::now() + stay).min(self.deadline);
            let reading = read_ids(stream, first_bytes, until, &mut last, totals);
            tokio::join!(reading, self.maybe_post(stay, totals));
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..2_000))).await;
        }
    }

    /// Posts about once every `post_every`, at a random point in the first half of `stay`.
    async fn maybe_post(&self, stay: Duration, totals: &Totals) {
        let chance = stay.as_secs_f64() / self.post_every.as_secs_f64();
        if fastrand::f64() >= chance {
            return;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..stay.as_millis() as u64 / 2 + 1))).await;
        match post(self.source, self.server, &self.endpoint, &self.room).await {
            Ok(()) => totals.posted.fetch_add(1, Ordering::Relaxed),
            Err(_) => totals.post_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Reads SSE until `until`, checking that ids go up by exactly one.
async fn read_ids(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    until: Instant,
    last: &mut Option<u64>,
    totals: &Totals,
) {
    let mut chunk = [0u8; 4096];
    loop {
        scan(&mut buf, last, totals);
        let read = tokio::time::timeout_at(until.into(), stream.read(&mut chunk)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => return, // time to go, or the server ended the stream
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Takes every complete line out of `buf`, checking ids as it goes.
fn scan(buf: &mut Vec<u8>, last: &mut Option<u64>, totals: &Totals) {
    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        let id = line
            .strip_prefix(b"id: ")
            .and_then(|r| std::str::from_utf8(r).ok())
            .and_then(|r| r.trim().parse().ok());
        match (id, *last) {
            (Some(id), Some(prev)) if id <= prev => {
                totals.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            (Some(id), prev) => {
                totals.lost.fetch_add(prev.map_or(0, |p| id - p - 1), Ordering::Relaxed);
                totals.deliveries.fetch_add(1, Ordering::Relaxed);
                *last = Some(id);
            }
            (None, _) if line.starts_with(b"event: reset") => {
                totals.resets.fetch_add(1, Ordering::Relaxed);
            }
            (None, _) => {}
        }
    }
}

/// One POST on its own connection, from `source`.
async fn post(source: Ipv4Addr, server: SocketAddr, endpoint: &Endpoint, room: &str) -> Result<(), String> {
    let mut stream = connect_from(source, server).await?;
    let body = serde_json::json!({ "room": room, "author": "soak", "text": "still here" }).to_string();
    let request = format!(
        "POST {}/send HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        endpoint.prefix,
        endpoint.authority,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .map_err(|_| "no answer")?
        .map_err(|e| e.to_string())?;
    if &head[9..12] == b"201" { Ok(()) } else { Err(String::from_utf8_lossy(&head).into_owned()) }
}
