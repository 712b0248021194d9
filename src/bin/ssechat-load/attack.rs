//! `attack`: abusive clients against a server on loopback, for `--duration`, each kind
//! switchable (a count of 0 turns it off) and coming from its own source addresses, so the
//! server's per-client caps meet each kind alone:
//!
//! - idle sockets: connections that send nothing (refused over the cap at accept, closed by
//!   the header timeout otherwise), reopened after a short pause;
//! - slow bodies: a `POST` head with a large `content-length`, then one body byte at a time;
//! - a typing flood: `POST /typing` as fast as possible over keep-alive connections, a new
//!   author every time, one room;
//! - a room flood: `POST /send`, each to a new room, at `--room-rate` per attacker.
//!
//! Every attacker stops by itself at the deadline; its loops are bounded in count as well.
//! The report counts per kind the connections opened, refused (closed after a first answer
//! of 429 or 503), closed by the server otherwise, failed to connect, and every answer by
//! its status.

mod flood;
mod raw;
mod sources;
mod tally;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::http::Endpoint;
use crate::open::connect_from;
use raw::SlowPath;
use sources::Sources;
use tally::Tally;

#[derive(Debug, Args)]
pub struct AttackArgs {
    /// The server, as `http://host:port` (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// How long to attack; every attacker stops by itself then.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The pause before reopening a connection the server closed (each one ± half, so the
    /// attackers don't come back in waves).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    reconnect_pause: Duration,
    /// Connects in flight at once, over every kind.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Idle sockets: connections that send nothing.
    #[arg(long, default_value_t = 5000)]
    idle: usize,
    /// The address the idle sockets come from.
    #[arg(long, default_value = "127.0.0.200")]
    idle_from: Ipv4Addr,
    /// Slow bodies: a request head, then one body byte per `--slow-interval`.
    #[arg(long, default_value_t = 500)]
    slow_bodies: usize,
    /// The address the slow bodies come from.
    #[arg(long, default_value = "127.0.0.201")]
    slow_from: Ipv4Addr,
    /// Where the slow bodies go.
    #[arg(long, value_enum, default_value = "typing")]
    slow_path: SlowPath,
    /// The `content-length` the slow bodies announce (the server reads up to 64 KiB).
    #[arg(long, default_value_t = 65536)]
    slow_length: usize,
    /// How long a slow body waits between two of its bytes.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    slow_interval: Duration,
    /// Typing flooders, each on its own keep-alive connection, as fast as they can.
    #[arg(long, default_value_t = 8)]
    typing_flood: usize,
    /// The first of `--typing-sources` addresses the typing flood comes from.
    #[arg(long, default_value = "127.0.0.202")]
    typing_from: Ipv4Addr,
    /// How many addresses the typing flood comes from.
    #[arg(long, default_value_t = 4)]
    typing_sources: u8,
    /// Room flooders: each message to a new room.
    #[arg(long, default_value_t = 41)]
    room_flood: usize,
    /// The first of `--room-sources` addresses the room flood comes from.
    #[arg(long, default_value = "127.0.0.210")]
    room_from: Ipv4Addr,
    /// How many addresses the room flood comes from.
    #[arg(long, default_value_t = 41)]
    room_sources: u8,
    /// Messages per second per room flooder (the server allows 5 per client by default);
    /// 0 posts as fast as possible.
    #[arg(long, default_value_t = 5.0)]
    room_rate: f64,
    /// Print the result as one JSON line as well.
    #[arg(long)]
    json: bool,
}

/// After the deadline, how long the attackers get to notice before they are dropped.
const GRACE: Duration = Duration::from_secs(5);

/// What every attacker shares: where to, until when, how fast to come back.
pub struct Ctx {
    endpoint: Endpoint,
    server: SocketAddr,
    deadline: Instant,
    pause: Duration,
    connecting: Semaphore,
    /// Room names start with it, unique to this run.
    prefix: String,
}

impl Ctx {
    pub fn over(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Runs `work` until the attack ends: `None` if the time ran out first.
    pub async fn until_end<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout_at(self.deadline.into(), work).await.ok()
    }

    /// A connection from `source`, counted as opened or failed.
    pub async fn connect(&self, source: Ipv4Addr, tally: &Tally) -> Option<TcpStream> {
        let connected = self
            .until_end(async {
                let _permit = self.connecting.acquire().await.expect("never closed");
                connect_from(source, self.server).await
            })
            .await?;
        match connected {
            Ok(stream) => {
                tally.opened();
                Some(stream)
            }
            Err(_) => {
                tally.failed();
                None
            }
        }
    }

    /// The pause before reconnecting, never past the end.
    pub async fn pause(&self) {
        let pause = self.pause.mul_f64(0.5 + fastrand::f64());
        tokio::time::sleep_until((Instant::now() + pause).min(self.deadline).into()).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Idle,
    SlowBodies,
    TypingFlood,
    RoomFlood,
}

impl What {
    fn name(self) -> &'static str {
        match self {
            What::Idle => "idle sockets",
            What::SlowBodies => "slow bodies",
            What::TypingFlood => "typing flood",
            What::RoomFlood => "room flood",
        }
    }
}

/// One kind of attacker, turned on: its counts (with how many start from where).
struct Kind {
    what: What,
    tally: Arc<Tally>,
}

pub async fn run(args: AttackArgs) -> Result<(), String> {
    let endpoint = Endpoint::parse(&args.url)?;
    let server = endpoint.resolve().await?;
    if !server.ip().is_loopback() {
        return Err(format!("{server} is not on loopback: attack only runs against a local server"));
    }
    let kinds = kinds(&args)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ctx = Arc::new(Ctx {
        endpoint,
        server,
        deadline: Instant::now() + args.duration,
        pause: args.reconnect_pause,
        connecting: Semaphore::new(args.connect_concurrency.max(1)),
        prefix: format!("attack{}", now.as_millis()),
    });
    eprintln!("attacking {} for {:.0} s", args.url, args.duration.as_secs_f64());
    let started = Instant::now();
    let mut attackers = JoinSet::new();
    for kind in &kinds {
        spawn_kind(&mut attackers, &args, &ctx, kind);
    }
    let all_done = async { while attackers.join_next().await.is_some() {} };
    let _ = tokio::time::timeout_at((ctx.deadline + GRACE).into(), all_done).await;
    attackers.shutdown().await;
    report(&args, &kinds, started.elapsed());
    Ok(())
}

/// The kinds turned on, each with its sources; refused if two would share an address.
fn kinds(args: &AttackArgs) -> Result<Vec<Kind>, String> {
    let all = [
        (What::Idle, args.idle, Sources::new(args.idle_from, 1)?),
        (What::SlowBodies, args.slow_bodies, Sources::new(args.slow_from, 1)?),
        (What::TypingFlood, args.typing_flood, Sources::new(args.typing_from, args.typing_sources)?),
        (What::RoomFlood, args.room_flood, Sources::new(args.room_from, args.room_sources)?),
    ];
    let on: Vec<_> = all.into_iter().filter(|(_, n, _)| *n > 0).collect();
    for (i, (a, _, x)) in on.iter().enumerate() {
        if let Some((b, _, y)) = on[i + 1..].iter().find(|(_, _, y)| x.overlaps(y)) {
            let (a, b) = (a.name(), b.name());
            return Err(format!("the {a} ({x}) and the {b} ({y}) share addresses: give each its own"));
        }
    }
    let kind = |(what, n, sources): (What, usize, Sources)| Kind {
        what,
        tally: Arc::new(Tally::new(what.name(), n, sources)),
    };
    Ok(on.into_iter().map(kind).collect())
}

/// Starts every attacker of one kind.
fn spawn_kind(attackers: &mut JoinSet<()>, args: &AttackArgs, ctx: &Arc<Ctx>, kind: &Kind) {
    let slow = Arc::new(raw::Slow::new(&ctx.endpoint, args.slow_path, args.slow_length, args.slow_interval));
    let room_rate = (args.room_rate > 0.0).then_some(args.room_rate);
    for n in 0..kind.tally.attackers {
        let (ctx, tally, source) = (Arc::clone(ctx), Arc::clone(&kind.tally), kind.tally.sources.nth(n));
        match kind.what {
            What::Idle => attackers.spawn(raw::idle(ctx, tally, source)),
            What::SlowBodies => attackers.spawn(raw::slow(ctx, tally, source, Arc::clone(&slow))),
            What::TypingFlood => attackers.spawn(flood::typing(ctx, tally, source)),
            What::RoomFlood => attackers.spawn(flood::rooms(ctx, tally, source, room_rate)),
        };
    }
}

fn report(args: &AttackArgs, kinds: &[Kind], elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!("attack {} for {seconds:.1} s:", args.url);
    for kind in kinds {
        println!("  {}", kind.tally.line());
    }
    if args.json {
        let mut line = serde_json::json!({ "mode": "attack", "url": args.url, "seconds": seconds });
        for kind in kinds {
            line[kind.tally.name.replace(' ', "_")] = kind.tally.json();
        }
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        attack: AttackArgs,
    }

    fn args(flags: &[&str]) -> AttackArgs {
        Cli::parse_from(std::iter::once("attack").chain(flags.iter().copied())).attack
    }

    #[test]
    fn by_default_every_kind_is_on_each_from_its_own_addresses() {
        let kinds = kinds(&args(&[])).unwrap();
        let shown: Vec<String> =
            kinds.iter().map(|k| format!("{} {}", k.what.name(), k.tally.sources)).collect();
        assert_eq!(
            shown,
            [
                "idle sockets 127.0.0.200",
                "slow bodies 127.0.0.201",
                "typing flood 127.0.0.202-205",
                "room flood 127.0.0.210-250"
            ]
        );
    }

    #[test]
    fn a_count_of_zero_turns_a_kind_off_and_shared_addresses_are_refused() {
        let kinds = kinds(&args(&["--idle", "0", "--room-flood", "0"])).unwrap();
        assert_eq!(kinds.iter().map(|k| k.what).collect::<Vec<_>>(), [What::SlowBodies, What::TypingFlood]);
        let error = kinds_error(&["--typing-from", "127.0.0.199", "--typing-sources", "2"]);
        assert!(
            error.contains("the idle sockets (127.0.0.200) and the typing flood (127.0.0.199-200)"),
            "{error}"
        );
        // Off, it shares nothing.
        assert!(
            super::kinds(&args(&["--idle", "0", "--typing-from", "127.0.0.199", "--typing-sources", "2"]))
                .is_ok()
        );
    }

    fn kinds_error(flags: &[&str]) -> String {
        match kinds(&args(flags)) {
            Ok(_) => panic!("{flags:?} should be refused"),
            Err(e) => e,
        }
    }
}
