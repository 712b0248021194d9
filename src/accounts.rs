//! Accounts: users, API tokens and browser sessions, and the rules they keep.
//!
//! - A user's name is an [`Author`]; two users may not share a name's *skeleton* (UTS #39,
//!   taken of the lower-cased name), so no registered name is confusable with another, and the
//!   skeleton is the key a user is looked up by.
//! - Passwords are hashed with argon2id (the `argon2` crate's defaults); a sign-in for an
//!   unknown name verifies against a dummy hash, so it takes as long as a wrong password.
//! - Tokens and session ids are 256 random bits (`getrandom`), shown once and stored only as
//!   their SHA-256.
//! - A user's `epoch` is random and changes with the password: a session, or an open stream,
//!   signed in under another epoch is over ([`credential_holds`]).
//!
//! The CLI (`ssechat user`/`token`) and the sign-in routes both go through this module.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use sha2::{Digest, Sha256};

pub use crate::domain::{Session, Token, User, skeleton};

use crate::auth::Credential;
use crate::domain::{Author, FieldError, Timestamp};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no such user: {0}")]
    UnknownUser(String),
    #[error("the name {name:?} is taken: it is (or looks like) the registered user {existing:?}")]
    NameTaken { name: String, existing: String },
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("the password {0}")]
    BadPassword(&'static str),
    #[error("no such token (it was deleted, or never existed)")]
    UnknownToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Passwords longer than this are refused: argon2 hashes any length, but nobody types more.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// 256 random bits, URL-safe: a token or a session id.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How a secret is stored and looked up: its SHA-256, in hex.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn random_epoch() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    u64::from_le_bytes(bytes)
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.is_empty() {
        return Err(AccountError::BadPassword("is empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::BadPassword("is longer than 1024 bytes"));
    }
    Ok(())
}

/// The argon2id hash of `password` (a PHC string with its own salt).
pub fn hash_password(password: &str) -> String {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches `hash`; a damaged hash matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// What an unknown name's password is checked against, so it costs what a wrong one does.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&new_secret()))
}

/// Off the async threads: a hash takes tens of milliseconds of CPU.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("hashing does not panic")
}

pub async fn add_user(
    store: &dyn Store,
    name: &str,
    password: &str,
    admin: bool,
) -> Result<User, AccountError> {
    let name = Author::parse(name).map_err(|e| FieldError::new("name", e.problem))?;
    check_password(password)?;
    let password = password.to_owned();
    let hash = blocking(move || hash_password(&password)).await;
    let user = User { name, admin, password: hash, epoch: random_epoch(), created: Timestamp::now() };
    match store.add_user(&user).await? {
        None => Ok(user),
        Some(existing) => Err(AccountError::NameTaken {
            name: user.name.as_str().to_owned(),
            existing: existing.as_str().to_owned(),
        }),
    }
}

/// A new password, and a new epoch: every session and stream of the user ends.
pub async fn set_password(store: &dyn Store, name: &str, password: &str) -> Result<(), AccountError> {
    check_password(password)?;
    let user = find(store, name).await?;
    let password = password.to_owned();
    let hash = blocking(move || hash_password(&password)).await;
    if !store.set_password(&user.name, &hash, random_epoch()).await? {
        return Err(AccountError::UnknownUser(name.to_owned()));
    }
    Ok(())
}

/// Deletes the user and their tokens; their sessions and streams end.
pub async fn delete_user(store: &dyn Store, name: &str) -> Result<(), AccountError> {
    let user = find(store, name).await?;
    if !store.delete_user(&user.name).await? {
        return Err(AccountError::UnknownUser(name.to_owned()));
    }
    Ok(())
}

/// The user registered under `name` (or a name that looks the same).
pub async fn find(store: &dyn Store, name: &str) -> Result<User, AccountError> {
    store.user(&skeleton(name)).await?.ok_or_else(|| AccountError::UnknownUser(name.to_owned()))
}

/// A new token for `name`; the secret is returned once and only its hash is kept.
pub async fn add_token(
    store: &dyn Store,
    name: &str,
    expires: Option<Duration>,
    label: &str,
) -> Result<(String, Token), AccountError> {
    let user = find(store, name).await?;
    let secret = new_secret();
    let now = Timestamp::now();
    let expires = expires.map(|d| later(now, d));
    let token = Token {
        hash: hash_secret(&secret),
        owner: user.name,
        label: label.to_owned(),
        expires,
        created: now,
    };
    store.add_token(&token).await?;
    Ok((secret, token))
}

pub async fn delete_token(store: &dyn Store, secret: &str) -> Result<(), AccountError> {
    match store.delete_token(&hash_secret(secret.trim())).await? {
        true => Ok(()),
        false => Err(AccountError::UnknownToken),
    }
}

fn later(now: Timestamp, by: Duration) -> Timestamp {
    let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(now.millis().saturating_add(ms)).unwrap_or(now)
}

/// The user `name` if `password` is theirs. An unknown name costs one argon2 verification
/// too, against a dummy hash, and gives the same `None`.
pub async fn check_sign_in(
    store: &dyn Store,
    name: &str,
    password: &str,
) -> Result<Option<User>, StoreError> {
    let user = store.user(&skeleton(name)).await?;
    let hash = user.as_ref().map_or_else(|| dummy_hash().to_owned(), |u| u.password.clone());
    let password = password.to_owned();
    let matches = blocking(move || verify_password(&password, &hash)).await;
    Ok(user.filter(|_| matches))
}

/// Starts a session for `user`: the id to put in the cookie (only its hash is stored).
pub async fn open_session(store: &dyn Store, user: &User, ttl: Duration) -> Result<String, StoreError> {
    let id = new_secret();
    let session = Session {
        hash: hash_secret(&id),
        owner: user.name.clone(),
        epoch: user.epoch,
        expires: later(Timestamp::now(), ttl),
    };
    store.add_session(&session).await?;
    Ok(id)
}

/// A session's expiry moves on at most this often, so a busy page doesn't write each request.
const EXTEND_EVERY: Duration = Duration::from_secs(60);

/// The user a session id belongs to, if it is current (not expired, same password), and
/// whether its expiry moved. Sliding: each use moves its expiry to `ttl` from now (at most
/// once a minute), and the cookie is then set again to match.
pub async fn session_user(
    store: &dyn Store,
    id: &str,
    ttl: Duration,
) -> Result<Option<(User, bool)>, StoreError> {
    let hash = hash_secret(id);
    let Some(session) = store.session(&hash).await? else { return Ok(None) };
    let Some(user) = store.user(&skeleton(session.owner.as_str())).await? else { return Ok(None) };
    if user.epoch != session.epoch {
        return Ok(None);
    }
    let now = Timestamp::now();
    let renewed = later(now, ttl);
    let extend = renewed.millis() - session.expires.millis() >= EXTEND_EVERY.as_millis() as i64;
    if extend {
        store.extend_session(&hash, renewed).await?;
    }
    Ok(Some((user, extend)))
}

/// The user a token belongs to, if it is known and not expired.
pub async fn token_user(store: &dyn Store, secret: &str) -> Result<Option<User>, StoreError> {
    let Some(token) = store.token(&hash_secret(secret)).await? else { return Ok(None) };
    if token.expires.is_some_and(|at| at.millis() <= Timestamp::now().millis()) {
        return Ok(None);
    }
    store.user(&skeleton(token.owner.as_str())).await
}

/// Whether what `credential` proved still holds: the user exists, with the same password.
/// For open streams, checked when the directory changes. A store that can't answer keeps
/// the stream (it is checked again at the next change).
pub async fn credential_holds(store: &dyn Store, credential: &Credential) -> bool {
    match store.user(&skeleton(credential.user.as_str())).await {
        Ok(Some(user)) => user.epoch == credential.epoch && user.name == credential.user,
        Ok(None) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_fold_case_and_confusables() {
        assert_eq!(skeleton("Ana"), skeleton("ana"));
        assert_eq!(skeleton("аna"), skeleton("ana"), "Cyrillic а");
        assert_eq!(skeleton("Сосо"), skeleton("coco"), "all Cyrillic");
        assert_eq!(skeleton("paypal"), skeleton("paypaI"));
        assert_ne!(skeleton("ana"), skeleton("bob"));
    }

    #[test]
    fn secrets_are_256_bits_and_stored_as_their_hash() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), a);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));
    }
}
