//! History: one trait, several backends.
//!
//! A store assigns ids, keeps each room's recent messages, and hands every message it
//! accepts to the hub, in id order, before `append` returns. That last duty sits here and
//! not in the handler because only the store knows the commit order (a batch commit, a
//! Redis script): publishing in that order is what lets streams de-duplicate by id.

mod memory;

#[cfg(test)]
mod contract;

use async_trait::async_trait;

pub use memory::MemoryStore;

use crate::domain::{Message, MessageId, NewMessage, RoomName};

#[derive(Debug, thiserror::Error)]
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `new` under the room's next id and publishes it to the hub.
    async fn append(&self, new: NewMessage) -> Result<Message, StoreError>;

    /// Reads at most `limit` messages of `room`.
    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError>;
}
