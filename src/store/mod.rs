//! History: one trait, several backends.
//!
//! A store assigns ids, keeps each room's recent messages, and hands every message it
//! accepts to the hub, in id order, before `append` returns. That last duty sits here and
//! not in the handler because only the store knows the commit order (a batch commit, a
//! Redis script): publishing in that order is what lets streams de-duplicate by id.

mod memory;
mod redis;
mod sqlite;

#[cfg(test)]
mod contract;

use async_trait::async_trait;

use std::time::Duration;

pub use memory::MemoryStore;
pub use redis::{RedisStore, SharedRateLimiter};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

use serde::Serialize;

use crate::domain::PresenceView;
use crate::domain::{Author, Message, MessageId, NewMessage, RoomName, Timestamp};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot take writes or answer right now; the client may retry.
    #[error("history store unavailable: {0}")]
    Unavailable(String),
}

/// Which part of a room's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Messages with an id greater than this, oldest first.
    After(MessageId),
    /// The newest messages, oldest first.
    Latest,
}

/// A slice of a room's history, with what a resuming reader needs to spot a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Oldest first, at most the limit asked for.
    pub messages: Vec<Message>,
    /// The oldest id still held, or `last_id + 1` when nothing is held.
    pub first_held: MessageId,
    /// The newest id ever given in this room (0 if none).
    pub last_id: MessageId,
}

/// How much history each room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest messages kept per room.
    pub count: usize,
    /// Messages older than this are dropped; `None` keeps them regardless of age.
    pub age: Option<Duration>,
    /// Rooms held at most, the idlest forgotten first (`--max-rooms`). Only the memory store
    /// holds its rooms in memory, so only it has a cap; `None`: no cap.
    pub max_rooms: Option<usize>,
}

impl Retention {
    pub fn count(count: usize) -> Self {
        Self { count: count.max(1), age: None, max_rooms: None }
    }

    /// The oldest time still kept, if age counts.
    pub fn cutoff(&self) -> Option<Timestamp> {
        let age = i64::try_from(self.age?.as_millis()).unwrap_or(i64::MAX);
        Timestamp::from_millis(Timestamp::now().millis().saturating_sub(age))
    }
}

/// An active room, for the room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo {
    pub name: RoomName,
    /// Messages held now.
    pub messages: u64,
    pub last_activity: Timestamp,
}

/// What `submit` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: Message,
    /// The key was seen before: this is the message stored then, nothing new was stored.
    pub replayed: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `new` under the room's next id and publishes it, unless its idempotency key
    /// was used before in the room while that message is still held: then nothing is stored
    /// and the original comes back. The check and the store are one atomic step.
    async fn submit(&self, new: NewMessage) -> Result<Appended, StoreError>;

    /// `submit`, for callers that don't care whether it was a replay.
    async fn append(&self, new: NewMessage) -> Result<Message, StoreError> {
        Ok(self.submit(new).await?.message)
    }

    /// Reads at most `limit` messages of `room`.
    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError>;

    /// Rooms that hold messages, most recently active first, at most `limit`. Read from an
    /// index in activity order: the cost grows with `limit`, not with the number of rooms.
    async fn rooms(&self, limit: usize) -> Result<Vec<RoomInfo>, StoreError>;

    /// Deletes now what retention no longer keeps (every backend also does it in the
    /// background): old messages, and in the memory store the rooms left with none. Returns
    /// how much went (rows, entries or rooms, by backend), for logs and tests.
    async fn prune(&self) -> Result<u64, StoreError>;

    /// Tells someone is typing to everyone in the room, on every node. Nothing is stored.
    async fn typing(&self, room: &RoomName, author: &Author) -> Result<(), StoreError>;

    /// Shares this node's readers of `room` with the other nodes; `joined` are the readers
    /// who arrived here since the last share (they may be readers moving from a draining
    /// node). One node: nothing to do.
    async fn share_presence(
        &self,
        _room: &RoomName,
        _local: PresenceView,
        _joined: PresenceView,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Draining: this node's readers (`rooms`) stop counting as this node's at once, and
    /// count for `grace` more unless they reconnect to another node. One node: nothing to do.
    async fn withdraw_presence(
        &self,
        _rooms: &[(RoomName, PresenceView)],
        _grace: Duration,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Everyone's readers of `room`, given this node's. One node: just this node's.
    async fn presence(&self, _room: &RoomName, local: PresenceView) -> Result<PresenceView, StoreError> {
        Ok(local)
    }
}
