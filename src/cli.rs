//! The command line: without a subcommand, `ssechat` runs the server ([`Config`]'s flags);
//! with one, it manages what the server keeps in its store, while the server runs.
//!
//! Each command group has its own file in `cli/`. Commands open the store the server's flags
//! name (`--store`, `SSECHAT_STORE`), so a server started with the same environment sees
//! every change at once; with SQLite they leave the server's lock on the file alone.

mod token;
mod user;

use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, StoreUrl};
use crate::store::{RedisStore, SqliteStore, Store};

/// ssechat: a real-time chat server over plain HTTP and Server-Sent Events.
#[derive(Debug, Parser)]
#[command(name = "ssechat", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, delete and list users, and change their passwords.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Give users API tokens (for `Authorization: Bearer`), list and delete them.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Runs `command` against the store `config` names; the error is what to tell the user.
pub async fn run(command: Command, config: &Config) -> Result<(), String> {
    let store = open_store(&config.store).await?;
    match command {
        Command::User(command) => user::run(command, &*store).await,
        Command::Token(command) => token::run(command, &*store).await,
    }
}

/// The store, opened beside a running server: SQLite without taking the file, Redis as one
/// more client. The memory store lives inside the server's process: no command can reach it.
async fn open_store(url: &StoreUrl) -> Result<Arc<dyn Store>, String> {
    match url {
        StoreUrl::Memory => Err("--store memory lives inside the running server's process, where no \
             command can reach it: run the server with --store sqlite:PATH or --store redis://... \
             to manage accounts"
            .to_owned()),
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open_directory(path)?)),
        StoreUrl::Redis(url) => {
            let hub = crate::hub::Hub::new(1);
            Ok(Arc::new(RedisStore::open(url, hub, crate::store::Retention::count(1)).await?))
        }
    }
}
