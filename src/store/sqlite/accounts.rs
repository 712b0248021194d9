//! The SQLite store's accounts: the `users`, `tokens` and `sessions` tables (migration 4).
//!
//! They are written from the read pool's connections, not by the message writer: WAL and the
//! busy timeout order those writes against the writer's, and `ssechat user ...` run beside a
//! server does the same from its own process (see [`super::SqliteStore::open_directory`]).

use rusqlite::{Connection, OptionalExtension, params};

use super::corrupt;
use crate::domain::{Author, Timestamp};
use crate::domain::{Session, Token, User, skeleton};

fn author(s: String) -> rusqlite::Result<Author> {
    Author::read_back(&s).map_err(corrupt)
}

fn time(ms: i64) -> rusqlite::Result<Timestamp> {
    Timestamp::from_millis(ms).ok_or_else(|| corrupt("bad time"))
}

const USER_COLUMNS: &str = "SELECT name, admin, password, epoch, created FROM users";

fn row_to_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: author(row.get(0)?)?,
        admin: row.get(1)?,
        password: row.get(2)?,
        epoch: row.get::<_, i64>(3)? as u64,
        created: time(row.get(4)?)?,
    })
}

/// Adds `user` unless the skeleton is taken; the directory generation moves with it, so
/// every node's snapshot of registered names (what guests may not use) follows.
pub(super) fn add_user(conn: &mut Connection, user: &User) -> rusqlite::Result<Option<Author>> {
    let key = skeleton(user.name.as_str());
    let tx = conn.transaction()?;
    let added = tx.execute(
        "INSERT INTO users (skeleton, name, admin, password, epoch, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (skeleton) DO NOTHING",
        params![key, user.name.as_str(), user.admin, user.password, user.epoch as i64, user.created.millis()],
    )?;
    if added == 1 {
        super::policy::bump_generation(&tx)?;
        tx.commit()?;
        return Ok(None);
    }
    tx.query_row("SELECT name FROM users WHERE skeleton = ?1", [key], |r| author(r.get(0)?)).map(Some)
}

pub(super) fn user(conn: &Connection, skeleton: &str) -> rusqlite::Result<Option<User>> {
    let mut stmt = conn.prepare_cached(&format!("{USER_COLUMNS} WHERE skeleton = ?1"))?;
    stmt.query_row([skeleton], row_to_user).optional()
}

pub(super) fn users(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt = conn.prepare_cached(&format!("{USER_COLUMNS} ORDER BY name"))?;
    stmt.query_map([], row_to_user)?.collect()
}

/// Changes the password and the epoch; open streams of the user's old epoch end (the
/// directory generation moves in the same transaction).
pub(super) fn set_password(
    conn: &mut Connection,
    name: &Author,
    hash: &str,
    epoch: u64,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE users SET password = ?2, epoch = ?3 WHERE skeleton = ?1",
        params![skeleton(name.as_str()), hash, epoch as i64],
    )?;
    super::policy::bump_generation(&tx)?;
    tx.commit()?;
    Ok(changed == 1)
}

pub(super) fn delete_user(conn: &mut Connection, name: &Author) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let deleted = tx.execute("DELETE FROM users WHERE skeleton = ?1", [skeleton(name.as_str())])?;
    tx.execute("DELETE FROM tokens WHERE owner = ?1", [name.as_str()])?;
    tx.execute("DELETE FROM sessions WHERE owner = ?1", [name.as_str()])?;
    super::policy::bump_generation(&tx)?;
    tx.commit()?;
    Ok(deleted == 1)
}

const TOKEN_COLUMNS: &str = "SELECT hash, owner, label, expires, created FROM tokens";

fn row_to_token(row: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    Ok(Token {
        hash: row.get(0)?,
        owner: author(row.get(1)?)?,
        label: row.get(2)?,
        expires: row.get::<_, Option<i64>>(3)?.map(time).transpose()?,
        created: time(row.get(4)?)?,
    })
}

pub(super) fn add_token(conn: &Connection, token: &Token) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO tokens (hash, owner, label, expires, created) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            token.hash,
            token.owner.as_str(),
            token.label,
            token.expires.map(|t| t.millis()),
            token.created.millis()
        ],
    )?;
    Ok(())
}

pub(super) fn token(conn: &Connection, hash: &str) -> rusqlite::Result<Option<Token>> {
    let mut stmt = conn.prepare_cached(&format!("{TOKEN_COLUMNS} WHERE hash = ?1"))?;
    stmt.query_row([hash], row_to_token).optional()
}

pub(super) fn tokens(conn: &Connection, owner: &Author) -> rusqlite::Result<Vec<Token>> {
    let mut stmt = conn.prepare_cached(&format!("{TOKEN_COLUMNS} WHERE owner = ?1 ORDER BY created"))?;
    stmt.query_map([owner.as_str()], row_to_token)?.collect()
}

pub(super) fn delete_token(conn: &Connection, hash: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM tokens WHERE hash = ?1", [hash])? == 1)
}

/// Also deletes the sessions that expired.
pub(super) fn add_session(conn: &Connection, session: &Session) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM sessions WHERE expires <= ?1", [Timestamp::now().millis()])?;
    conn.execute(
        "INSERT INTO sessions (hash, owner, epoch, expires) VALUES (?1, ?2, ?3, ?4)",
        params![session.hash, session.owner.as_str(), session.epoch as i64, session.expires.millis()],
    )?;
    Ok(())
}

pub(super) fn session(conn: &Connection, hash: &str) -> rusqlite::Result<Option<Session>> {
    let mut stmt = conn.prepare_cached(
        "SELECT hash, owner, epoch, expires FROM sessions WHERE hash = ?1 AND expires > ?2",
    )?;
    stmt.query_row(params![hash, Timestamp::now().millis()], |row| {
        Ok(Session {
            hash: row.get(0)?,
            owner: author(row.get(1)?)?,
            epoch: row.get::<_, i64>(2)? as u64,
            expires: time(row.get(3)?)?,
        })
    })
    .optional()
}

pub(super) fn extend_session(conn: &Connection, hash: &str, expires: Timestamp) -> rusqlite::Result<()> {
    conn.execute("UPDATE sessions SET expires = ?2 WHERE hash = ?1", params![hash, expires.millis()])?;
    Ok(())
}

pub(super) fn delete_session(conn: &Connection, hash: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM sessions WHERE hash = ?1", [hash])?;
    Ok(())
}
