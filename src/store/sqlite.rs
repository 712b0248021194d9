//! The SQLite store: durable history in one file (WAL mode), the default.
//!
//! One writer thread owns the write connection and commits in groups: every append waiting
//! when a transaction starts joins it, so concurrent senders share one fsync. Only after
//! the commit does the writer publish the batch to the hub, in id order, and acknowledge
//! each sender; so an acknowledged message is on disk, and fan-out waits for nothing but
//! that commit. Reads use a small pool of their own connections, which WAL lets run
//! alongside the writer.
//!
//! Retention is applied twice: reads never show more than the retention allows (so it is
//! exact at once), and a background pass deletes the rows for real.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

mod accounts;
mod backup;

pub use backup::Copied;

use super::{Appended, Page, Range, Retention, RoomInfo, Store, StoreError};
use crate::domain::{
    Author, Entry, IdempotencyKey, Message, MessageId, MessageText, NewMessage, RoomName, TakeBack, Timestamp,
};
use crate::domain::{Session, Token, User};
use crate::hub::Hub;
use crate::wire::Event;

mod policy;

use super::turns::LocalTurns;
use crate::rules::{Ban, BanTarget, Directory, RoomPattern, RoomSettings, Rule, Subject};

/// Marks the file as ssechat's (`PRAGMA application_id`): "SSEC".
const APPLICATION_ID: i32 = 0x5353_4543;
/// The schema this build writes. Older files are migrated at start; newer ones refused.
pub const SCHEMA_VERSION: i32 = 6;
/// Appends that may share one transaction.
const MAX_BATCH: usize = 1024;
/// Appends waiting for the writer before senders wait too.
const QUEUE: usize = 4096;
/// Read connections at most.
const MAX_READERS: usize = 8;
/// Rows one pruning transaction deletes at most.
const PRUNE_CHUNK: u64 = 2000;
/// Rooms one pruning transaction looks at, at most.
const PRUNE_ROOMS: usize = 500;
/// How often old rows are deleted for real.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

const MIGRATIONS: [&str; 6] = [
    // 1: rooms keep their last id even when all their messages are pruned, so ids are never
    // reused; messages are clustered by (room, id) for range reads.
    "CREATE TABLE rooms (
         name TEXT PRIMARY KEY,
         last_id INTEGER NOT NULL,
         last_time INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE messages (
         room TEXT NOT NULL,
         id INTEGER NOT NULL,
         author TEXT NOT NULL,
         text TEXT NOT NULL,
         time INTEGER NOT NULL,
         PRIMARY KEY (room, id)
     ) WITHOUT ROWID;",
    // 2: idempotency keys, unique per room while their message is held.
    "ALTER TABLE messages ADD COLUMN key TEXT;
     CREATE UNIQUE INDEX messages_key ON messages (room, key) WHERE key IS NOT NULL;",
    // 3: rooms in activity order, so the room list reads `limit` rows, not the table.
    "CREATE INDEX rooms_activity ON rooms (last_time DESC, name);",
    // 4: accounts (`sqlite/accounts.rs`): users by the skeleton of their name, tokens and
    // sessions by the SHA-256 of their secret; messages say whether a signed-in user sent them.
    "ALTER TABLE messages ADD COLUMN user INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE users (
         skeleton TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         admin INTEGER NOT NULL,
         password TEXT NOT NULL,
         epoch INTEGER NOT NULL,
         created INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE tokens (
         hash TEXT PRIMARY KEY,
         owner TEXT NOT NULL,
         label TEXT NOT NULL,
         expires INTEGER,
         created INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX tokens_owner ON tokens (owner);
     CREATE TABLE sessions (
         hash TEXT PRIMARY KEY,
         owner TEXT NOT NULL,
         epoch INTEGER NOT NULL,
         expires INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 5: deletes and edits are rows of the log too (see `sqlite/takeback.rs`): `kind` 0 is a
    // message, 1 a delete, 2 an edit; `target` is the message they are about; an edit's
    // `time` is when it was made and `posted` the message's own time.
    "ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE messages ADD COLUMN target INTEGER;
     ALTER TABLE messages ADD COLUMN posted INTEGER;",
    // 6: access rules, bans, room settings and the directory generation (`sqlite/policy.rs`).
    policy::MIGRATION,
];

/// The columns `row_to_parts` reads, in its order.
macro_rules! entry_columns {
    () => {
        "id, author, text, time, kind, target, posted, user"
    };
}

mod takeback;

/// The room list: the newest rooms whose newest message is young enough, in the order of the
/// `rooms_activity` index, so SQLite reads `limit` rows whatever the number of rooms.
const ROOMS_BY_ACTIVITY: &str = "SELECT name, last_id, last_time FROM rooms WHERE last_time >= ?1
     ORDER BY last_time DESC, name LIMIT ?2";

/// The message stored under a key in a room, if its row is still there.
const BY_KEY: &str =
    concat!("SELECT ", entry_columns!(), " FROM messages WHERE room = ?1 AND key = ?2 AND kind = 0");

pub struct SqliteStore {
    writer: mpsc::Sender<Command>,
    /// For what is sent but not stored (typing).
    hub: Arc<Hub>,
    /// Idle read connections; a read takes one (or opens one) and gives it back.
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Bounds reads in flight, and so the connections (and page caches) they hold.
    read_slots: tokio::sync::Semaphore,
    path: PathBuf,
    retention: Retention,
    /// The test seam: when set, commits fail as on a full disk.
    fail_writes: Arc<AtomicBool>,
    /// The test seam: this many more commits that write rows fail as a failed fsync does.
    fail_syncs: Arc<AtomicU32>,
    /// Joined on drop, so the file is closed and unlocked when the store is gone.
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Slow-mode turns: SQLite serves one node, so they live in this process.
    turns: LocalTurns,
}

enum Command {
    Append(NewMessage, oneshot::Sender<Result<Appended, StoreError>>),
    /// A delete or an edit: checked and appended in a transaction of its own.
    TakeBack(TakeBack, oneshot::Sender<Result<Option<Entry>, StoreError>>),
    /// Prune rooms named after this one (`""`: from the first).
    Prune(String, oneshot::Sender<Result<Pruned, StoreError>>),
}

/// What one pruning transaction did.
struct Pruned {
    deleted: u64,
    /// Where the next transaction goes on, if anything is left to look at.
    next: Option<String>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, takes it for this process, and migrates
    /// it. Refuses a file that is in use, not SQLite, not ssechat's, or from a newer version.
    pub fn open(path: &Path, hub: Arc<Hub>, retention: Retention) -> Result<Self, String> {
        let shown = path.display();
        let lock = take_file(path).map_err(|e| format!("cannot open history database {shown}: {e}"))?;
        Self::open_locked_by(path, hub, retention, Some(lock))
    }

    /// Opens the database for the `ssechat user`/`token` commands, which only write account
    /// tables: without taking the file, so they work while a server holds it (WAL and the
    /// busy timeout order their writes against the server's). Creates and migrates the file
    /// like [`open`](Self::open) when no server ever did.
    pub fn open_directory(path: &Path) -> Result<Self, String> {
        Self::open_locked_by(path, Hub::new(1), Retention::count(1), None)
    }

    fn open_locked_by(
        path: &Path,
        hub: Arc<Hub>,
        retention: Retention,
        lock: Option<File>,
    ) -> Result<Self, String> {
        let shown = path.display();
        if lock.is_none() && !path.exists() {
            File::create(path).map_err(|e| format!("cannot create history database {shown}: {e}"))?;
        }
        let mut conn =
            connect(path).map_err(|e| format!("cannot open history database {shown}: {}", describe(e)))?;
        // Nothing is written before the file is known to be ours.
        check_identity(&conn).map_err(|e| format!("cannot use history database {shown}: {e}"))?;
        migrate(&mut conn).map_err(|e| format!("cannot use history database {shown}: {e}"))?;

        let (writer, commands) = mpsc::channel(QUEUE);
        let fail_writes = Arc::new(AtomicBool::new(false));
        let fail_syncs = Arc::new(AtomicU32::new(0));
        let mut thread = Writer {
            conn,
            hub: Arc::clone(&hub),
            retention,
            last_ids: HashMap::new(),
            fail_writes: Arc::clone(&fail_writes),
            fail_syncs: Arc::clone(&fail_syncs),
            _lock: lock,
        };
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || thread.run(commands))
            .map_err(|e| format!("cannot start the database writer: {e}"))?;

        let store = Self {
            writer,
            hub,
            readers: Arc::new(Mutex::new(Vec::new())),
            read_slots: tokio::sync::Semaphore::new(MAX_READERS),
            path: path.to_owned(),
            retention,
            fail_writes,
            fail_syncs,
            writer_thread: Some(writer_thread),
            turns: LocalTurns::default(),
        };
        Ok(store)
    }

    /// Deletes what retention no longer keeps; returns the rows deleted.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        prune_all(|| Some(self.writer.clone())).await
    }

    /// A test seam: while on, every commit fails the way it does on a full disk.
    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// A test seam: the next `commits` commits that write rows fail the way a commit whose
    /// fsync fails does (`SQLITE_IOERR_FSYNC`): the running database rolls them back, yet
    /// what reached the WAL file may be found there after a restart. (0: none.)
    pub fn fail_syncs(&self, commits: u32) {
        self.fail_syncs.store(commits, Ordering::SeqCst);
    }

    /// Prunes in the background every `PRUNE_EVERY` for as long as the store lives.
    pub fn start_pruning(&self) {
        let writer = self.writer.downgrade();
        let first = tokio::time::Instant::now() + PRUNE_EVERY;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, PRUNE_EVERY);
            loop {
                tick.tick().await;
                match prune_all(|| writer.upgrade()).await {
                    Ok(_) => {}
                    // The store is gone when the writer's last sender is.
                    Err(_) if writer.upgrade().is_none() => return,
                    Err(e) => tracing::warn!(error = %e, "pruning old messages failed; will retry"),
                }
            }
        });
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.writer.send(command).await.map_err(|_| writer_gone())
    }

    /// Runs `f` on a read connection, off the async threads.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _slot = self.read_slots.acquire().await.expect("the semaphore is never closed");
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().expect("reader pool poisoned").pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => connect(&path).map_err(unavailable)?,
            };
            let result = f(&mut conn).map_err(unavailable);
            readers.lock().expect("reader pool poisoned").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after what it already took; then the file's
        // lock goes with it.
        drop(std::mem::replace(&mut self.writer, mpsc::channel(1).0));
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Prunes in chunks until every room was looked at. Each chunk is its own small transaction
/// (at most `PRUNE_ROOMS` rooms and `PRUNE_CHUNK` rows), so appends queued meanwhile are
/// committed in between, not after, however many rooms there are.
///
/// The writer's queue is only borrowed for each (non-blocking) send and never held across
/// an await, so a store being dropped is never kept alive by its pruner.
async fn prune_all(writer: impl Fn() -> Option<mpsc::Sender<Command>>) -> Result<u64, StoreError> {
    let (mut total, mut after) = (0, String::new());
    loop {
        let (reply, answer) = oneshot::channel();
        let queue = writer().ok_or_else(writer_gone)?;
        queue
            .try_send(Command::Prune(after, reply))
            .map_err(|_| unavailable("the database writer is busy"))?;
        drop(queue);
        let pruned = answer.await.map_err(|_| writer_gone())??;
        total += pruned.deleted;
        match pruned.next {
            Some(next) => after = next,
            None => return Ok(total),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, new: NewMessage) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        // Not queued: certainly not stored. Queued but never answered: the writer stopped
        // while writing, before or after the commit.
        self.send(Command::Append(new, reply)).await?;
        answer
            .await
            .map_err(|_| StoreError::Unknown("the database writer stopped while writing".to_owned()))?
    }

    async fn take_back(&self, change: TakeBack) -> Result<Option<Entry>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::TakeBack(change, reply)).await?;
        answer
            .await
            .map_err(|_| StoreError::Unknown("the database writer stopped while writing".to_owned()))?
    }

    async fn find(&self, room: &RoomName, key: &IdempotencyKey) -> Result<Option<Message>, StoreError> {
        let (room, key) = (room.clone(), key.as_str().to_owned());
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(BY_KEY)?;
            let parts = stmt.query_row(params![room.as_str(), key], row_to_parts).optional()?;
            parts.map(|p| p.into_message(&room)).transpose()
        })
        .await
    }

    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError> {
        let room = room.clone();
        let retention = self.retention;
        self.with_reader(move |conn| {
            let tx = conn.transaction()?;
            let last_id = last_id(&tx, room.as_str())?;
            let first_held = first_held(&tx, room.as_str(), last_id, retention)?;
            let entries = match range {
                Range::After(after) => {
                    let mut stmt = tx.prepare_cached(concat!(
                        "SELECT ",
                        entry_columns!(),
                        " FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                    ))?;
                    let from = after.max(first_held.saturating_sub(1));
                    stmt.query_map(params![room.as_str(), from, limit as i64], row_to_parts)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
                Range::Latest => {
                    let mut stmt = tx.prepare_cached(concat!(
                        "SELECT ",
                        entry_columns!(),
                        " FROM messages WHERE room = ?1 AND id >= ?2 ORDER BY id DESC LIMIT ?3"
                    ))?;
                    let mut newest = stmt
                        .query_map(params![room.as_str(), first_held, limit as i64], row_to_parts)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    newest.reverse();
                    newest
                }
            }
            .into_iter()
            .map(|parts| parts.into_entry(&room))
            .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page { entries, first_held, last_id })
        })
        .await
    }

    async fn typing(&self, room: &RoomName, author: &Author) -> Result<(), StoreError> {
        self.hub.broadcast(room, Event::Typing { author: author.clone() });
        Ok(())
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        self.with_reader(|conn| policy::generation(conn)).await
    }

    async fn directory(&self) -> Result<Directory, StoreError> {
        self.with_reader(policy::directory).await
    }

    async fn set_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        let rule = rule.clone();
        self.with_reader(move |conn| policy::write(conn, |tx| policy::set_rule(tx, &rule))).await
    }

    async fn reset_rules(&self, subject: &Subject, pattern: Option<&RoomPattern>) -> Result<u64, StoreError> {
        let (subject, pattern) = (subject.clone(), pattern.cloned());
        self.with_reader(move |conn| {
            policy::write(conn, |tx| policy::reset_rules(tx, &subject, pattern.as_ref()))
        })
        .await
    }

    async fn add_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        let ban = ban.clone();
        self.with_reader(move |conn| policy::write(conn, |tx| policy::add_ban(tx, &ban))).await
    }

    async fn remove_ban(&self, target: &BanTarget, room: Option<&RoomName>) -> Result<u64, StoreError> {
        let (target, room) = (target.clone(), room.cloned());
        self.with_reader(move |conn| policy::write(conn, |tx| policy::remove_ban(tx, &target, room.as_ref())))
            .await
    }

    async fn set_room(&self, room: &RoomName, settings: RoomSettings) -> Result<(), StoreError> {
        let room = room.clone();
        self.with_reader(move |conn| policy::write(conn, |tx| policy::set_room(tx, &room, settings))).await
    }

    async fn slow_turn(
        &self,
        room: &RoomName,
        sender: &str,
        every: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        Ok(self.turns.take(room, sender, every))
    }

    async fn rooms(&self, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        let retention = self.retention;
        self.with_reader(move |conn| {
            let tx = conn.transaction()?;
            // A room whose newest message expired holds nothing: the index skips it too.
            let cutoff = retention.cutoff().map_or(i64::MIN, |t| t.millis());
            let newest: Vec<(String, u64, i64)> = tx
                .prepare_cached(ROOMS_BY_ACTIVITY)?
                .query_map(params![cutoff, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut rooms = Vec::with_capacity(newest.len());
            for (name, last_id, last_time) in newest {
                let first_held = first_held(&tx, &name, last_id, retention)?;
                if first_held > last_id {
                    continue; // expired since the cutoff above was taken
                }
                rooms.push(RoomInfo {
                    name: RoomName::parse(&name).map_err(corrupt)?,
                    messages: last_id - first_held + 1,
                    last_activity: Timestamp::from_millis(last_time).ok_or_else(|| corrupt("bad time"))?,
                });
            }
            Ok(rooms)
        })
        .await
    }

    async fn prune(&self) -> Result<u64, StoreError> {
        SqliteStore::prune(self).await
    }

    // Accounts (`sqlite/accounts.rs`).

    async fn add_user(&self, user: &User) -> Result<Option<Author>, StoreError> {
        let user = user.clone();
        self.with_reader(move |conn| accounts::add_user(conn, &user)).await
    }
    async fn user(&self, skeleton: &str) -> Result<Option<User>, StoreError> {
        let skeleton = skeleton.to_owned();
        self.with_reader(move |conn| accounts::user(conn, &skeleton)).await
    }
    async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.with_reader(|conn| accounts::users(conn)).await
    }
    async fn set_password(&self, name: &Author, hash: &str, epoch: u64) -> Result<bool, StoreError> {
        let (name, hash) = (name.clone(), hash.to_owned());
        self.with_reader(move |conn| accounts::set_password(conn, &name, &hash, epoch)).await
    }
    async fn delete_user(&self, name: &Author) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with_reader(move |conn| accounts::delete_user(conn, &name)).await
    }
    async fn add_token(&self, token: &Token) -> Result<(), StoreError> {
        let token = token.clone();
        self.with_reader(move |conn| accounts::add_token(conn, &token)).await
    }
    async fn token(&self, hash: &str) -> Result<Option<Token>, StoreError> {
        let hash = hash.to_owned();
        self.with_reader(move |conn| accounts::token(conn, &hash)).await
    }
    async fn tokens(&self, owner: &Author) -> Result<Vec<Token>, StoreError> {
        let owner = owner.clone();
        self.with_reader(move |conn| accounts::tokens(conn, &owner)).await
    }
    async fn delete_token(&self, hash: &str) -> Result<bool, StoreError> {
        let hash = hash.to_owned();
        self.with_reader(move |conn| accounts::delete_token(conn, &hash)).await
    }
    async fn add_session(&self, session: &Session) -> Result<(), StoreError> {
        let session = session.clone();
        self.with_reader(move |conn| accounts::add_session(conn, &session)).await
    }
    async fn session(&self, hash: &str) -> Result<Option<Session>, StoreError> {
        let hash = hash.to_owned();
        self.with_reader(move |conn| accounts::session(conn, &hash)).await
    }
    async fn extend_session(&self, hash: &str, expires: Timestamp) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        self.with_reader(move |conn| accounts::extend_session(conn, &hash, expires)).await
    }
    async fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        self.with_reader(move |conn| accounts::delete_session(conn, &hash)).await
    }
}

/// The newest id given in `room` (0 if none).
fn last_id(conn: &Connection, room: &str) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached("SELECT last_id FROM rooms WHERE name = ?1")?;
    Ok(stmt.query_row([room], |r| r.get(0)).optional()?.unwrap_or(0))
}

/// The oldest id retention still shows in `room`, or `last_id + 1` if none.
///
/// Ids are dense per room, so retention by count is "the last N ids"; retention by age
/// starts at the first message young enough.
fn first_held(conn: &Connection, room: &str, last_id: u64, retention: Retention) -> rusqlite::Result<u64> {
    let floor = last_id.saturating_sub(retention.count as u64);
    let cutoff = retention.cutoff().map_or(i64::MIN, |t| t.millis());
    let mut stmt =
        conn.prepare_cached("SELECT MIN(id) FROM messages WHERE room = ?1 AND id > ?2 AND time >= ?3")?;
    let first: Option<u64> = stmt.query_row(params![room, floor, cutoff], |r| r.get(0))?;
    Ok(first.unwrap_or(last_id + 1))
}

/// A row of the log, as read (the columns of `entry_columns!`).
struct Parts {
    id: u64,
    author: String,
    text: String,
    time: i64,
    kind: i64,
    target: Option<u64>,
    posted: Option<i64>,
    user: bool,
}

fn row_to_parts(row: &rusqlite::Row<'_>) -> rusqlite::Result<Parts> {
    Ok(Parts {
        id: row.get(0)?,
        author: row.get(1)?,
        text: row.get(2)?,
        time: row.get(3)?,
        kind: row.get(4)?,
        target: row.get(5)?,
        posted: row.get(6)?,
        user: row.get(7)?,
    })
}

fn read_time(ms: i64) -> rusqlite::Result<Timestamp> {
    Timestamp::from_millis(ms).ok_or_else(|| corrupt("bad time"))
}

impl Parts {
    /// Validates what was read back, so a damaged row is an error, never a bad message.
    fn into_message(self, room: &RoomName) -> rusqlite::Result<Message> {
        Ok(Message {
            id: self.id,
            room: room.clone(),
            author: Author::read_back(&self.author).map_err(corrupt)?,
            text: MessageText::read_back(&self.text).map_err(corrupt)?,
            time: read_time(self.time)?,
            edited: None,
            user: self.user,
        })
    }
}

/// Owns the write connection; lives on its own thread.
struct Writer {
    conn: Connection,
    hub: Arc<Hub>,
    retention: Retention,
    /// Each room's newest id, as committed. Dropped for a room when a commit fails.
    last_ids: HashMap<RoomName, MessageId>,
    fail_writes: Arc<AtomicBool>,
    fail_syncs: Arc<AtomicU32>,
    /// Held for the writer's life: the lock that keeps a second ssechat off this file (none
    /// for the account commands, which share the file with a running server).
    _lock: Option<File>,
}

impl Writer {
    fn run(&mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            let mut appends = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(new, reply) => appends.push((new, reply)),
                    Command::Prune(after, reply) => {
                        let _ = reply.send(self.prune(&after).map_err(unavailable));
                    }
                    Command::TakeBack(change, reply) => {
                        let _ = reply.send(self.commit_take_back(&change));
                    }
                }
                if appends.len() < MAX_BATCH {
                    next = commands.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit(appends);
            }
        }
    }

    /// Stores a batch in one transaction, then publishes and acknowledges it.
    fn commit(&mut self, appends: Vec<(NewMessage, oneshot::Sender<Result<Appended, StoreError>>)>) {
        let (news, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        match self.write(news) {
            Ok(results) => {
                for (appended, reply) in results.into_iter().zip(replies) {
                    if !appended.replayed {
                        self.hub.publish(&Entry::Message(appended.message.clone()));
                    }
                    let _ = reply.send(Ok(appended));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "writing messages failed; nothing in the batch was acknowledged");
                self.last_ids.clear();
                let e = e.into_store_error();
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn write(&mut self, news: Vec<NewMessage>) -> Result<Vec<Appended>, WriteError> {
        let tx = self.conn.transaction()?;
        let mut messages: Vec<Appended> = Vec::with_capacity(news.len());
        let mut next_ids: HashMap<RoomName, MessageId> = HashMap::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (room, id, author, text, time, key, user) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut keyed = tx.prepare_cached(BY_KEY)?;
            let mut last_of = tx.prepare_cached("SELECT last_id FROM rooms WHERE name = ?1")?;
            let mut touch = tx.prepare_cached(
                "INSERT INTO rooms (name, last_id, last_time) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id, last_time = excluded.last_time",
            )?;
            for new in news {
                if let Some(key) = &new.key {
                    let prior =
                        keyed.query_row(params![new.room.as_str(), key.as_str()], row_to_parts).optional()?;
                    if let Some(prior) = prior {
                        messages.push(Appended { message: prior.into_message(&new.room)?, replayed: true });
                        continue;
                    }
                }
                let key = new.key.as_ref().map(|k| k.as_str().to_owned());
                let last = match next_ids.get(&new.room).or_else(|| self.last_ids.get(&new.room)) {
                    Some(&id) => id,
                    None => last_of.query_row([new.room.as_str()], |r| r.get(0)).optional()?.unwrap_or(0),
                };
                let message = Message::new(last + 1, new, Timestamp::now());
                insert.execute(params![
                    message.room.as_str(),
                    message.id,
                    message.author.as_str(),
                    message.text.as_str(),
                    message.time.millis(),
                    key,
                    message.user
                ])?;
                next_ids.insert(message.room.clone(), message.id);
                messages.push(Appended { message, replayed: false });
            }
            // One row per room per batch: the newest message decides.
            for Appended { message, .. } in messages.iter().rev() {
                if next_ids.get(&message.room) == Some(&message.id) {
                    touch.execute(params![message.room.as_str(), message.id, message.time.millis()])?;
                }
            }
        }
        if self.fail_writes.load(Ordering::SeqCst) {
            // The test seam: fail where a full disk does, with the rows written but not
            // committed, so the rollback path is the real one.
            return Err(injected(rusqlite::ffi::SQLITE_FULL, "database or disk is full").into());
        }
        let wrote = messages.iter().any(|a| !a.replayed);
        let seam = wrote
            && self.fail_syncs.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if seam {
            // The test seam: the commit's fsync fails; the dropped transaction rolls back.
            return Err(WriteError::Commit(injected(rusqlite::ffi::SQLITE_IOERR_FSYNC, "disk I/O error")));
        }
        tx.commit().map_err(WriteError::Commit)?;
        self.last_ids.extend(next_ids);
        Ok(messages)
    }

    /// Deletes up to `PRUNE_CHUNK` rows that retention no longer shows, oldest first, in
    /// up to `PRUNE_ROOMS` rooms named after `after`.
    fn prune(&mut self, after: &str) -> rusqlite::Result<Pruned> {
        let tx = self.conn.transaction()?;
        let mut deleted = 0;
        let mut next = None;
        {
            let rooms: Vec<(String, u64)> = tx
                .prepare_cached("SELECT name, last_id FROM rooms WHERE name > ?1 ORDER BY name LIMIT ?2")?
                .query_map(params![after, PRUNE_ROOMS as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            if rooms.len() == PRUNE_ROOMS {
                next = rooms.last().map(|(name, _)| name.clone());
            }
            let mut done = after.to_owned();
            let cutoff = self.retention.cutoff().map_or(i64::MIN, |t| t.millis());
            let mut oldest = tx.prepare_cached("SELECT MIN(id) FROM messages WHERE room = ?1")?;
            let mut young =
                tx.prepare_cached("SELECT MIN(id) FROM messages WHERE room = ?1 AND time >= ?2")?;
            let mut delete = tx.prepare_cached("DELETE FROM messages WHERE room = ?1 AND id <= ?2")?;
            for (room, last_id) in rooms {
                let Some(first) = oldest.query_row([&room], |r| r.get::<_, Option<u64>>(0))? else {
                    done = room;
                    continue;
                };
                let by_count = last_id.saturating_sub(self.retention.count as u64);
                let first_young: Option<u64> = young.query_row(params![room, cutoff], |r| r.get(0))?;
                let by_age = first_young.map_or(last_id, |id| id - 1);
                let room_limit = first.saturating_sub(1) + (PRUNE_CHUNK - deleted);
                deleted += delete.execute(params![room, by_count.max(by_age).min(room_limit)])? as u64;
                if deleted >= PRUNE_CHUNK {
                    // This room may hold more: the next transaction starts with it.
                    next = Some(done);
                    break;
                }
                done = room;
            }
        }
        tx.commit()?;
        Ok(Pruned { deleted, next })
    }
}

/// Why a batch was not stored, and so what its senders may be told.
#[derive(Debug)]
enum WriteError {
    /// Before the commit: the transaction rolled back, nothing was stored.
    Staging(rusqlite::Error),
    /// The commit itself failed.
    Commit(rusqlite::Error),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Staging(e)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Staging(e) => write!(f, "{e}"),
            Self::Commit(e) => write!(f, "commit failed: {e}"),
        }
    }
}

impl WriteError {
    /// A failed commit is certain only when SQLite refused it before writing the commit
    /// record (a full disk, a lock). An I/O error, such as a failed fsync, may come after the
    /// commit record reached the WAL file: the running database rolls the transaction back,
    /// but a restart may find it there, durable. So that is an unknown outcome: a retry under
    /// the same key stores it once (its frames take the place of the doubtful ones) or, after
    /// a restart that kept them, finds it.
    fn into_store_error(self) -> StoreError {
        match self {
            Self::Staging(e) => unavailable(e),
            Self::Commit(e) => match e.sqlite_error_code() {
                Some(ErrorCode::DiskFull | ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    unavailable(format!("commit failed: {e}"))
                }
                _ => StoreError::Unknown(format!("commit failed: {e}")),
            },
        }
    }
}

/// An SQLite failure made up by a test seam, as SQLite reports the real one.
fn injected(code: std::ffi::c_int, what: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(format!("{what} (injected)")))
}

/// Creates the file if needed and locks it for this process, so a second ssechat can't
/// write the same history. The lock lives as long as the returned `File`.
fn take_file(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| e.to_string())?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err("it is in use by another running ssechat (the file is locked)".to_owned())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock it: {e}")),
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Refuses a file that is not SQLite, belongs to another application, or comes from a
/// newer ssechat. Reads only.
fn check_identity(conn: &Connection) -> Result<(), String> {
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(describe)?;
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(describe)?;
    let tables: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(describe)?;
    if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
        return Err("it is a SQLite database of another application (left untouched)".to_owned());
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "it was written by a newer ssechat (schema version {version}; this build knows up to {SCHEMA_VERSION})"
        ));
    }
    Ok(())
}

/// Turns on WAL and brings the schema up to date, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    conn.pragma_update(None, "journal_mode", "WAL").map_err(describe)?;
    // FULL: a commit is on disk before the writer acknowledges it, even across power loss.
    conn.pragma_update(None, "synchronous", "FULL").map_err(describe)?;
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(describe)?;
    let tx = conn.transaction().map_err(describe)?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(migration)
            .map_err(|e| format!("migration to schema version {} failed: {e}", i + 1))?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(describe)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(describe)?;
    tx.commit().map_err(describe)
}

/// An SQLite error in words a person starting the server can act on.
fn describe(e: rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => "it is not a SQLite database (left untouched)".to_owned(),
        _ => e.to_string(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".to_owned())
}

fn corrupt(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("damaged row in the history database: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        super::super::contract::run_all(|hub, retention| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let path = dir.path().join(format!("contract-{n}.db"));
            async move { Arc::new(SqliteStore::open(&path, hub, retention).unwrap()) as Arc<dyn Store> }
        })
        .await;
    }

    #[tokio::test]
    async fn pruning_goes_in_chunks_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prune.db");
        let store = Arc::new(SqliteStore::open(&path, Hub::new(4), Retention::count(5)).unwrap());
        let appends: Vec<_> = (0..4500)
            .map(|i| {
                let store = Arc::clone(&store);
                let room = if i % 2 == 0 { "a" } else { "b" };
                let new = NewMessage::parse(room, Some("ana"), Some("x")).unwrap();
                tokio::spawn(async move { store.append(new).await.unwrap() })
            })
            .collect();
        for append in appends {
            append.await.unwrap();
        }
        assert_eq!(store.prune().await.unwrap(), 4490);
        let conn = Connection::open(&path).unwrap();
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 10);
        let page = store.read(&RoomName::parse("a").unwrap(), Range::After(0), 100).await.unwrap();
        let ids: Vec<u64> = page.entries.iter().map(Entry::id).collect();
        assert_eq!(ids, vec![2246, 2247, 2248, 2249, 2250]);
    }

    #[tokio::test]
    async fn the_background_pruner_deletes_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("background.db");
        let store = SqliteStore::open(&path, Hub::new(4), Retention::count(2)).unwrap();
        for i in 0..10 {
            store.append(NewMessage::parse("a", Some("ana"), Some(&format!("m{i}"))).unwrap()).await.unwrap();
        }
        tokio::time::pause();
        store.start_pruning();
        tokio::time::advance(PRUNE_EVERY + Duration::from_secs(1)).await;
        // The pruner works on the writer thread, in real time: wait for it, with a bound.
        let rows = tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&path).unwrap();
            for _ in 0..1000 {
                let rows: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap();
                if rows == 2 {
                    return rows;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            -1
        })
        .await
        .unwrap();
        assert_eq!(rows, 2);
    }

    /// A history file as an older ssechat left it: schema `version`, no rows.
    fn file_of_version(path: &Path, version: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        for migration in &MIGRATIONS[..version] {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        conn.pragma_update(None, "user_version", version as i32).unwrap();
        conn
    }

    /// What SQLite plans for the room list: one line per step.
    fn plan_of_the_room_list(path: &Path) -> String {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {ROOMS_BY_ACTIVITY}")).unwrap();
        let steps = stmt.query_map(params![0, 20], |r| r.get::<_, String>(3)).unwrap();
        steps.collect::<rusqlite::Result<Vec<_>>>().unwrap().join("\n")
    }

    #[tokio::test]
    async fn the_room_list_reads_the_activity_index_not_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.db");
        let _store = SqliteStore::open(&path, Hub::new(4), Retention::count(5)).unwrap();
        let plan = plan_of_the_room_list(&path);
        assert!(plan.contains("USING INDEX rooms_activity"), "{plan}");
        assert!(
            !plan.contains("TEMP B-TREE") && !plan.starts_with("SCAN rooms\n"),
            "no sort, no scan: {plan}"
        );
    }

    #[tokio::test]
    async fn a_version_2_file_gains_the_activity_index_and_lists_its_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let conn = file_of_version(&path, 2);
            conn.execute_batch(
                "INSERT INTO rooms VALUES ('older', 1, 1764072062345), ('newer', 2, 1764072062999);
                 INSERT INTO messages VALUES ('older', 1, 'ana', 'a', 1764072062345, NULL),
                     ('newer', 1, 'ana', 'b', 1764072062000, NULL), ('newer', 2, 'ana', 'c', 1764072062999, 'k');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Hub::new(4), Retention::count(100)).unwrap();
        let rooms = store.rooms(10).await.unwrap();
        let summary: Vec<(&str, u64)> = rooms.iter().map(|r| (r.name.as_str(), r.messages)).collect();
        assert_eq!(summary, [("newer", 2), ("older", 1)]);
        let version: i32 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(plan_of_the_room_list(&path).contains("USING INDEX rooms_activity"));
    }

    #[tokio::test]
    async fn a_version_1_file_is_migrated_and_keeps_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = file_of_version(&path, 1);
            conn.execute_batch(
                "INSERT INTO rooms VALUES ('general', 1, 1764072062345);
                 INSERT INTO messages VALUES ('general', 1, 'ana', 'from v1', 1764072062345);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Hub::new(4), Retention::count(100)).unwrap();
        let page = store.read(&RoomName::general(), Range::After(0), 10).await.unwrap();
        let messages = page.current();
        assert_eq!(messages[0].text.as_str(), "from v1");
        assert!(!messages[0].user, "messages from before accounts were guests'");
        let key = Some(crate::domain::IdempotencyKey::parse("key", "k").unwrap());
        let new = NewMessage::parse("general", Some("ana"), Some("v2")).unwrap().with_key(key);
        assert_eq!(store.submit(new).await.unwrap().message.id, 2);
        let version: i32 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// A file from before deletes and edits: its messages read back as messages, and can be
    /// deleted and edited like new ones.
    #[tokio::test]
    async fn a_version_3_file_gains_deletes_and_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let conn = file_of_version(&path, 3);
            conn.execute_batch(
                "INSERT INTO rooms VALUES ('general', 2, 1764072062345);
                 INSERT INTO messages VALUES ('general', 1, 'ana', 'one', 1764072062000, NULL),
                     ('general', 2, 'ana', 'two', 1764072062345, 'k');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Hub::new(4), Retention::count(100)).unwrap();
        let change = |target, change| TakeBack { room: RoomName::general(), target, change };
        store.take_back(change(1, crate::domain::Change::Delete)).await.unwrap().unwrap();
        let text = MessageText::parse("two!").unwrap();
        let edited = store.take_back(change(2, crate::domain::Change::Edit(text))).await.unwrap().unwrap();
        assert_eq!(edited.id(), 4);
        let page = store.read(&RoomName::general(), Range::Latest, 10).await.unwrap();
        assert_eq!(page.entries.len(), 4);
        let now = page.current();
        assert_eq!(now.len(), 1);
        assert_eq!((now[0].id, now[0].text.as_str(), now[0].time.millis()), (2, "two!", 1764072062345));
        let version: i32 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// Names and texts stored before the Unicode rules still read back (what they hid shown
    /// as U+FFFD), rather than making the room's history unreadable.
    #[tokio::test]
    async fn rows_stored_under_older_rules_read_back_showing_what_they_hid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = file_of_version(&path, 2);
            conn.execute_batch(
                "INSERT INTO rooms VALUES ('general', 1, 1764072062345);
                 INSERT INTO messages VALUES ('general', 1, char(0x202E) || 'nimda', 'hi' || char(0x202E), 1764072062345, NULL);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Hub::new(4), Retention::count(100)).unwrap();
        let page = store.read(&RoomName::general(), Range::After(0), 10).await.unwrap();
        let messages = page.current();
        assert_eq!(messages[0].author.as_str(), "\u{FFFD}nimda");
        assert_eq!(messages[0].text.as_str(), "hi\u{FFFD}");
    }
}
