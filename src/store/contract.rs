//! The contract every store keeps, run against each backend.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

mod accounts;
mod policy;

use super::{Range, Retention, Store};
use crate::domain::{NewMessage, RoomName};
use crate::hub::Hub;

mod takeback;

fn new(room: &str, text: &str) -> NewMessage {
    NewMessage::parse(room, Some("ana"), Some(text)).unwrap()
}

fn ids(page: &super::Page) -> Vec<u64> {
    page.entries.iter().map(crate::domain::Entry::id).collect()
}

/// Runs every contract check on fresh stores made by `make(hub, retention)`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(Arc<Hub>, Retention) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    ids_are_per_room_and_increasing(make(Hub::new(64), Retention::count(100)).await).await;
    reads_respect_range_and_limit(make(Hub::new(64), Retention::count(100)).await).await;
    let hub = Hub::new(1024);
    publishes_in_id_order(make(Arc::clone(&hub), Retention::count(1000)).await, hub).await;
    retention_keeps_the_newest(make(Hub::new(64), Retention::count(3)).await).await;
    let young = Retention { age: Some(Duration::from_secs(3600)), ..Retention::count(100) };
    retention_by_age(make(Hub::new(64), young).await, false).await;
    let old = Retention { age: Some(Duration::from_millis(1)), ..Retention::count(100) };
    retention_by_age(make(Hub::new(64), old).await, true).await;
    rooms_list_active_rooms(make(Hub::new(64), Retention::count(100)).await).await;
    rooms_are_listed_in_activity_order_with_their_counts(make(Hub::new(64), Retention::count(2)).await).await;
    expired_rooms_are_forgotten_and_their_ids_go_on(make(Hub::new(64), old).await).await;
    let hub = Hub::new(64);
    a_key_is_stored_once(make(Arc::clone(&hub), Retention::count(100)).await, hub).await;
    takeback::run_all(&make).await;
    accounts::run_all(make(Hub::new(64), Retention::count(100)).await).await;
    a_signed_message_says_so(make(Hub::new(64), Retention::count(100)).await).await;
    policy::rules_are_set_replaced_and_reset(make(Hub::new(4), Retention::count(10)).await).await;
    policy::bans_and_room_settings_round_trip(make(Hub::new(4), Retention::count(10)).await).await;
    policy::slow_turns_come_once_per_interval(make(Hub::new(4), Retention::count(10)).await).await;
}

async fn a_signed_message_says_so(store: Arc<dyn Store>) {
    let ana = crate::domain::Author::parse("Ana").unwrap();
    let signed = store.append(new("signed", "from Ana").signed_by(&ana)).await.unwrap();
    let guest = store.append(new("signed", "from a guest")).await.unwrap();
    assert!(signed.user && !guest.user);
    let page = store.read(&RoomName::parse("signed").unwrap(), Range::Latest, 10).await.unwrap();
    let messages = page.current();
    let users: Vec<_> = messages.iter().map(|m| (m.author.as_str(), m.user)).collect();
    assert_eq!(users, [("Ana", true), ("ana", false)]);
    // An edit keeps who sent the message.
    let change = crate::domain::TakeBack {
        room: RoomName::parse("signed").unwrap(),
        target: signed.id,
        change: crate::domain::Change::Edit(crate::domain::MessageText::parse("edited").unwrap()),
    };
    store.take_back(change).await.unwrap().expect("the message is held");
    let page = store.read(&RoomName::parse("signed").unwrap(), Range::Latest, 10).await.unwrap();
    let edited = page.current().into_iter().find(|m| m.id == signed.id).unwrap();
    assert!(edited.user && edited.edited.is_some(), "{edited:?}");
}

/// Subscribes to `room` once everything published to it reaches `hub` (a shared store
/// listens to a room only while the hub has it open); what came before (a resync) is skipped.
async fn followed(hub: &Arc<Hub>, room: &RoomName) -> crate::hub::Subscription {
    let mut sub = hub.subscribe(room);
    sub.followed().await;
    while sub.receiver().try_recv().is_ok() {}
    sub
}

async fn a_key_is_stored_once(store: Arc<dyn Store>, hub: Arc<Hub>) {
    let room = RoomName::parse("keys").unwrap();
    let mut sub = followed(&hub, &room).await;
    let key = |k: &str| Some(crate::domain::IdempotencyKey::parse("key", k).unwrap());
    let first = store.submit(new("keys", "once").with_key(key("k1"))).await.unwrap();
    assert!(!first.replayed);
    // Where this room's ids start depends on the store (a forgetting store starts each life
    // high: `first_id_base`); what follows is relative to it.
    let base = first.message.id - 1;
    let retry = store.submit(new("keys", "once, retried").with_key(key("k1"))).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.message, first.message, "the original comes back");
    // `find` gives back what a retry would, and stores nothing.
    let k1 = key("k1").unwrap();
    assert_eq!(store.find(&room, &k1).await.unwrap(), Some(first.message.clone()));
    assert_eq!(store.find(&room, &key("unknown").unwrap()).await.unwrap(), None);
    let nowhere = RoomName::parse("nowhere").unwrap();
    assert_eq!(store.find(&nowhere, &k1).await.unwrap(), None, "a key belongs to its room");
    let other = store.submit(new("keys", "another").with_key(key("k2"))).await.unwrap();
    assert_eq!(other.message.id, base + 2);
    // The same key in another room is another message.
    let elsewhere = store.submit(new("other-keys", "x").with_key(key("k1"))).await.unwrap();
    assert!(!elsewhere.replayed);
    // Concurrent retries of one key: exactly one stores.
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.submit(new("keys", "burst").with_key(key("k3"))).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for t in tries {
        stored += usize::from(!t.await.unwrap().replayed);
    }
    assert_eq!(stored, 1);
    let page = store.read(&room, Range::After(0), 100).await.unwrap();
    assert_eq!(ids(&page), vec![base + 1, base + 2, base + 3], "no duplicate stored");
    // Each stored message was published once; replays are not published.
    for expected in 1..=3 {
        assert_eq!(sub.receiver().recv().await.unwrap().id(), Some(base + expected));
    }
    assert!(sub.receiver().try_recv().is_err());
}

async fn ids_are_per_room_and_increasing(store: Arc<dyn Store>) {
    let a1 = store.append(new("a", "one")).await.unwrap();
    let b1 = store.append(new("b", "one")).await.unwrap();
    let a2 = store.append(new("a", "two")).await.unwrap();
    assert!(a1.id >= 1 && b1.id >= 1);
    assert_eq!(a2.id, a1.id + 1, "a room's ids follow on, whatever other rooms do");
    assert_eq!(a2.text.as_str(), "two");
    assert_eq!(a2.author.as_str(), "ana");
    assert!(a2.time >= a1.time);

    let empty = store.read(&RoomName::parse("nobody").unwrap(), Range::Latest, 10).await.unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.first_held, empty.last_id + 1, "an empty room: nothing held, nothing missing");
}

async fn reads_respect_range_and_limit(store: Arc<dyn Store>) {
    let room = RoomName::parse("r").unwrap();
    let base = store.append(new("r", "m1")).await.unwrap().id - 1;
    for i in 2..=10 {
        store.append(new("r", &format!("m{i}"))).await.unwrap();
    }
    let at = |ns: &[u64]| ns.iter().map(|n| base + n).collect::<Vec<_>>();
    let all = store.read(&room, Range::After(0), 100).await.unwrap();
    assert_eq!(ids(&all), at(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    assert_eq!(all.entries[4].as_message().unwrap().text.as_str(), "m5");
    assert_eq!((all.first_held, all.last_id), (base + 1, base + 10));
    assert_eq!(ids(&store.read(&room, Range::After(base + 7), 100).await.unwrap()), at(&[8, 9, 10]));
    assert_eq!(ids(&store.read(&room, Range::After(base + 2), 3).await.unwrap()), at(&[3, 4, 5]));
    assert_eq!(ids(&store.read(&room, Range::Latest, 3).await.unwrap()), at(&[8, 9, 10]));
    assert!(store.read(&room, Range::After(base + 10), 100).await.unwrap().entries.is_empty());
}

async fn publishes_in_id_order(store: Arc<dyn Store>, hub: Arc<Hub>) {
    let room = RoomName::parse("order").unwrap();
    let mut sub = followed(&hub, &room).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(new("order", &format!("m{i}"))).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let first = sub.receiver().recv().await.unwrap().id().unwrap();
    for expected in 1..50 {
        let frame = sub.receiver().recv().await.unwrap();
        assert_eq!(frame.id(), Some(first + expected));
    }
}

async fn retention_keeps_the_newest(store: Arc<dyn Store>) {
    let room = RoomName::parse("small").unwrap();
    let base = store.append(new("small", "m1")).await.unwrap().id - 1;
    for i in 2..=5 {
        store.append(new("small", &format!("m{i}"))).await.unwrap();
    }
    let page = store.read(&room, Range::After(0), 100).await.unwrap();
    assert_eq!(ids(&page), vec![base + 3, base + 4, base + 5]);
    assert_eq!((page.first_held, page.last_id), (base + 3, base + 5));
    // Ids keep counting after old messages go.
    assert_eq!(store.append(new("small", "m6")).await.unwrap().id, base + 6);
}

/// With `expired`, the retention age is shorter than the wait: nothing is held any more.
async fn retention_by_age(store: Arc<dyn Store>, expired: bool) {
    let room = RoomName::parse("aging").unwrap();
    let base = store.append(new("aging", "m1")).await.unwrap().id - 1;
    for i in 2..=3 {
        store.append(new("aging", &format!("m{i}"))).await.unwrap();
    }
    // Let the clock pass the 1 ms retention of the `expired` case.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let page = store.read(&room, Range::After(0), 100).await.unwrap();
    let rooms = store.rooms(10).await.unwrap();
    if expired {
        assert!(page.entries.is_empty());
        assert_eq!((page.first_held, page.last_id), (base + 4, base + 3));
        assert!(rooms.is_empty(), "a room with nothing held is not active");
        assert_eq!(store.append(new("aging", "m4")).await.unwrap().id, base + 4, "ids go on");
    } else {
        assert_eq!(ids(&page), vec![base + 1, base + 2, base + 3]);
        assert_eq!(rooms.len(), 1);
    }
}

async fn rooms_list_active_rooms(store: Arc<dyn Store>) {
    assert!(store.rooms(10).await.unwrap().is_empty());
    store.append(new("alpha", "1")).await.unwrap();
    store.append(new("beta", "1")).await.unwrap();
    store.append(new("beta", "2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await; // distinct millisecond timestamps
    let last = store.append(new("alpha", "2")).await.unwrap();
    store.append(new("alpha", "3")).await.unwrap();
    let rooms = store.rooms(10).await.unwrap();
    let summary: Vec<(&str, u64)> = rooms.iter().map(|r| (r.name.as_str(), r.messages)).collect();
    assert_eq!(summary, vec![("alpha", 3), ("beta", 2)], "most recently active first");
    assert!(rooms[0].last_activity >= last.time);
    assert_eq!(store.rooms(1).await.unwrap().len(), 1);
}

async fn rooms_are_listed_in_activity_order_with_their_counts(store: Arc<dyn Store>) {
    // Retention 2: a room's count is what it holds, not what it was sent.
    for n in 0..150 {
        for m in 0..=(n % 3) {
            store.append(new(&format!("r{n}"), &format!("m{m}"))).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(5)).await; // a distinct millisecond
    store.append(new("r0", "again")).await.unwrap();
    let all = store.rooms(1000).await.unwrap();
    assert_eq!(all.len(), 150);
    assert_eq!((all[0].name.as_str(), all[0].messages), ("r0", 2), "the newest first");
    assert!(all.windows(2).all(|w| w[0].last_activity >= w[1].last_activity), "in activity order");
    for room in &all[1..] {
        let n: u64 = room.name.as_str()[1..].parse().unwrap();
        assert_eq!(room.messages, (n % 3 + 1).min(2), "{}", room.name);
    }
    // A shorter list is the start of the longer one.
    assert_eq!(store.rooms(10).await.unwrap(), all[..10]);
    assert!(store.rooms(0).await.unwrap().is_empty());
}

/// With a 1 ms retention age: once pruned, a room whose messages all expired is neither
/// listed nor held, yet reads as ending where it ended, and its ids go on.
async fn expired_rooms_are_forgotten_and_their_ids_go_on(store: Arc<dyn Store>) {
    let first = store.append(new("gone", "x")).await.unwrap().id;
    for room in ["gone", "also-gone"] {
        store.append(new(room, "x")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await; // past the 1 ms retention
    // (A background pass may have been first: what counts is what is left.)
    store.prune().await.unwrap();
    assert!(store.rooms(10).await.unwrap().is_empty());
    let page = store.read(&RoomName::parse("gone").unwrap(), Range::After(0), 10).await.unwrap();
    assert!(page.entries.is_empty());
    assert!(page.last_id > first && page.first_held == page.last_id + 1, "{page:?}");
    let next = store.append(new("gone", "back")).await.unwrap();
    assert!(next.id > first + 1, "ids are not reused: {}", next.id);
}
