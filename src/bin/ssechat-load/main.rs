//! ssechat-load: the project's load tool, runnable against any ssechat URL (and against
//! nchan, the reference pub/sub server, with `--target nchan`).
//!
//! - `post`: C concurrent keep-alive posters; reports posts per second and latency.
//! - `fanout`: N open streams, M messages at R per second; reports deliveries per second,
//!   publish-to-deliver latency, lost messages, and the server's CPU time and memory.
//! - `soak`: clients connecting, reading, posting and disconnecting for minutes; checks
//!   nothing is lost across reconnects and that the server's memory and fds don't leak.
//! - `attack`: abusive clients (idle sockets, slow bodies, a typing flood, a room flood) for
//!   a while, each kind from its own loopback addresses; counts what the server refused.
//!
//! `fanout` and `soak` open each stream on a fresh connection, or with `--warm` the way a
//! browser does: the room page first, then the stream on the same keep-alive connection.
//! `fanout --h2` opens its streams as HTTP/2 requests over TLS instead, many to a connection
//! (`--connections`), as browsers do over HTTPS.
//!
//! Every loop is bounded in count and in time, so a run always ends by itself.

mod attack;
mod fanout;
mod h2;
mod http;
mod open;
mod post;
mod soak;
mod stats;
mod tls;
mod usage;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "ssechat-load", about = "Load tool for ssechat (and nchan)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive POST throughput with concurrent keep-alive posters.
    Post(post::PostArgs),
    /// Open many streams, post at a fixed rate, and time every delivery.
    Fanout(fanout::FanoutArgs),
    /// Many clients connecting, reading, posting and leaving for a long while; checks no
    /// message is lost and watches the server's memory and open files.
    Soak(soak::SoakArgs),
    /// Abusive clients for a while: idle sockets, slow bodies, a typing flood, a room flood;
    /// reports what the server opened, refused and closed for each kind.
    Attack(attack::AttackArgs),
}

/// Which server the tool talks to: their publish and subscribe URLs differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// `POST /send` (JSON), `GET /events?room=R`.
    Ssechat,
    /// `POST /pub?room=R` (raw body), `GET /sub?room=R`.
    Nchan,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Post(args) => post::run(args).await,
        Command::Fanout(args) => fanout::run(args).await,
        Command::Soak(args) => soak::run(args).await,
        Command::Attack(args) => attack::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssechat-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
