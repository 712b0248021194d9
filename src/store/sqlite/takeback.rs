//! Deletes and edits in SQLite: rows of the `messages` table like messages (schema 4), so
//! ids stay dense per room and retention by count and by age work unchanged.
//!
//! A message row has `kind` 0. A delete has `kind` 1, the deleted message's id in `target`,
//! its own time in `time`, and empty `author` and `text`. An edit has `kind` 2, the edited
//! message's id in `target`, the whole message as it now reads in `author` and `text`,
//! the edit's time in `time` and the message's own in `posted`.

use rusqlite::{Transaction, params};

use super::{Parts, Writer, corrupt, last_id, read_time, row_to_parts};
use crate::domain::{Author, Entry, Message, MessageText, RoomName, TakeBack, Timestamp, current_message};
use crate::store::StoreError;

const DELETE: i64 = 1;
const EDIT: i64 = 2;

/// The rows that make up message `?2` of room `?1` as it reads now: its own and those
/// about it.
const ABOUT: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM messages WHERE room = ?1 AND id >= ?2 AND (id = ?2 OR target = ?2) ORDER BY id"
);

impl Parts {
    /// A row of any kind, validated.
    pub(super) fn into_entry(self, room: &RoomName) -> rusqlite::Result<crate::domain::Entry> {
        let target = || self.target.ok_or_else(|| corrupt("a delete or edit without a target"));
        match self.kind {
            0 => Ok(Entry::Message(self.into_message(room)?)),
            DELETE => Ok(Entry::Delete {
                id: self.id,
                room: room.clone(),
                target: target()?,
                time: read_time(self.time)?,
            }),
            EDIT => {
                let message = Message {
                    id: target()?,
                    room: room.clone(),
                    author: Author::read_back(&self.author).map_err(corrupt)?,
                    text: MessageText::read_back(&self.text).map_err(corrupt)?,
                    time: read_time(self.posted.ok_or_else(|| corrupt("an edit without its post time"))?)?,
                    edited: Some(read_time(self.time)?),
                    user: self.user,
                };
                Ok(Entry::Edit { id: self.id, message })
            }
            other => Err(corrupt(format!("unknown kind of entry {other}"))),
        }
    }
}

impl Writer {
    /// Appends `change` in a transaction of its own if its target is held and not deleted,
    /// then publishes it.
    pub(super) fn commit_take_back(&mut self, change: &TakeBack) -> Result<Option<Entry>, StoreError> {
        match self.write_take_back(change) {
            Ok(entry) => {
                if let Some(entry) = &entry {
                    self.last_ids.insert(change.room.clone(), entry.id());
                    self.hub.publish(entry);
                }
                Ok(entry)
            }
            Err(e) => {
                tracing::error!(error = %e, "writing a delete or edit failed");
                self.last_ids.clear();
                Err(e.into_store_error())
            }
        }
    }

    fn write_take_back(&mut self, change: &TakeBack) -> Result<Option<Entry>, super::WriteError> {
        let retention = self.retention;
        let tx = self.conn.transaction()?;
        let room = change.room.as_str();
        let last = last_id(&tx, room)?;
        if change.target < super::first_held(&tx, room, last, retention)? {
            return Ok(None);
        }
        let about = tx
            .prepare_cached(ABOUT)?
            .query_map(params![room, change.target], row_to_parts)?
            .map(|row| row.and_then(|parts| parts.into_entry(&change.room)))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let Some(current) = current_message(change.target, about) else { return Ok(None) };
        let entry = change.entry(last + 1, current, Timestamp::now());
        insert(&tx, &entry)?;
        tx.commit().map_err(super::WriteError::Commit)?;
        Ok(Some(entry))
    }
}

/// Writes a delete or an edit, and notes the room's new last id and activity.
fn insert(tx: &Transaction<'_>, entry: &Entry) -> rusqlite::Result<()> {
    let (kind, author, text, posted, user) = match entry {
        Entry::Delete { .. } => (DELETE, "", "", None, false),
        Entry::Edit { message, .. } => {
            (EDIT, message.author.as_str(), message.text.as_str(), Some(message.time.millis()), message.user)
        }
        Entry::Message(_) => unreachable!("messages are written by `Writer::write`"),
    };
    let time = entry.time().millis();
    tx.prepare_cached(
        "INSERT INTO messages (room, id, author, text, time, kind, target, posted, user)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        entry.room().as_str(),
        entry.id(),
        author,
        text,
        time,
        kind,
        entry.target(),
        posted,
        user
    ])?;
    tx.prepare_cached(
        "INSERT INTO rooms (name, last_id, last_time) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id, last_time = excluded.last_time",
    )?
    .execute(params![entry.room().as_str(), entry.id(), time])?;
    Ok(())
}
