//! The in-memory store: each room keeps what retention allows; all is gone on restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Appended, Page, Range, Retention, RoomInfo, Store, StoreError};
use crate::domain::{Author, IdempotencyKey, Message, MessageId, NewMessage, RoomName, Timestamp};
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
    /// Idempotency keys of held messages; a key goes with its message.
    keys: HashMap<IdempotencyKey, MessageId>,
    /// The key of each held message that has one, oldest first, for forgetting.
    keyed: VecDeque<(MessageId, IdempotencyKey)>,
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
        let first_held = self.messages.front().map_or(self.last_id + 1, |m| m.id);
        while self.keyed.front().is_some_and(|(id, _)| *id < first_held) {
            let (_, key) = self.keyed.pop_front().expect("checked above");
            self.keys.remove(&key);
        }
    }

    fn held(&self, id: MessageId) -> Option<&Message> {
        let index = self.messages.binary_search_by_key(&id, |m| m.id).ok()?;
        self.messages.get(index)
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
    async fn submit(&self, new: NewMessage) -> Result<Appended, StoreError> {
        let mut rooms = self.rooms.lock().expect("store lock poisoned");
        let log = rooms.entry(new.room.clone()).or_default();
        log.prune(self.retention);
        if let Some(original) = new.key.as_ref().and_then(|k| log.keys.get(k)).and_then(|&id| log.held(id)) {
            return Ok(Appended { message: original.clone(), replayed: true });
        }
        let key = new.key.clone();
        log.last_id += 1;
        let message = Message::new(log.last_id, new, Timestamp::now());
        if let Some(key) = key {
            log.keys.insert(key.clone(), message.id);
            log.keyed.push_back((message.id, key));
        }
        log.messages.push_back(message.clone());
        log.prune(self.retention);
        self.hub.publish(&message);
        Ok(Appended { message, replayed: false })
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
