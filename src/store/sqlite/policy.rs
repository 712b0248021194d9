//! The SQLite store's directory: `access_rules`, `bans`, `room_settings` and the one-row
//! `directory` table holding the generation (migration 4).
//!
//! These tables are written on a pooled connection of their own, not by the message writer,
//! so `ssechat access ...` can write them from another process while the server runs (WAL
//! and the busy timeout order the two writers). Each write is one transaction that also
//! bumps the generation.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::domain::{RoomName, Timestamp};
use crate::rules::{Ban, BanTarget, Directory, Perm, RoomPattern, RoomSettings, Rule, Subject};

pub const MIGRATION: &str = "CREATE TABLE access_rules (
         subject TEXT NOT NULL,
         pattern TEXT NOT NULL,
         perm TEXT NOT NULL,
         PRIMARY KEY (subject, pattern)
     ) WITHOUT ROWID;
     CREATE TABLE bans (
         target TEXT NOT NULL,
         room TEXT NOT NULL,
         until INTEGER,
         PRIMARY KEY (target, room)
     ) WITHOUT ROWID;
     CREATE TABLE room_settings (
         room TEXT PRIMARY KEY,
         slow_ms INTEGER
     ) WITHOUT ROWID;
     CREATE TABLE directory (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         generation INTEGER NOT NULL
     );
     INSERT INTO directory (id, generation) VALUES (1, 0);";

/// Runs `write` in an immediate transaction with the generation bump, and commits.
pub fn write<T>(
    conn: &mut Connection,
    write: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = write(&tx)?;
    bump_generation(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// The one step every directory write takes (accounts' writes call it too).
pub fn bump_generation(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute("UPDATE directory SET generation = generation + 1 WHERE id = 1", []).map(|_| ())
}

pub fn generation(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT generation FROM directory WHERE id = 1", [], |r| r.get(0))
}

pub fn directory(conn: &mut Connection) -> rusqlite::Result<Directory> {
    let tx = conn.transaction()?;
    let generation = generation(&tx)?;
    let rules = tx
        .prepare_cached("SELECT subject, pattern, perm FROM access_rules ORDER BY subject, pattern")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .map(|row| {
            let (subject, pattern, perm) = row?;
            Ok(Rule {
                subject: Subject::parse(&subject).map_err(damaged)?,
                pattern: RoomPattern::parse(&pattern).map_err(damaged)?,
                perm: Perm::parse(&perm).map_err(damaged)?,
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let bans = tx
        .prepare_cached("SELECT target, room, until FROM bans ORDER BY target, room")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))?
        .map(|row| {
            let (target, room, until) = row?;
            Ok(Ban {
                target: BanTarget::parse(&target).map_err(damaged)?,
                room: (!room.is_empty()).then(|| RoomName::parse(&room)).transpose().map_err(damaged)?,
                until: until
                    .map(|ms| Timestamp::from_millis(ms).ok_or_else(|| damaged("time")))
                    .transpose()?,
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let rooms = tx
        .prepare_cached("SELECT room, slow_ms FROM room_settings")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<u64>>(1)?)))?
        .map(|row| {
            let (room, slow) = row?;
            let settings = RoomSettings { slow: slow.map(Duration::from_millis) };
            Ok((RoomName::parse(&room).map_err(damaged)?, settings))
        })
        .collect::<rusqlite::Result<HashMap<_, _>>>()?;
    Ok(Directory { generation, rules, bans, rooms, names: Default::default() })
}

pub fn set_rule(tx: &Transaction, rule: &Rule) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO access_rules (subject, pattern, perm) VALUES (?1, ?2, ?3)
         ON CONFLICT (subject, pattern) DO UPDATE SET perm = excluded.perm",
        params![rule.subject.to_string(), rule.pattern.as_str(), rule.perm.as_str()],
    )
    .map(|_| ())
}

pub fn reset_rules(
    tx: &Transaction,
    subject: &Subject,
    pattern: Option<&RoomPattern>,
) -> rusqlite::Result<u64> {
    let removed = match pattern {
        Some(p) => tx.execute(
            "DELETE FROM access_rules WHERE subject = ?1 AND pattern = ?2",
            params![subject.to_string(), p.as_str()],
        )?,
        None => tx.execute("DELETE FROM access_rules WHERE subject = ?1", params![subject.to_string()])?,
    };
    Ok(removed as u64)
}

pub fn add_ban(tx: &Transaction, ban: &Ban) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO bans (target, room, until) VALUES (?1, ?2, ?3)
         ON CONFLICT (target, room) DO UPDATE SET until = excluded.until",
        params![ban.target.to_string(), room_column(ban.room.as_ref()), ban.until.map(|t| t.millis())],
    )
    .map(|_| ())
}

pub fn remove_ban(tx: &Transaction, target: &BanTarget, room: Option<&RoomName>) -> rusqlite::Result<u64> {
    let removed = tx.execute(
        "DELETE FROM bans WHERE target = ?1 AND room = ?2",
        params![target.to_string(), room_column(room)],
    )?;
    Ok(removed as u64)
}

pub fn set_room(tx: &Transaction, room: &RoomName, settings: RoomSettings) -> rusqlite::Result<()> {
    match settings.slow {
        None => tx.execute("DELETE FROM room_settings WHERE room = ?1", params![room.as_str()])?,
        Some(slow) => tx.execute(
            "INSERT INTO room_settings (room, slow_ms) VALUES (?1, ?2)
             ON CONFLICT (room) DO UPDATE SET slow_ms = excluded.slow_ms",
            params![room.as_str(), slow.as_millis() as i64],
        )?,
    };
    Ok(())
}

/// A ban on every room is stored with the room `''` (part of the primary key).
fn room_column(room: Option<&RoomName>) -> &str {
    room.map_or("", RoomName::as_str)
}

fn damaged(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("damaged row in the directory tables: {e}").into())
}
