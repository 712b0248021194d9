//! `ssechat COMMAND ...`: administration against the configured `--store`, while the server
//! runs or not. Without a command the binary is the server ([`Config`]'s flags).
//!
//! Each command group has its own file here. Commands open the store the server's flags name
//! (`--store`, before or after the command, or `SSECHAT_STORE`): SQLite without taking the
//! server's lock on the file (they write only account and directory tables), Redis (one or a
//! Cluster) as one more client. Every node notices a change within a second (`policy/watch.rs`). The memory
//! store lives inside a server process and cannot be reached from here: use the admin HTTP
//! API there. `backup` opens no store: it copies the SQLite file (`store/sqlite/backup.rs`).

mod access;
mod backup;
mod ban;
mod room;
mod token;
mod user;

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Config, StoreUrl};
use crate::hub::Hub;
use crate::store::{SqliteStore, Store};

/// The binary's command line: the server's flags, and an optional command.
#[derive(Debug, clap::Parser)]
#[command(name = "ssechat", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    /// An administration command; without one, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Add, delete and list users, and change their passwords.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Give users API tokens (for `Authorization: Bearer`), list and delete them.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// List access rules; `SUBJECT PATTERN PERM` sets one; `--reset SUBJECT [PATTERN]` removes.
    Access(access::AccessArgs),
    /// List bans; `TARGET [--room ROOM] [--for DUR]` bans a user, an address or a CIDR range.
    Ban(ban::BanArgs),
    /// Lift a ban: `TARGET [--room ROOM]`.
    Unban(ban::UnbanArgs),
    /// Show a room's settings; `--slow DUR` (or `off`) sets slow mode.
    Room(room::RoomArgs),
    /// Copy the SQLite database to a new file PATH, consistently, while the server runs.
    Backup(backup::BackupArgs),
}

/// What a command says on success (stdout), or its failure (stderr, exit status 1).
pub type Outcome = Result<String, String>;

/// Runs `command` and prints what it says.
pub async fn run(command: Command, config: &Config) -> ExitCode {
    match outcome(command, config).await {
        Ok(said) => {
            if !said.is_empty() {
                println!("{}", said.trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ssechat: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn outcome(command: Command, config: &Config) -> Outcome {
    let store = || open_store(config);
    match command {
        Command::User(command) => user::run(command, &*store().await?).await.map(|()| String::new()),
        Command::Token(command) => token::run(command, &*store().await?).await.map(|()| String::new()),
        Command::Access(args) => access::run(args, &*store().await?).await,
        Command::Ban(args) => ban::run(args, &*store().await?).await,
        Command::Unban(args) => ban::unban(args, &*store().await?).await,
        Command::Room(args) => room::run(args, &*store().await?).await,
        // A copy of the file, not of what the store serves: no store is opened.
        Command::Backup(args) => backup::run(args, &config.store).await,
    }
}

/// The configured store, shared with a server that may be running on it.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    match &config.store {
        StoreUrl::Memory => Err("the memory store lives inside the server process, where no command \
             can reach it: use the admin HTTP API (/admin/bans) of the running server, or run the \
             server with --store sqlite:PATH, redis://... or redis+cluster://..."
            .to_owned()),
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open_directory(path)?)),
        StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => {
            Ok(Arc::new(crate::state::open_redis(&config.store, Hub::new(1), config.retention()).await?))
        }
    }
}

pub use ban::until as ban_until;

/// A store error as a command says it.
fn failed(e: crate::store::StoreError) -> String {
    e.to_string()
}

/// A field error as a command says it.
fn invalid(e: crate::domain::FieldError) -> String {
    e.to_string()
}
