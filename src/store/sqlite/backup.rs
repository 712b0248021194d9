//! `ssechat backup PATH`: a consistent copy of the database while a server writes to it.
//!
//! It uses `VACUUM INTO`, not the online backup API. In WAL mode `VACUUM INTO` reads in one
//! transaction, a snapshot that the server's writer never waits for, so the copy is
//! consistent and the server is not blocked at all. The backup API, stepped in pages, starts
//! over whenever another connection writes between two steps: under steady posting it may
//! never finish. `VACUUM INTO` also writes a compact file (no free pages) and needs no extra
//! crate feature. The cost: while it reads, checkpoints cannot pass its snapshot, so the WAL
//! file keeps all that is written meanwhile, until the copy ends.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rusqlite::Connection;

use super::{SqliteStore, check_identity, connect, describe};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub messages: u64,
    pub rooms: u64,
    pub users: u64,
}

impl SqliteStore {
    /// Copies the database at `source` into a new file `target`, consistently, beside a
    /// server that may be writing to it. Never overwrites: an existing `target` is refused,
    /// and so is a missing directory or a `source` that is not ssechat's.
    pub fn backup(source: &Path, target: &Path) -> Result<Copied, String> {
        let conn = open_source(source)?;
        let file = create_target(target)?;
        let copied = copy_into(&conn, target, file);
        if copied.is_err() {
            // Only the empty or partial file this backup created itself.
            let _ = std::fs::remove_file(target);
        }
        copied.map_err(|e| format!("cannot back up to {}: {e}", target.display()))
    }
}

/// The server's database, opened without creating it.
fn open_source(source: &Path) -> Result<Connection, String> {
    let shown = source.display();
    if !source.is_file() {
        return Err(format!(
            "there is no history database at {shown}: name the server's store with --store sqlite:PATH \
             (or SSECHAT_STORE)"
        ));
    }
    let conn =
        connect(source).map_err(|e| format!("cannot open history database {shown}: {}", describe(e)))?;
    check_identity(&conn).map_err(|e| format!("cannot back up {shown}: {e}"))?;
    Ok(conn)
}

/// Creates `target`, atomically refusing one that exists (`VACUUM INTO` fills an empty file).
fn create_target(target: &Path) -> Result<File, String> {
    let shown = target.display();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!("cannot back up to {shown}: the directory {} does not exist", parent.display()));
    }
    OpenOptions::new().write(true).create_new(true).open(target).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{shown} already exists: a backup never overwrites a file; name a new one")
        }
        _ => format!("cannot create {shown}: {e}"),
    })
}

/// Fills `target` from `conn`, makes it durable, and says what it holds.
fn copy_into(conn: &Connection, target: &Path, file: File) -> Result<Copied, String> {
    let into = target.to_str().ok_or("the path is not valid UTF-8")?;
    conn.execute("VACUUM INTO ?1", [into]).map_err(describe)?;
    // VACUUM INTO does not sync what it wrote.
    file.sync_all().map_err(|e| e.to_string())?;
    let bytes = file.metadata().map_err(|e| e.to_string())?.len();
    let copy = Connection::open(target).map_err(describe)?;
    let count = |sql: &str| copy.query_row(sql, [], |r| r.get::<_, u64>(0)).map_err(describe);
    Ok(Copied {
        bytes,
        messages: count("SELECT COUNT(*) FROM messages WHERE kind = 0")?,
        rooms: count("SELECT COUNT(*) FROM rooms")?,
        users: count("SELECT COUNT(*) FROM users")?,
    })
}
