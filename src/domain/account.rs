//! Accounts as the store keeps them: users, API tokens and browser sessions (the rules they
//! keep are in `accounts.rs`).

use super::{Author, Timestamp};

/// A registered user, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub name: Author,
    pub admin: bool,
    /// The argon2id hash, as a PHC string.
    pub password: String,
    /// Changes with the password: what signed in under an older one is over.
    pub epoch: u64,
    pub created: Timestamp,
}

/// An API token, as stored: only the hash of the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub hash: String,
    pub owner: Author,
    pub label: String,
    pub expires: Option<Timestamp>,
    pub created: Timestamp,
}

/// A browser session, as stored: only the hash of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub hash: String,
    pub owner: Author,
    /// The owner's epoch at sign-in.
    pub epoch: u64,
    pub expires: Timestamp,
}

/// A user's key in the store: the UTS #39 skeleton of their name, lower-cased, and the
/// skeleton of that (`I` looks like `l` before lower-casing, `і` like `i` after), so that
/// `Coco`, `coco`, `сосо` (Cyrillic) and `CocO` are one user.
pub fn skeleton(name: &str) -> String {
    let once: String = unicode_security::skeleton(name).collect::<String>().to_lowercase();
    unicode_security::skeleton(&once).collect()
}
