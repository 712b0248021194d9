//! The in-memory store: each room keeps what retention allows; all is gone on restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Page, Range, Retention, RoomInfo, Store, StoreError};
use crate::domain::{Author, Message, MessageId, NewMessage, RoomName, Timestamp};
use crate::hub::Hub;
use crate::wire::Event;

pub struct MemoryStore {
    /// Every room ever written to. A std mutex: nothing awaits while holding it, and
    /// holding it across "assign id, push, publish" is what keeps publish order = id order.
    rooms: Mutex<HashMap<RoomName, RoomLog>>,
    hub: Arc<Hub>,
    retention: Retention,
}

#[derive(Default)]
struct RoomLog {
    messages: VecDeque<Message>,
    last_id: MessageId,
}

impl RoomLog {
    /// Drops what retention no longer keeps from the front.
    fn prune(&mut self, retention: Retention) {
        while self.messages.len() > retention.count {
            self.messages.pop_front();
        }
        if let Some(cutoff) = retention.cutoff() {
            while self.messages.front().is_some_and(|m| m.time < cutoff) {
                self.messages.pop_front();
            }
        }
    }

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
    pub fn new(hub: Arc<Hub>, retention: Retention) -> Self {
        Self { rooms: Mutex::new(HashMap::new()), hub, retention }
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
        log.prune(self.retention);
        self.hub.publish(&message);
        Ok(message)
    }

    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError> {
        let mut rooms = self.rooms.lock().expect("store lock poisoned");
        Ok(match rooms.get_mut(room) {
            Some(log) => {
                log.prune(self.retention);
                log.page(range, limit)
            }
            None => RoomLog::default().page(range, limit),
        })
    }

    async fn typing(&self, room: &RoomName, author: &Author) -> Result<(), StoreError> {
        self.hub.broadcast(room, Event::Typing { author: author.clone() });
        Ok(())
    }

    async fn rooms(&self, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        let mut rooms = self.rooms.lock().expect("store lock poisoned");
        let mut active: Vec<RoomInfo> = rooms
            .iter_mut()
            .filter_map(|(name, log)| {
                log.prune(self.retention);
                Some(RoomInfo {
                    name: name.clone(),
                    messages: log.messages.len() as u64,
                    last_activity: log.messages.back()?.time,
                })
            })
            .collect();
        active.sort_by(|a, b| b.last_activity.cmp(&a.last_activity).then_with(|| a.name.cmp(&b.name)));
        active.truncate(limit);
        Ok(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract() {
        super::super::contract::run_all(|hub, retention| async move {
            Arc::new(MemoryStore::new(hub, retention)) as Arc<dyn Store>
        })
        .await;
    }
}
