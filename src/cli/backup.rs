//! `ssechat backup PATH`: a consistent copy of the SQLite database, while the server runs.

use std::path::PathBuf;

use super::Outcome;
use crate::config::StoreUrl;
use crate::limits::count;
use crate::store::SqliteStore;

#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// The new file to write; an existing file is never overwritten.
    path: PathBuf,
}

pub async fn run(args: BackupArgs, store: &StoreUrl) -> Outcome {
    let source = match store {
        StoreUrl::Sqlite(source) => source.clone(),
        StoreUrl::Memory => return Err(MEMORY.to_owned()),
        StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => return Err(REDIS.to_owned()),
    };
    let target = args.path;
    let shown = target.display().to_string();
    let copied = tokio::task::spawn_blocking(move || SqliteStore::backup(&source, &target))
        .await
        .map_err(|e| format!("the backup failed: {e}"))??;
    Ok(format!(
        "wrote {shown}: {} bytes, {} in {}, {}",
        copied.bytes,
        count(copied.messages as usize, "message"),
        count(copied.rooms as usize, "room"),
        count(copied.users as usize, "user")
    ))
}

/// `1 room`, `2 rooms`.
const MEMORY: &str = "the memory store keeps nothing to back up: it lives and dies with the server \
     process; run the server with --store sqlite:PATH to keep history";

const REDIS: &str = "ssechat backup copies SQLite stores only: back up Redis with its own \
     persistence (BGSAVE, then copy dump.rdb; or copy the append-only file), see \
     https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/";
