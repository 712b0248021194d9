//! The in-memory store: each room keeps what retention allows; all is gone on restart.
//!
//! Rooms are held in activity order (a linked hash map: a room moves to the back when it is
//! written to), so the room list reads `limit` rooms from the back, and forgetting takes the
//! idlest from the front: rooms whose messages all expired (`--retain-for`, in the background
//! and in chunks) and, over `--max-rooms`, the idlest of all. A forgotten room holds no memory;
//! its ids are not reused (see [`Rooms::forgotten_up_to`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::RawEntryMut;

mod accounts;

use super::{Appended, Page, Range, Retention, RoomInfo, Store, StoreError};
use crate::domain::{
    Author, Entry, IdempotencyKey, Message, MessageId, NewMessage, RoomName, TakeBack, Timestamp,
    current_message, first_id_base,
};
use crate::domain::{Session, Token, User};
use crate::hub::Hub;
use crate::wire::Event;

mod policy;

use self::policy::LocalDirectory;
use super::turns::LocalTurns;
use crate::rules::{Ban, BanTarget, Directory, RoomPattern, RoomSettings, Rule, Subject};

/// Rooms forgotten per hold of the lock, so forgetting many never stalls the others.
const FORGET_CHUNK: usize = 1024;
/// How often rooms whose messages all expired are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(10);

pub struct MemoryStore {
    /// A std mutex: nothing awaits while holding it, and holding it across "assign id, push,
    /// publish" is what keeps publish order = id order. It is held for one room's work, or
    /// `limit` rooms of a list, or `FORGET_CHUNK` forgotten rooms: never for every room.
    /// Shared (weakly) with the background pass that forgets expired rooms.
    rooms: Arc<Mutex<Rooms>>,
    hub: Arc<Hub>,
    retention: Retention,
    /// Rooms the room lists have looked at, in total: the evidence that a list costs
    /// O(limit), whatever the number of rooms.
    examined: AtomicU64,
    /// Users, tokens and sessions.
    accounts: accounts::Directory,
    /// Rules, bans and room settings.
    directory: LocalDirectory,
    turns: LocalTurns,
}

#[derive(Default)]
struct Rooms {
    /// Every room holding messages, idlest first.
    logs: LinkedHashMap<RoomName, RoomLog>,
    /// The highest id any forgotten room had given, at least where this life's ids start
    /// (`first_id_base`). A room the store does not hold reads as
    /// ending there, and starts after it when written to again: so ids are never reused in a
    /// room, and a reader resuming a forgotten room gets a `reset` (or, exactly at its end,
    /// nothing to catch up), never a silent gap.
    forgotten_up_to: MessageId,
}

#[derive(Default)]
struct RoomLog {
    /// Messages, deletes and edits, in id order.
    entries: VecDeque<Entry>,
    last_id: MessageId,
    /// Idempotency keys of held messages; a key goes with its message.
    keys: HashMap<IdempotencyKey, MessageId>,
    /// The key of each held message that has one, oldest first, for forgetting.
    keyed: VecDeque<(MessageId, IdempotencyKey)>,
}

impl RoomLog {
    fn starting_after(last_id: MessageId) -> Self {
        Self { last_id, ..Self::default() }
    }

    /// Drops what retention no longer keeps from the front.
    fn prune(&mut self, retention: Retention) {
        while self.entries.len() > retention.count {
            self.entries.pop_front();
        }
        if let Some(cutoff) = retention.cutoff() {
            while self.entries.front().is_some_and(|e| e.time() < cutoff) {
                self.entries.pop_front();
            }
        }
        let first_held = self.entries.front().map_or(self.last_id + 1, Entry::id);
        while self.keyed.front().is_some_and(|(id, _)| *id < first_held) {
            let (_, key) = self.keyed.pop_front().expect("checked above");
            self.keys.remove(&key);
        }
    }

    /// Whether it holds nothing younger than `cutoff` (`None`: nothing at all).
    fn expired(&self, cutoff: Option<Timestamp>) -> bool {
        self.entries.back().is_none_or(|newest| cutoff.is_some_and(|cutoff| newest.time() < cutoff))
    }

    fn held(&self, id: MessageId) -> Option<&Message> {
        let index = self.entries.binary_search_by_key(&id, Entry::id).ok()?;
        self.entries.get(index)?.as_message()
    }

    fn page(&self, range: Range, limit: usize) -> Page {
        let skip = match range {
            Range::After(after) => self.entries.partition_point(|e| e.id() <= after),
            Range::Latest => self.entries.len().saturating_sub(limit),
        };
        Page {
            entries: self.entries.iter().skip(skip).take(limit).cloned().collect(),
            first_held: self.entries.front().map_or(self.last_id + 1, Entry::id),
            last_id: self.last_id,
        }
    }

    /// The held message stored under `key`.
    fn keyed(&self, key: &IdempotencyKey) -> Option<&Message> {
        self.keys.get(key).and_then(|&id| self.held(id))
    }

    /// Stores `new` as the next message, unless its key names a held one: that comes back.
    fn submit(&mut self, new: NewMessage, retention: Retention) -> Appended {
        self.prune(retention);
        if let Some(original) = new.key.as_ref().and_then(|k| self.keyed(k)) {
            return Appended { message: original.clone(), replayed: true };
        }
        let key = new.key.clone();
        self.last_id += 1;
        let message = Message::new(self.last_id, new, Timestamp::now());
        if let Some(key) = key {
            self.keys.insert(key.clone(), message.id);
            self.keyed.push_back((message.id, key));
        }
        self.entries.push_back(Entry::Message(message.clone()));
        self.prune(retention);
        Appended { message, replayed: false }
    }

    /// Appends `change` as the next entry, if its target is held and not deleted.
    fn take_back(&mut self, change: &TakeBack, retention: Retention) -> Option<Entry> {
        self.prune(retention);
        let from = self.entries.partition_point(|e| e.id() < change.target);
        let about = self.entries.range(from..).filter(|e| e.target() == change.target).cloned();
        let current = current_message(change.target, about)?;
        self.last_id += 1;
        let entry = change.entry(self.last_id, current, Timestamp::now());
        self.entries.push_back(entry.clone());
        self.prune(retention);
        Some(entry)
    }
}

impl Rooms {
    /// The room's log, moved to the back as the most recently active; created if new.
    fn touch(&mut self, room: &RoomName) -> &mut RoomLog {
        let start = self.forgotten_up_to;
        match self.logs.raw_entry_mut().from_key(room) {
            RawEntryMut::Occupied(mut held) => {
                held.to_back();
                held.into_mut()
            }
            RawEntryMut::Vacant(new) => new.insert(room.clone(), RoomLog::starting_after(start)).1,
        }
    }

    /// Forgets up to `at_most` of the idlest rooms, as long as `forget` says so. Returns them,
    /// for the caller to drop once the lock is released.
    fn forget_idlest(&mut self, at_most: usize, forget: impl Fn(&RoomLog) -> bool) -> Vec<RoomLog> {
        let mut forgotten = Vec::new();
        while forgotten.len() < at_most && self.logs.front().is_some_and(|(_, log)| forget(log)) {
            let (_, log) = self.logs.pop_front().expect("checked above");
            self.forgotten_up_to = self.forgotten_up_to.max(log.last_id);
            forgotten.push(log);
        }
        forgotten
    }

    fn page(&self, room: &RoomName, range: Range, limit: usize) -> Page {
        match self.logs.get(room) {
            Some(log) => log.page(range, limit),
            None => RoomLog::starting_after(self.forgotten_up_to).page(range, limit),
        }
    }
}

impl MemoryStore {
    /// With `--retain-for`, also starts forgetting expired rooms every `FORGET_EVERY`, for as
    /// long as the store lives (when made inside a Tokio runtime, as the server does).
    pub fn new(hub: Arc<Hub>, retention: Retention) -> Self {
        // A new life starts its ids above any an earlier one gave (see `first_id_base`).
        let start = first_id_base(std::time::SystemTime::now());
        let rooms = Arc::new(Mutex::new(Rooms { forgotten_up_to: start, ..Rooms::default() }));
        if retention.age.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(forget_expired_every(Arc::downgrade(&rooms), retention));
        }
        Self {
            rooms,
            hub,
            retention,
            examined: AtomicU64::new(0),
            accounts: accounts::Directory::default(),
            directory: LocalDirectory::default(),
            turns: LocalTurns::default(),
        }
    }

    /// Rooms held now.
    pub fn held_rooms(&self) -> usize {
        self.lock().logs.len()
    }

    /// Rooms looked at by all room lists so far: at most `limit` per list.
    pub fn rooms_examined(&self) -> u64 {
        self.examined.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().expect("store lock poisoned")
    }
}

/// Forgets every room whose messages all expired, `FORGET_CHUNK` rooms per hold of the lock,
/// yielding in between. Expired rooms are the idlest, so they are all at the front.
async fn forget_expired(rooms: &Mutex<Rooms>, retention: Retention) -> u64 {
    let (mut total, cutoff) = (0, retention.cutoff());
    loop {
        let forgotten =
            rooms.lock().expect("store lock poisoned").forget_idlest(FORGET_CHUNK, |log| log.expired(cutoff));
        total += forgotten.len() as u64;
        if forgotten.len() < FORGET_CHUNK {
            return total;
        }
        drop(forgotten);
        tokio::task::yield_now().await;
    }
}

async fn forget_expired_every(rooms: Weak<Mutex<Rooms>>, retention: Retention) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FORGET_EVERY, FORGET_EVERY);
    loop {
        tick.tick().await;
        // The store is gone when its rooms are.
        let Some(rooms) = rooms.upgrade() else { return };
        forget_expired(&rooms, retention).await;
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn submit(&self, new: NewMessage) -> Result<Appended, StoreError> {
        let (appended, forgotten) = {
            let mut rooms = self.lock();
            let appended = rooms.touch(&new.room).submit(new, self.retention);
            if !appended.replayed {
                self.hub.publish(&Entry::Message(appended.message.clone()));
            }
            // The room written to is the newest: the idlest others go.
            let over = rooms.logs.len().saturating_sub(self.retention.max_rooms.unwrap_or(usize::MAX));
            (appended, rooms.forget_idlest(over, |_| true))
        };
        drop(forgotten); // after the lock: freeing a room's messages is no one else's wait
        Ok(appended)
    }

    async fn take_back(&self, change: TakeBack) -> Result<Option<Entry>, StoreError> {
        let mut rooms = self.lock();
        if !rooms.logs.contains_key(&change.room) {
            return Ok(None);
        }
        let entry = rooms.touch(&change.room).take_back(&change, self.retention);
        if let Some(entry) = &entry {
            self.hub.publish(entry);
        }
        Ok(entry)
    }

    async fn find(&self, room: &RoomName, key: &IdempotencyKey) -> Result<Option<Message>, StoreError> {
        let mut rooms = self.lock();
        let Some(log) = rooms.logs.get_mut(room) else { return Ok(None) };
        log.prune(self.retention);
        Ok(log.keyed(key).cloned())
    }

    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError> {
        let mut rooms = self.lock();
        if let Some(log) = rooms.logs.get_mut(room) {
            log.prune(self.retention);
        }
        Ok(rooms.page(room, range, limit))
    }

    async fn typing(&self, room: &RoomName, author: &Author) -> Result<(), StoreError> {
        self.hub.broadcast(room, Event::Typing { author: author.clone() });
        Ok(())
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.directory.generation())
    }

    async fn directory(&self) -> Result<Directory, StoreError> {
        Ok(self.directory.snapshot())
    }

    async fn set_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        self.directory.set_rule(rule);
        Ok(())
    }

    async fn reset_rules(&self, subject: &Subject, pattern: Option<&RoomPattern>) -> Result<u64, StoreError> {
        Ok(self.directory.reset_rules(subject, pattern))
    }

    async fn add_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        self.directory.add_ban(ban);
        Ok(())
    }

    async fn remove_ban(&self, target: &BanTarget, room: Option<&RoomName>) -> Result<u64, StoreError> {
        Ok(self.directory.remove_ban(target, room))
    }

    async fn set_room(&self, room: &RoomName, settings: RoomSettings) -> Result<(), StoreError> {
        self.directory.set_room(room, settings);
        Ok(())
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
        let mut rooms = self.lock();
        let mut active = Vec::with_capacity(limit.min(rooms.logs.len()));
        for (name, log) in rooms.logs.iter_mut().rev() {
            if active.len() == limit {
                break;
            }
            self.examined.fetch_add(1, Ordering::Relaxed);
            log.prune(self.retention);
            // In activity order: once a room holds nothing, no idler one does.
            let Some(newest) = log.entries.back() else { break };
            let messages = log.entries.len() as u64;
            active.push(RoomInfo { name: name.clone(), messages, last_activity: newest.time() });
        }
        Ok(active)
    }

    async fn prune(&self) -> Result<u64, StoreError> {
        Ok(forget_expired(&self.rooms, self.retention).await)
    }

    // Accounts (`memory/accounts.rs`).

    async fn add_user(&self, user: &User) -> Result<Option<Author>, StoreError> {
        let taken = self.accounts.add_user(user);
        self.directory.touch();
        Ok(taken)
    }
    async fn user(&self, skeleton: &str) -> Result<Option<User>, StoreError> {
        Ok(self.accounts.user(skeleton))
    }
    async fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(self.accounts.users())
    }
    async fn set_password(&self, name: &Author, hash: &str, epoch: u64) -> Result<bool, StoreError> {
        let changed = self.accounts.set_password(name, hash, epoch);
        self.directory.touch();
        Ok(changed)
    }
    async fn delete_user(&self, name: &Author) -> Result<bool, StoreError> {
        let deleted = self.accounts.delete_user(name);
        self.directory.touch();
        Ok(deleted)
    }
    async fn add_token(&self, token: &Token) -> Result<(), StoreError> {
        self.accounts.add_token(token);
        Ok(())
    }
    async fn token(&self, hash: &str) -> Result<Option<Token>, StoreError> {
        Ok(self.accounts.token(hash))
    }
    async fn tokens(&self, owner: &Author) -> Result<Vec<Token>, StoreError> {
        Ok(self.accounts.tokens(owner))
    }
    async fn delete_token(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self.accounts.delete_token(hash))
    }
    async fn add_session(&self, session: &Session) -> Result<(), StoreError> {
        self.accounts.add_session(session);
        Ok(())
    }
    async fn session(&self, hash: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.accounts.session(hash))
    }
    async fn extend_session(&self, hash: &str, expires: Timestamp) -> Result<(), StoreError> {
        self.accounts.extend_session(hash, expires);
        Ok(())
    }
    async fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        self.accounts.delete_session(hash);
        Ok(())
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

    fn new(room: &str) -> NewMessage {
        NewMessage::parse(room, Some("ana"), Some("hi")).unwrap()
    }

    fn names(rooms: &[RoomInfo]) -> Vec<&str> {
        rooms.iter().map(|r| r.name.as_str()).collect()
    }

    #[tokio::test]
    async fn over_the_cap_the_idlest_rooms_go_first_messages_and_all() {
        let capped = Retention { max_rooms: Some(3), ..Retention::count(100) };
        let store = MemoryStore::new(Hub::new(4), capped);
        // This life's ids start after `base` (see `first_id_base`).
        let base = store.append(new("a")).await.unwrap().id - 1;
        for room in ["b", "b", "c", "a"] {
            store.append(new(room)).await.unwrap();
        }
        store.append(new("d")).await.unwrap();
        assert_eq!(store.held_rooms(), 3);
        assert_eq!(names(&store.rooms(10).await.unwrap()), ["d", "a", "c"], "b was the idlest");
        let b = RoomName::parse("b").unwrap();
        let page = store.read(&b, Range::After(0), 10).await.unwrap();
        assert!(page.entries.is_empty());
        assert_eq!((page.first_held, page.last_id), (base + 3, base + 2), "read as ending where it ended");
        // Written again, it comes back with ids after every forgotten room's, and the
        // idlest of the others (c) goes.
        assert_eq!(store.append(new("b")).await.unwrap().id, base + 3);
        assert_eq!(names(&store.rooms(10).await.unwrap()), ["b", "d", "a"]);
        let a = RoomName::parse("a").unwrap();
        assert_eq!(store.read(&a, Range::After(0), 10).await.unwrap().entries.len(), 2);
    }

    #[tokio::test]
    async fn rooms_whose_messages_all_expired_are_forgotten_in_chunks() {
        let short = Retention { count: 100, age: Some(Duration::from_millis(1)), max_rooms: None };
        let store = MemoryStore::new(Hub::new(4), short);
        let rooms = 2 * FORGET_CHUNK + 10;
        for n in 0..rooms {
            store.append(new(&format!("r{n}"))).await.unwrap();
        }
        assert_eq!(store.held_rooms(), rooms);
        tokio::time::sleep(Duration::from_millis(20)).await; // past the 1 ms retention
        assert_eq!(store.prune().await.unwrap(), rooms as u64);
        assert_eq!(store.held_rooms(), 0, "nothing held, no memory");
        assert!(store.rooms(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn expired_rooms_are_forgotten_in_the_background() {
        let short = Retention { count: 100, age: Some(Duration::from_millis(1)), max_rooms: None };
        let store = MemoryStore::new(Hub::new(4), short);
        store.append(new("old")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await; // past the 1 ms retention
        tokio::time::pause();
        tokio::time::advance(FORGET_EVERY + Duration::from_secs(1)).await;
        for _ in 0..100 {
            if store.held_rooms() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(store.held_rooms(), 0);
    }

    #[tokio::test]
    async fn a_room_list_looks_at_limit_rooms_whatever_the_number_of_rooms() {
        let store = MemoryStore::new(Hub::new(4), Retention::count(10));
        for n in 0..5000 {
            store.append(new(&format!("r{n}"))).await.unwrap();
        }
        let listed = store.rooms(20).await.unwrap();
        assert_eq!(names(&listed)[..2], ["r4999", "r4998"]);
        assert_eq!(listed.len(), 20);
        assert_eq!(store.rooms_examined(), 20);
    }
}
