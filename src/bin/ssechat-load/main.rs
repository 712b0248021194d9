//! ssechat-load: the project's load tool, runnable against any ssechat URL (and against
//! nchan, the reference pub/sub server, with `--target nchan`).
//!
//! - `post`: C concurrent keep-alive posters; reports posts per second and latency.
//!
//! Every loop is bounded in count and in time, so a run always ends by itself.

mod http;
mod post;
mod stats;

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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssechat-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
