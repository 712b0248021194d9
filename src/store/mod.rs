//! History: one trait, several backends.
//!
//! A store assigns ids, keeps each room's recent messages, and hands every message it
//! accepts to the hub, in id order, before `append` returns. That last duty sits here and
//! not in the handler because only the store knows the commit order (a batch commit, a
//! Redis script): publishing in that order is what lets streams de-duplicate by id.

mod memory;
mod newest;
mod redis;
mod sqlite;
mod turns;

#[cfg(any(test, feature = "contract"))]
#[doc(hidden)]
pub mod contract;

use async_trait::async_trait;

use std::time::Duration;

pub use memory::MemoryStore;
pub use newest::NewestIds;
pub use redis::room as redis_room;
pub use redis::{RedisStore, SharedRateLimiter, redact_password};
pub use sqlite::{Copied, SCHEMA_VERSION, SqliteStore};

use serde::Serialize;

use crate::domain::PresenceView;
use crate::domain::{
    Author, Entry, IdempotencyKey, Message, MessageId, NewMessage, RoomName, TakeBack, Timestamp,
};
use crate::domain::{Session, Token, User};
use crate::rules::{Ban, BanTarget, Directory, RoomPattern, RoomSettings, Rule, Subject};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot take writes or answer right now, and for a write it is certain
    /// that nothing was stored: the command never reached the backend, or the backend refused
    /// it or rolled it back. The client may simply retry.
    #[error("history store unavailable: {0}")]
    Unavailable(String),
    /// A write that may or may not have happened: the backend took the command and then gave
    /// no answer that says (a timeout, a dropped connection, a commit whose fsync failed).
    /// Only asking again under the message's key settles it (see [`submit_settled`]).
    #[error("history store did not confirm the write: {0}")]
    Unknown(String),
}

/// Which part of a room's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Messages with an id greater than this, oldest first.
    After(MessageId),
    /// The newest messages, oldest first.
    Latest,
}

/// A slice of a room's log, with what a resuming reader needs to spot a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Log entries (messages, deletes, edits), oldest first, at most the limit asked for.
    pub entries: Vec<Entry>,
    /// The oldest id still held, or `last_id + 1` when nothing is held.
    pub first_held: MessageId,
    /// The newest id ever given in this room (0 if none).
    pub last_id: MessageId,
}

impl Page {
    /// The messages of this page as they read now: deleted ones gone, edited ones updated.
    /// A held message's deletes and edits come after it, so they are held too: with
    /// `Range::Latest` this is exact for every message in the page.
    pub fn current(self) -> Vec<Message> {
        crate::domain::current_state(self.entries)
    }
}

/// Entries read per query when looking for a message's current state.
const SCAN_PAGE: usize = 1000;

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

    /// The message `submit` would give back for `key` in `room` (the same rules: a key is
    /// known while its message is held, in Redis for 24 h), or `None` when it would store a
    /// new one. A read: it stores nothing, so a client over its send rate may ask.
    async fn find(&self, room: &RoomName, key: &IdempotencyKey) -> Result<Option<Message>, StoreError>;

    /// `submit`, for callers that don't care whether it was a replay.
    async fn append(&self, new: NewMessage) -> Result<Message, StoreError> {
        Ok(self.submit(new).await?.message)
    }

    /// Reads at most `limit` log entries of `room`.
    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError>;

    /// Rooms that hold messages, most recently active first, at most `limit`. Read from an
    /// index in activity order: the cost grows with `limit`, not with the number of rooms.
    async fn rooms(&self, limit: usize) -> Result<Vec<RoomInfo>, StoreError>;

    /// Deletes now what retention no longer keeps (every backend also does it in the
    /// background): old messages, and in the memory store the rooms left with none. Returns
    /// how much went (rows, entries or rooms, by backend), for logs and tests.
    async fn prune(&self) -> Result<u64, StoreError>;

    // Taking things back: deletes and edits, entries of the log like messages.

    /// Appends `change` as the room's next entry and publishes it, if its target is a
    /// message the room holds and nobody deleted: the check and the append are one atomic
    /// step, so two deletes of one message log one. `None`: there is no such message. An
    /// edit's entry carries the whole message with the new text, `edited` now.
    async fn take_back(&self, change: TakeBack) -> Result<Option<Entry>, StoreError>;

    /// How message `id` of `room` reads now (edits applied); `None` if the room does not
    /// hold it or it was deleted. Reads the log from the message on.
    async fn message(&self, room: &RoomName, id: MessageId) -> Result<Option<Message>, StoreError> {
        let mut entries = Vec::new();
        let mut after = id.saturating_sub(1);
        loop {
            let page = self.read(room, Range::After(after), SCAN_PAGE).await?;
            let full = page.entries.len() == SCAN_PAGE;
            after = page.entries.last().map_or(after, Entry::id);
            entries.extend(page.entries.into_iter().filter(|e| e.target() == id));
            if !full {
                return Ok(crate::domain::current_message(id, entries));
            }
        }
    }

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

    // Accounts: users, tokens and sessions (`accounts.rs` says the rules; each backend keeps
    // them in `<backend>/accounts.rs`). A user is keyed by the skeleton of their name
    // (`accounts::skeleton`); tokens and sessions by the hash of their secret.

    /// Adds `user` unless a user with the same skeleton exists: then that user's name.
    async fn add_user(&self, _user: &User) -> Result<Option<Author>, StoreError> {
        Err(no_accounts())
    }

    /// The user whose name has this skeleton.
    async fn user(&self, _skeleton: &str) -> Result<Option<User>, StoreError> {
        Err(no_accounts())
    }

    /// Every user, by name.
    async fn users(&self) -> Result<Vec<User>, StoreError> {
        Err(no_accounts())
    }

    /// Replaces the password hash and the epoch; `false`: no such user.
    async fn set_password(&self, _name: &Author, _hash: &str, _epoch: u64) -> Result<bool, StoreError> {
        Err(no_accounts())
    }

    /// Deletes the user and their tokens; `false`: no such user.
    async fn delete_user(&self, _name: &Author) -> Result<bool, StoreError> {
        Err(no_accounts())
    }

    async fn add_token(&self, _token: &Token) -> Result<(), StoreError> {
        Err(no_accounts())
    }

    async fn token(&self, _hash: &str) -> Result<Option<Token>, StoreError> {
        Err(no_accounts())
    }

    /// The tokens of a user, oldest first.
    async fn tokens(&self, _owner: &Author) -> Result<Vec<Token>, StoreError> {
        Err(no_accounts())
    }

    /// `false`: no such token.
    async fn delete_token(&self, _hash: &str) -> Result<bool, StoreError> {
        Err(no_accounts())
    }

    async fn add_session(&self, _session: &Session) -> Result<(), StoreError> {
        Err(no_accounts())
    }

    /// The session, unless it expired.
    async fn session(&self, _hash: &str) -> Result<Option<Session>, StoreError> {
        Err(no_accounts())
    }

    async fn extend_session(&self, _hash: &str, _expires: Timestamp) -> Result<(), StoreError> {
        Err(no_accounts())
    }

    async fn delete_session(&self, _hash: &str) -> Result<(), StoreError> {
        Err(no_accounts())
    }

    // --- Policy: access rules, bans, room settings and the directory generation ---
    // Every write below bumps the generation in the same transaction (one call per backend:
    // `bump_generation`), so a node that sees the counter move reloads [`Directory`].

    /// The store's change counter: moves with every write to the directory.
    async fn generation(&self) -> Result<u64, StoreError>;

    /// Rules, bans and room settings, read at once, with the generation they belong to.
    async fn directory(&self) -> Result<Directory, StoreError>;

    /// Adds a rule, or changes the permission of the rule for the same subject and pattern.
    async fn set_rule(&self, rule: &Rule) -> Result<(), StoreError>;

    /// Removes `subject`'s rules (only the one for `pattern`, if given); returns how many.
    async fn reset_rules(&self, subject: &Subject, pattern: Option<&RoomPattern>) -> Result<u64, StoreError>;

    /// Adds a ban, or replaces the one for the same target and room.
    async fn add_ban(&self, ban: &Ban) -> Result<(), StoreError>;

    /// Lifts the ban on `target` in `room` (`None`: the ban on every room); returns how many.
    async fn remove_ban(&self, target: &BanTarget, room: Option<&RoomName>) -> Result<u64, StoreError>;

    /// Sets a room's settings (the defaults remove them).
    async fn set_room(&self, room: &RoomName, settings: RoomSettings) -> Result<(), StoreError>;

    /// Slow mode, one atomic step per send: takes `sender`'s turn in `room` if the last one
    /// was at least `every` ago (`None`), else says how long until the next (`Some`).
    async fn slow_turn(
        &self,
        room: &RoomName,
        sender: &str,
        every: Duration,
    ) -> Result<Option<Duration>, StoreError>;
}

/// What a store without accounts (a test double) answers.
fn no_accounts() -> StoreError {
    StoreError::Unavailable("this store keeps no accounts".to_owned())
}

/// The first and the longest pause between two tries of a send whose outcome is unknown.
const SETTLE_PAUSE: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// Submits `new` (which carries a key) and, if the store can't say whether it stored it,
/// settles that before `within` has passed (`--send-timeout`).
///
/// A try that certainly stored nothing (`Unavailable`) is the answer, unless an earlier try
/// is unknown. An unknown try is settled by submitting again under the same key, rather than
/// by looking the key up: the first try may still be on its way (queued in a stopped Redis,
/// or in the SQLite writer's queue), so a lookup that finds nothing proves nothing, while a
/// second submit is ordered against the first by the key itself: whichever runs first stores
/// the message and the other gives it back. So a try after an unknown one that says
/// "replayed" found this send's own message: it is answered as stored now, not as a replay.
/// Still unknown at the deadline: `Unknown`, and the client's retry with the key settles it.
pub async fn submit_settled(
    store: &dyn Store,
    new: NewMessage,
    within: Duration,
) -> Result<Appended, StoreError> {
    debug_assert!(new.key.is_some(), "only a send with a key can be settled");
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = SETTLE_PAUSE.0;
    let mut unknown: Option<String> = None;
    loop {
        let attempt = tokio::time::timeout_at(deadline, store.submit(new.clone()))
            .await
            .unwrap_or_else(|_| Err(StoreError::Unknown("no answer within the send timeout".to_owned())));
        match attempt {
            Ok(appended) => {
                return Ok(Appended { replayed: appended.replayed && unknown.is_none(), ..appended });
            }
            Err(certain @ StoreError::Unavailable(_)) if unknown.is_none() => return Err(certain),
            Err(e) => {
                tracing::warn!(error = %e, "a send's outcome is unknown; trying again under its key");
                unknown = Some(e.to_string());
            }
        }
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(StoreError::Unknown(unknown.unwrap_or_default()));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(SETTLE_PAUSE.1);
    }
}

#[cfg(test)]
mod settle_tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::hub::Hub;

    /// How one try goes wrong.
    enum Fault {
        /// Stored, and then the answer was lost.
        LostReply,
        /// Not stored, yet the backend can't say so.
        Unknown,
        /// Certainly not stored.
        Refused,
        /// No answer at all.
        Hang,
    }

    /// The memory store, with the faults of its next tries scripted.
    struct Scripted {
        inner: MemoryStore,
        /// A std mutex: never held across an await.
        faults: Mutex<VecDeque<Fault>>,
    }

    impl Scripted {
        fn new(faults: impl IntoIterator<Item = Fault>) -> Self {
            let inner = MemoryStore::new(Hub::new(4), Retention::count(10));
            Self { inner, faults: Mutex::new(faults.into_iter().collect()) }
        }

        fn faults_left(&self) -> usize {
            self.faults.lock().unwrap().len()
        }
    }

    #[async_trait]
    impl Store for Scripted {
        async fn submit(&self, new: NewMessage) -> Result<Appended, StoreError> {
            let fault = self.faults.lock().unwrap().pop_front();
            match fault {
                None => self.inner.submit(new).await,
                Some(Fault::LostReply) => {
                    self.inner.submit(new).await?;
                    Err(StoreError::Unknown("reply lost".into()))
                }
                Some(Fault::Unknown) => Err(StoreError::Unknown("no answer".into())),
                Some(Fault::Refused) => Err(StoreError::Unavailable("refused".into())),
                Some(Fault::Hang) => std::future::pending().await,
            }
        }
        async fn find(&self, room: &RoomName, key: &IdempotencyKey) -> Result<Option<Message>, StoreError> {
            self.inner.find(room, key).await
        }
        async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError> {
            self.inner.read(room, range, limit).await
        }
        async fn take_back(&self, change: TakeBack) -> Result<Option<Entry>, StoreError> {
            self.inner.take_back(change).await
        }
        async fn rooms(&self, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
            self.inner.rooms(limit).await
        }
        async fn prune(&self) -> Result<u64, StoreError> {
            self.inner.prune().await
        }
        async fn typing(&self, room: &RoomName, author: &Author) -> Result<(), StoreError> {
            self.inner.typing(room, author).await
        }
        async fn generation(&self) -> Result<u64, StoreError> {
            self.inner.generation().await
        }
        async fn directory(&self) -> Result<Directory, StoreError> {
            self.inner.directory().await
        }
        async fn set_rule(&self, rule: &Rule) -> Result<(), StoreError> {
            self.inner.set_rule(rule).await
        }
        async fn reset_rules(&self, s: &Subject, p: Option<&RoomPattern>) -> Result<u64, StoreError> {
            self.inner.reset_rules(s, p).await
        }
        async fn add_ban(&self, ban: &Ban) -> Result<(), StoreError> {
            self.inner.add_ban(ban).await
        }
        async fn remove_ban(&self, t: &BanTarget, room: Option<&RoomName>) -> Result<u64, StoreError> {
            self.inner.remove_ban(t, room).await
        }
        async fn set_room(&self, room: &RoomName, settings: RoomSettings) -> Result<(), StoreError> {
            self.inner.set_room(room, settings).await
        }
        async fn slow_turn(
            &self,
            room: &RoomName,
            sender: &str,
            every: Duration,
        ) -> Result<Option<Duration>, StoreError> {
            self.inner.slow_turn(room, sender, every).await
        }
    }

    fn keyed() -> NewMessage {
        NewMessage::parse("general", Some("ana"), Some("hi"))
            .unwrap()
            .with_key(Some(IdempotencyKey::random()))
    }

    async fn held(store: &Scripted) -> usize {
        store.read(&RoomName::general(), Range::Latest, 10).await.unwrap().entries.len()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_reply_is_settled_under_the_key_and_answered_as_stored() {
        let store = Scripted::new([Fault::LostReply, Fault::Refused]);
        let appended = submit_settled(&store, keyed(), Duration::from_secs(10)).await.unwrap();
        assert!(!appended.replayed, "this send stored it: not a replay to its client");
        assert_eq!(held(&store).await, 1, "stored once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_certain_refusal_is_the_answer_at_once() {
        let store = Scripted::new([Fault::Refused, Fault::LostReply]);
        let error = submit_settled(&store, keyed(), Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert_eq!(store.faults_left(), 1, "no second try");
        assert_eq!(held(&store).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_unknown_try_a_refusal_proves_nothing_and_the_deadline_says_unknown() {
        let faults = std::iter::once(Fault::Unknown).chain((0..20).map(|_| Fault::Refused));
        let store = Scripted::new(faults);
        let error = submit_settled(&store, keyed(), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(error, StoreError::Unknown(_)), "{error:?}");
        assert!(store.faults_left() < 20, "it tried again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_never_answers_is_unknown_at_the_deadline() {
        let store = Scripted::new([Fault::Hang]);
        let error = submit_settled(&store, keyed(), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(error, StoreError::Unknown(_)), "{error:?}");
    }
}
