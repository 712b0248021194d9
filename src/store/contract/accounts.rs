//! The accounts part of the contract: users, tokens, sessions.

use std::sync::Arc;

use crate::accounts::{self, Session, Token, User, skeleton};
use crate::domain::{Author, Timestamp};
use crate::store::Store;

fn name(s: &str) -> Author {
    Author::parse(s).unwrap()
}

fn user(n: &str) -> User {
    User { name: name(n), admin: false, password: "$argon2id$x".into(), epoch: 7, created: Timestamp::now() }
}

fn at(ms_from_now: i64) -> Timestamp {
    Timestamp::from_millis(Timestamp::now().millis() + ms_from_now).unwrap()
}

pub async fn run_all(store: Arc<dyn Store>) {
    users_are_unique_by_skeleton(&*store).await;
    passwords_change_with_the_epoch(&*store).await;
    tokens_belong_to_their_user(&*store).await;
    sessions_expire_and_slide(&*store).await;
    deleting_a_user_deletes_their_tokens(&*store).await;
}

async fn users_are_unique_by_skeleton(store: &dyn Store) {
    assert_eq!(store.add_user(&user("Ana")).await.unwrap(), None);
    assert_eq!(store.add_user(&user("ana")).await.unwrap(), Some(name("Ana")), "same name, other case");
    assert_eq!(store.add_user(&user("Coco")).await.unwrap(), None);
    assert_eq!(store.add_user(&user("Сосо")).await.unwrap(), Some(name("Coco")), "a confusable");
    assert_eq!(store.add_user(&user("paypaI")).await.unwrap(), None);
    assert_eq!(store.add_user(&user("PayPal")).await.unwrap(), Some(name("paypaI")), "I looks like l");
    let found = store.user(&skeleton("ANA")).await.unwrap().unwrap();
    assert_eq!(found, user("Ana").clone_with_time(found.created));
    assert_eq!(store.user(&skeleton("nobody")).await.unwrap(), None);
    store.add_user(&User { admin: true, ..user("Bob") }).await.unwrap();
    let names: Vec<_> = store.users().await.unwrap().into_iter().map(|u| (u.name, u.admin)).collect();
    assert_eq!(names[..2], [(name("Ana"), false), (name("Bob"), true)]);
}

async fn passwords_change_with_the_epoch(store: &dyn Store) {
    assert!(store.set_password(&name("Ana"), "$argon2id$y", 8).await.unwrap());
    let ana = store.user(&skeleton("ana")).await.unwrap().unwrap();
    assert_eq!((ana.password.as_str(), ana.epoch), ("$argon2id$y", 8));
    assert!(!store.set_password(&name("Nobody"), "h", 1).await.unwrap());
}

async fn tokens_belong_to_their_user(store: &dyn Store) {
    let token = |hash: &str, label: &str| Token {
        hash: accounts::hash_secret(hash),
        owner: name("Bob"),
        label: label.into(),
        expires: Some(at(60_000)),
        created: Timestamp::now(),
    };
    let one = token("one", "ci");
    store.add_token(&one).await.unwrap();
    store.add_token(&Token { expires: None, ..token("two", "laptop") }).await.unwrap();
    let found = store.token(&accounts::hash_secret("one")).await.unwrap().unwrap();
    assert_eq!((found.owner.as_str(), found.label.as_str()), ("Bob", "ci"));
    assert_eq!(found.expires.map(|t| t.millis()), one.expires.map(|t| t.millis()));
    let labels: Vec<_> = store.tokens(&name("Bob")).await.unwrap().into_iter().map(|t| t.label).collect();
    assert_eq!(labels.len(), 2);
    assert!(store.tokens(&name("Ana")).await.unwrap().is_empty());
    assert!(store.delete_token(&accounts::hash_secret("one")).await.unwrap());
    assert!(!store.delete_token(&accounts::hash_secret("one")).await.unwrap());
    assert_eq!(store.token(&accounts::hash_secret("one")).await.unwrap(), None);
    assert_eq!(store.tokens(&name("Bob")).await.unwrap().len(), 1);
}

async fn sessions_expire_and_slide(store: &dyn Store) {
    let session = |hash: &str, expires| Session { hash: hash.into(), owner: name("Ana"), epoch: 8, expires };
    store.add_session(&session("live", at(60_000))).await.unwrap();
    store.add_session(&session("expired", at(-1))).await.unwrap();
    let live = store.session("live").await.unwrap().unwrap();
    assert_eq!((live.owner.as_str(), live.epoch), ("Ana", 8));
    assert_eq!(store.session("expired").await.unwrap(), None);
    let later = at(3_600_000);
    store.extend_session("live", later).await.unwrap();
    assert_eq!(store.session("live").await.unwrap().unwrap().expires.millis(), later.millis());
    store.delete_session("live").await.unwrap();
    assert_eq!(store.session("live").await.unwrap(), None);
}

async fn deleting_a_user_deletes_their_tokens(store: &dyn Store) {
    assert!(store.delete_user(&name("Bob")).await.unwrap());
    assert!(!store.delete_user(&name("Bob")).await.unwrap());
    assert_eq!(store.user(&skeleton("bob")).await.unwrap(), None);
    assert_eq!(store.token(&accounts::hash_secret("two")).await.unwrap(), None);
    assert!(store.tokens(&name("Bob")).await.unwrap().is_empty());
    assert_eq!(store.add_user(&user("Bob")).await.unwrap(), None, "the name is free again");
}

impl User {
    fn clone_with_time(&self, created: Timestamp) -> User {
        User { created, ..self.clone() }
    }
}
