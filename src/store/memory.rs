//! The in-memory store: each room keeps its last `retain` messages; all is gone on restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Page, Range, Store, StoreError};
use crate::domain::{Message, MessageId, NewMessage, RoomName, Timestamp};
use crate::hub::Hub;

pub struct MemoryStore {
    /// Every room ever written to. A std mutex: nothing awaits while holding it, and
    /// holding it across "assign id, push, publish" is what keeps publish order = id order.
    rooms: Mutex<HashMap<RoomName, RoomLog>>,
    hub: Arc<Hub>,
    /// Messages kept per room.
    retain: usize,
}

#[derive(Default)]
struct RoomLog {
    messages: VecDeque<Message>,
    last_id: MessageId,
}

impl RoomLog {
    fn page(&self, range: Range, limit: usize) -> Page {
        let skip = match range {
            Range::After(after) => self.messages.partition_point(|m| m.id <= after),
            Range::Latest => self.messages.len().saturating_sub(limit),
        };
        Page {
            messages: self.messages.iter().skip(skip).take(limit).cloned().collect(),
            first_held: self.messages.front().map_or(self.last_id + 1, |m| m.id),
            last_id: self.last_id,
        }
    }
}

impl MemoryStore {
    pub fn new(hub: Arc<Hub>, retain: usize) -> Self {
        Self { rooms: Mutex::new(HashMap::new()), hub, retain: retain.max(1) }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn append(&self, new: NewMessage) -> Result<Message, StoreError> {
        let mut rooms = self.rooms.lock().expect("store lock poisoned");
        let log = rooms.entry(new.room.clone()).or_default();
        log.last_id += 1;
        let message = Message::new(log.last_id, new, Timestamp::now());
        log.messages.push_back(message.clone());
        while log.messages.len() > self.retain {
            log.messages.pop_front();
        }
        self.hub.publish(&message);
        Ok(message)
    }

    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError> {
        let rooms = self.rooms.lock().expect("store lock poisoned");
        Ok(rooms
            .get(room)
            .map_or_else(|| RoomLog::default().page(range, limit), |log| log.page(range, limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract() {
        super::super::contract::run_all(|hub, retain| async move {
            Arc::new(MemoryStore::new(hub, retain)) as Arc<dyn Store>
        })
        .await;
    }
}
