//! `post`: C concurrent keep-alive posters for a fixed time (or count).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Target;
use crate::http::Endpoint;
use crate::stats::AtomicLatency;

#[derive(Debug, Args)]
pub struct PostArgs {
    /// The server, as `http://host:port`.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    #[arg(long, value_enum, default_value = "ssechat")]
    target: Target,
    /// Posters, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to post.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many posts even if time is left.
    #[arg(long, default_value_t = 10_000_000)]
    max_posts: u64,
    /// Rooms to spread posts over (`bench-0`, `bench-1`, ...).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 64)]
    text_bytes: usize,
    /// Print the result as one JSON line as well.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: PostArgs) -> Result<(), String> {
    let endpoint = Arc::new(Endpoint::parse(&args.url)?);
    let started = Instant::now();
    let deadline = started + args.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(AtomicLatency::new());
    let text = "x".repeat(args.text_bytes.max(1));
    let mut posters = Vec::new();
    for n in 0..args.concurrency.max(1) {
        let endpoint = Arc::clone(&endpoint);
        let issued = Arc::clone(&issued);
        let latency = Arc::clone(&latency);
        let room = format!("bench-{}", n % args.rooms.max(1));
        let text = text.clone();
        let (target, max_posts) = (args.target, args.max_posts);
        posters.push(tokio::spawn(async move {
            let mut errors = 0_u64;
            'connect: while Instant::now() < deadline {
                let Ok(Ok(tcp)) =
                    tokio::time::timeout_at(deadline.into(), TcpStream::connect(&endpoint.authority)).await
                else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
                else {
                    errors += 1;
                    continue;
                };
                tokio::spawn(conn);
                while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_posts {
                    let sent = Instant::now();
                    let request = endpoint.publish(target, &room, &text);
                    match tokio::time::timeout_at(deadline.into(), sender.send_request(request)).await {
                        Ok(Ok(response)) if response.status().is_success() => latency.record(sent.elapsed()),
                        Ok(Ok(_)) => errors += 1,
                        Ok(Err(_)) => {
                            errors += 1;
                            continue 'connect;
                        }
                        Err(_) => break 'connect, // out of time mid-request
                    }
                }
                break;
            }
            errors
        }));
    }
    let mut errors = 0;
    for poster in posters {
        errors += poster.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = latency.count();
    let rate = ok as f64 / elapsed;
    println!(
        "post {}: {} posters, {ok} ok, {errors} errors in {elapsed:.1} s = {rate:.0} posts/s; latency {}",
        args.url,
        args.concurrency,
        latency.summary()
    );
    if args.json {
        let line = serde_json::json!({
            "mode": "post", "url": args.url, "concurrency": args.concurrency, "ok": ok, "errors": errors,
            "seconds": elapsed, "posts_per_second": rate,
            "p50_ms": latency.quantile_ms(0.5), "p99_ms": latency.quantile_ms(0.99), "max_ms": latency.max_ms(),
        });
        println!("{line}");
    }
    Ok(())
}
