//! The contract for rules, bans, room settings, the generation and slow-mode turns.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{RoomName, Timestamp};
use crate::rules::{Ban, BanTarget, Perm, RoomPattern, RoomSettings, Rule, Subject};
use crate::store::Store;

fn rule(subject: &str, pattern: &str, perm: &str) -> Rule {
    Rule {
        subject: Subject::parse(subject).unwrap(),
        pattern: RoomPattern::parse(pattern).unwrap(),
        perm: Perm::parse(perm).unwrap(),
    }
}

fn sorted(mut rules: Vec<Rule>) -> Vec<String> {
    let mut shown: Vec<String> = rules.drain(..).map(|r| r.to_string()).collect();
    shown.sort();
    shown
}

pub async fn rules_are_set_replaced_and_reset(store: Arc<dyn Store>) {
    let start = store.generation().await.unwrap();
    store.set_rule(&rule("*", "*", "ro")).await.unwrap();
    store.set_rule(&rule("ana", "dev-*", "rw")).await.unwrap();
    store.set_rule(&rule("ana", "ops", "deny")).await.unwrap();
    store.set_rule(&rule("@users", "*", "rw")).await.unwrap();
    store.set_rule(&rule("*", "*", "deny")).await.unwrap(); // replaces `* * ro`
    let dir = store.directory().await.unwrap();
    assert_eq!(sorted(dir.rules), ["* * deny", "@users * rw", "ana dev-* rw", "ana ops deny"]);
    assert_eq!(dir.generation, store.generation().await.unwrap());
    assert!(dir.generation >= start + 5, "every write moves the generation");
    let ana = Subject::parse("ana").unwrap();
    let ops = RoomPattern::parse("ops").unwrap();
    assert_eq!(store.reset_rules(&ana, Some(&ops)).await.unwrap(), 1);
    assert_eq!(sorted(store.directory().await.unwrap().rules), ["* * deny", "@users * rw", "ana dev-* rw"]);
    store.set_rule(&rule("ana", "x", "mod")).await.unwrap();
    assert_eq!(store.reset_rules(&ana, None).await.unwrap(), 2);
    assert_eq!(store.reset_rules(&ana, None).await.unwrap(), 0);
    assert_eq!(sorted(store.directory().await.unwrap().rules), ["* * deny", "@users * rw"]);
}

pub async fn bans_and_room_settings_round_trip(store: Arc<dyn Store>) {
    let room = RoomName::parse("lobby").unwrap();
    let until = Timestamp::from_millis(Timestamp::now().millis() + 60_000).unwrap();
    let user = Ban { target: BanTarget::parse("ana").unwrap(), room: Some(room.clone()), until: Some(until) };
    let net = Ban { target: BanTarget::parse("10.0.0.0/8").unwrap(), room: None, until: None };
    let before = store.generation().await.unwrap();
    store.add_ban(&user).await.unwrap();
    store.add_ban(&net).await.unwrap();
    store.set_room(&room, RoomSettings { slow: Some(Duration::from_secs(30)) }).await.unwrap();
    let dir = store.directory().await.unwrap();
    assert_eq!(dir.generation, before + 3);
    assert_eq!(dir.bans.len(), 2);
    assert!(dir.bans.contains(&user) && dir.bans.contains(&net), "{:?}", dir.bans);
    assert_eq!(dir.settings(&room).slow, Some(Duration::from_secs(30)));
    assert_eq!(store.remove_ban(&user.target, None).await.unwrap(), 0, "the room counts");
    assert_eq!(store.remove_ban(&user.target, Some(&room)).await.unwrap(), 1);
    assert_eq!(store.remove_ban(&net.target, None).await.unwrap(), 1);
    store.set_room(&room, RoomSettings::default()).await.unwrap();
    let dir = store.directory().await.unwrap();
    assert!(dir.bans.is_empty() && dir.rooms.is_empty(), "{dir:?}");
    assert_eq!(dir.generation, before + 7, "every write counts, even one that changed nothing");
}

pub async fn slow_turns_come_once_per_interval(store: Arc<dyn Store>) {
    let room = RoomName::parse("slow").unwrap();
    let every = Duration::from_secs(60);
    assert_eq!(store.slow_turn(&room, "ana", every).await.unwrap(), None);
    let wait = store.slow_turn(&room, "ana", every).await.unwrap().expect("a second turn waits");
    assert!(wait > Duration::from_secs(50) && wait <= every, "{wait:?}");
    assert_eq!(store.slow_turn(&room, "bob", every).await.unwrap(), None, "per sender");
    let other = RoomName::parse("other").unwrap();
    assert_eq!(store.slow_turn(&other, "ana", every).await.unwrap(), None, "per room");
}
