//! The contract for deletes and edits: entries of the log with their own ids.

use std::future::Future;
use std::sync::Arc;

use super::{ids, new};
use crate::domain::{Change, Entry, IdempotencyKey, MessageId, MessageText, RoomName, TakeBack};
use crate::hub::Hub;
use crate::store::{Range, Retention, Store};
use crate::wire::Event;

pub async fn run_all<F, Fut>(make: &F)
where
    F: Fn(Arc<Hub>, Retention) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let hub = Hub::new(64);
    deletes_and_edits_are_entries_with_their_own_ids(
        make(Arc::clone(&hub), Retention::count(100)).await,
        hub,
    )
    .await;
    only_held_undeleted_messages_can_be_taken_back(make(Hub::new(64), Retention::count(100)).await).await;
    one_of_concurrent_deletes_is_logged(make(Hub::new(64), Retention::count(100)).await).await;
    retention_counts_entries_like_messages(make(Hub::new(64), Retention::count(3)).await).await;
    keys_still_work_among_entries(make(Hub::new(64), Retention::count(100)).await).await;
}

pub fn delete(room: &str, target: MessageId) -> TakeBack {
    TakeBack { room: RoomName::parse(room).unwrap(), target, change: Change::Delete }
}

pub fn edit(room: &str, target: MessageId, text: &str) -> TakeBack {
    TakeBack {
        room: RoomName::parse(room).unwrap(),
        target,
        change: Change::Edit(MessageText::parse(text).unwrap()),
    }
}

async fn deletes_and_edits_are_entries_with_their_own_ids(store: Arc<dyn Store>, hub: Arc<Hub>) {
    let room = RoomName::parse("tb").unwrap();
    let mut sub = super::followed(&hub, &room).await;
    let one = store.append(new("tb", "one")).await.unwrap();
    let base = one.id - 1;
    store.append(new("tb", "two")).await.unwrap();
    store.append(new("tb", "three")).await.unwrap();

    let Some(Entry::Edit { id, message }) =
        store.take_back(edit("tb", base + 1, "one, edited")).await.unwrap()
    else {
        panic!("an edit entry")
    };
    assert_eq!(id, base + 4, "its own id, from the room's sequence");
    assert_eq!((message.id, message.text.as_str()), (base + 1, "one, edited"));
    assert_eq!((&message.author, message.time), (&one.author, one.time), "the rest is the message's");
    assert!(message.edited.is_some_and(|t| t >= one.time));
    let deleted = store.take_back(delete("tb", base + 2)).await.unwrap().unwrap();
    assert_eq!((deleted.id(), deleted.target()), (base + 5, base + 2));
    assert!(matches!(deleted, Entry::Delete { .. }));
    let again = store.take_back(edit("tb", base + 1, "one, again")).await.unwrap().unwrap();
    assert_eq!(again.id(), base + 6);
    assert_eq!(store.append(new("tb", "four")).await.unwrap().id, base + 7, "messages follow on");

    // The log holds every entry; its current state folds them.
    let log = store.read(&room, Range::After(0), 100).await.unwrap();
    assert_eq!(ids(&log), (1..=7).map(|n| base + n).collect::<Vec<_>>());
    let now: Vec<(MessageId, String, bool)> = store
        .read(&room, Range::Latest, 100)
        .await
        .unwrap()
        .current()
        .into_iter()
        .map(|m| (m.id - base, m.text.to_string(), m.edited.is_some()))
        .collect();
    assert_eq!(now, [(1, "one, again".into(), true), (3, "three".into(), false), (7, "four".into(), false)]);
    assert_eq!(store.message(&room, base + 1).await.unwrap().unwrap().text.as_str(), "one, again");
    assert_eq!(store.message(&room, base + 2).await.unwrap(), None, "deleted");
    assert_eq!(store.message(&room, base + 3).await.unwrap().unwrap().edited, None);

    // Published in id order, as what they are.
    let mut published = Vec::new();
    for _ in 0..7 {
        let frame = sub.receiver().recv().await.unwrap();
        let kind = match frame.event() {
            Event::Message(_) => "message",
            Event::Delete { target, .. } => {
                assert_eq!(*target, base + 2);
                "delete"
            }
            Event::Edit { message, .. } => {
                assert_eq!(message.id, base + 1);
                "edit"
            }
            other => panic!("unexpected {other:?}"),
        };
        published.push((frame.id().unwrap() - base, kind));
    }
    let expected = [
        (1, "message"),
        (2, "message"),
        (3, "message"),
        (4, "edit"),
        (5, "delete"),
        (6, "edit"),
        (7, "message"),
    ];
    assert_eq!(published, expected);
}

async fn only_held_undeleted_messages_can_be_taken_back(store: Arc<dyn Store>) {
    let base = store.append(new("held", "one")).await.unwrap().id - 1;
    store.take_back(delete("held", base + 1)).await.unwrap().unwrap();
    store.append(new("held", "two")).await.unwrap();
    let edit_entry = store.take_back(edit("held", base + 3, "two!")).await.unwrap().unwrap().id();
    for refused in [
        delete("held", base + 1),
        edit("held", base + 1, "back from the dead?"),
        delete("held", base + 2),
        delete("held", edit_entry),
        edit("held", base + 99, "never given"),
        delete("nowhere", base + 3),
    ] {
        assert_eq!(store.take_back(refused.clone()).await.unwrap(), None, "{refused:?}");
    }
    let room = RoomName::parse("held").unwrap();
    let page = store.read(&room, Range::Latest, 100).await.unwrap();
    assert_eq!(page.last_id, edit_entry, "refusals log nothing");
    assert_eq!(store.message(&room, base + 2).await.unwrap(), None, "a delete entry is no message");
    assert!(
        store.read(&RoomName::parse("nowhere").unwrap(), Range::Latest, 10).await.unwrap().entries.is_empty()
    );
}

async fn one_of_concurrent_deletes_is_logged(store: Arc<dyn Store>) {
    let target = store.append(new("race", "x")).await.unwrap().id;
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.take_back(delete("race", target)).await.unwrap() })
        })
        .collect();
    let mut logged = 0;
    for t in tries {
        logged += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(logged, 1);
    let page = store.read(&RoomName::parse("race").unwrap(), Range::After(0), 100).await.unwrap();
    assert_eq!(ids(&page), [target, target + 1]);
}

/// With a retention of 3 entries: deletes and edits count like messages.
async fn retention_counts_entries_like_messages(store: Arc<dyn Store>) {
    let room = RoomName::parse("kept").unwrap();
    let base = store.append(new("kept", "a")).await.unwrap().id - 1;
    store.append(new("kept", "b")).await.unwrap();
    store.take_back(edit("kept", base + 1, "a2")).await.unwrap().unwrap();
    store.take_back(delete("kept", base + 2)).await.unwrap().unwrap();
    let page = store.read(&room, Range::After(0), 100).await.unwrap();
    assert_eq!(ids(&page), [base + 2, base + 3, base + 4]);
    assert_eq!(page.first_held, base + 2);
    // The edited message itself is no longer held: its edit alone shows nothing.
    assert!(page.current().is_empty());
    assert_eq!(store.take_back(delete("kept", base + 1)).await.unwrap(), None, "no longer held");
    let rooms = store.rooms(10).await.unwrap();
    assert_eq!(rooms[0].messages, 3, "entries held");
}

async fn keys_still_work_among_entries(store: Arc<dyn Store>) {
    let key = Some(IdempotencyKey::parse("key", "k1").unwrap());
    let first = store.submit(new("keyed", "once").with_key(key.clone())).await.unwrap();
    store.take_back(edit("keyed", first.message.id, "edited")).await.unwrap().unwrap();
    let retry = store.submit(new("keyed", "once").with_key(key.clone())).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.message, first.message, "what was stored then, as it was");
    let room = RoomName::parse("keyed").unwrap();
    assert_eq!(store.find(&room, key.as_ref().unwrap()).await.unwrap(), Some(first.message.clone()));
    let page = store.read(&room, Range::After(0), 100).await.unwrap();
    assert_eq!(ids(&page), [first.message.id, first.message.id + 1], "no duplicate stored");
}
