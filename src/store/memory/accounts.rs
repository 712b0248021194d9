//! The memory store's accounts: maps behind one lock, gone on restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::domain::{Author, Timestamp};
use crate::domain::{Session, Token, User, skeleton};

/// A std mutex: nothing awaits while holding it.
#[derive(Default)]
pub(super) struct Directory(Mutex<Held>);

#[derive(Default)]
struct Held {
    /// By skeleton.
    users: BTreeMap<String, User>,
    /// By hash.
    tokens: HashMap<String, Token>,
    /// By hash.
    sessions: HashMap<String, Session>,
}

fn expired(session: &Session, now: Timestamp) -> bool {
    session.expires.millis() <= now.millis()
}

impl Directory {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0.lock().expect("accounts lock poisoned")
    }

    pub(super) fn add_user(&self, user: &User) -> Option<Author> {
        let mut held = self.lock();
        let key = skeleton(user.name.as_str());
        if let Some(existing) = held.users.get(&key) {
            return Some(existing.name.clone());
        }
        held.users.insert(key, user.clone());
        None
    }

    pub(super) fn user(&self, skeleton: &str) -> Option<User> {
        self.lock().users.get(skeleton).cloned()
    }

    pub(super) fn users(&self) -> Vec<User> {
        let mut users: Vec<User> = self.lock().users.values().cloned().collect();
        users.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        users
    }

    pub(super) fn set_password(&self, name: &Author, hash: &str, epoch: u64) -> bool {
        let mut held = self.lock();
        let Some(user) = held.users.get_mut(&skeleton(name.as_str())) else { return false };
        user.password = hash.to_owned();
        user.epoch = epoch;
        true
    }

    pub(super) fn delete_user(&self, name: &Author) -> bool {
        let mut held = self.lock();
        let gone = held.users.remove(&skeleton(name.as_str())).is_some();
        held.tokens.retain(|_, token| &token.owner != name);
        gone
    }

    pub(super) fn add_token(&self, token: &Token) {
        self.lock().tokens.insert(token.hash.clone(), token.clone());
    }

    pub(super) fn token(&self, hash: &str) -> Option<Token> {
        self.lock().tokens.get(hash).cloned()
    }

    pub(super) fn tokens(&self, owner: &Author) -> Vec<Token> {
        let mut tokens: Vec<Token> =
            self.lock().tokens.values().filter(|t| &t.owner == owner).cloned().collect();
        tokens.sort_by_key(|t| t.created.millis());
        tokens
    }

    pub(super) fn delete_token(&self, hash: &str) -> bool {
        self.lock().tokens.remove(hash).is_some()
    }

    /// Also forgets the sessions that expired.
    pub(super) fn add_session(&self, session: &Session) {
        let now = Timestamp::now();
        let mut held = self.lock();
        held.sessions.retain(|_, s| !expired(s, now));
        held.sessions.insert(session.hash.clone(), session.clone());
    }

    pub(super) fn session(&self, hash: &str) -> Option<Session> {
        self.lock().sessions.get(hash).filter(|s| !expired(s, Timestamp::now())).cloned()
    }

    pub(super) fn extend_session(&self, hash: &str, expires: Timestamp) {
        if let Some(session) = self.lock().sessions.get_mut(hash) {
            session.expires = expires;
        }
    }

    pub(super) fn delete_session(&self, hash: &str) {
        self.lock().sessions.remove(hash);
    }
}
