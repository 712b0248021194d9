//! No acknowledged write lost or doubled on a Redis Cluster: every write of the store waits
//! for a replica (`WAIT 1`) unless its primary has none, and every write carries a token of
//! its own (without a client key it is remembered briefly under it), so a request redis-rs
//! sends twice stores once and is not mistaken for a client's retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssechat::domain::{
    Change, Entry, IdempotencyKey, MessageId, MessageText, NewMessage, RoomName, TakeBack,
};
use ssechat::hub::Hub;
use ssechat::store::{Range, RedisStore, Store};

use super::{RedisCluster, node_query, room_per_primary, until};

async fn open(cluster: &RedisCluster) -> RedisStore {
    cluster.store(Hub::new(64)).await
}

fn new(room: &str, text: &str) -> NewMessage {
    NewMessage::parse(room, Some("ana"), Some(text)).unwrap()
}

/// `WAIT` commands the node on `port` ran since it started.
async fn waits(port: u16) -> u64 {
    let info: String = node_query(port, redis::cmd("INFO").arg("commandstats")).await.unwrap();
    let calls = info.lines().find_map(|l| l.strip_prefix("cmdstat_wait:calls=")?.split(',').next());
    calls.map_or(0, |n| n.parse().unwrap())
}

/// The keys matching `pattern` on the node on `port`, with their time to live (ms).
async fn keys_with_ttl(port: u16, pattern: &str) -> Vec<(String, i64)> {
    let keys: Vec<String> = node_query(port, redis::cmd("KEYS").arg(pattern)).await.unwrap();
    let mut found = Vec::new();
    for key in keys {
        let ttl: i64 = node_query(port, redis::cmd("PTTL").arg(&key)).await.unwrap();
        found.push((key, ttl));
    }
    found
}

/// What one append said: the room, the text (unique), and the id or an error.
type Record = (String, String, Result<MessageId, String>);

/// Appends to `rooms` in turn until `stop`, noting every outcome.
async fn keep_appending(
    store: RedisStore,
    tag: &str,
    rooms: Vec<String>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Record>>>,
) {
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let room = &rooms[n % rooms.len()];
        let text = format!("{tag}-{n}");
        let outcome = store.append(new(room, &text)).await.map(|m| m.id).map_err(|e| e.to_string());
        log.lock().unwrap().push((room.clone(), text, outcome));
    }
}

/// Everything `room` holds. A read may fail once just after a failover (seen once in many
/// runs, as a 503 would be): it is asked again, for a bounded time.
async fn read_all(reader: &RedisStore, room: &str) -> ssechat::store::Page {
    let room = RoomName::parse(room).unwrap();
    let read = async {
        loop {
            match reader.read(&room, Range::After(0), 100_000).await {
                Ok(page) => return page,
                Err(e) => eprintln!("reading {room} after the failover: {e:?}; again"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the room can be read after the failover")
}

fn acknowledged_in(log: &Mutex<Vec<Record>>, room: &str, from: usize) -> usize {
    log.lock().unwrap()[from..].iter().filter(|(r, _, outcome)| r == room && outcome.is_ok()).count()
}

/// Two nodes append to a room on every shard while one shard's primary is SIGKILLed: after
/// its replica took over, every append that was answered is in its room once, under the id
/// it was answered with, and one that failed is there at most once.
#[tokio::test]
async fn acknowledged_appends_outlive_a_killed_primary_once_each() {
    let mut cluster = RedisCluster::start().await;
    let rooms = room_per_primary(&cluster).await;
    let names: Vec<String> = rooms.values().cloned().collect();
    let (stop, log) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let mut writers = Vec::new();
    for tag in ["a", "b"] {
        let store = open(&cluster).await;
        writers.push(tokio::spawn(keep_appending(store, tag, names.clone(), stop.clone(), log.clone())));
    }
    let (&victim, victim_room) = rooms.iter().next().unwrap();
    until("appends before the kill", || async { acknowledged_in(&log, victim_room, 0) >= 30 }).await;
    cluster.kill_primary(victim).await;
    let mark = log.lock().unwrap().len();
    until("appends to the failed-over shard", || async { acknowledged_in(&log, victim_room, mark) >= 30 })
        .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    let reader = open(&cluster).await;
    let mut stored: HashMap<String, Vec<MessageId>> = HashMap::new();
    for name in &names {
        let page = read_all(&reader, name).await;
        for entry in page.entries {
            let Entry::Message(m) = entry else { panic!("only messages were written") };
            stored.entry(m.text.as_str().to_owned()).or_default().push(m.id);
        }
    }
    let log = log.lock().unwrap();
    let failed = log.iter().filter(|(_, _, outcome)| outcome.is_err()).count();
    for (room, text, outcome) in log.iter() {
        let ids = stored.get(text).map_or(&[][..], Vec::as_slice);
        match outcome {
            Ok(id) => assert_eq!(ids, [*id], "{room}: {text} acknowledged as {id}"),
            Err(e) => assert!(ids.len() <= 1, "{room}: {text} failed ({e}) and is stored {ids:?}"),
        }
    }
    eprintln!("{} appends, {failed} failed", log.len());
}

/// A write without a client key is remembered on a Cluster only briefly (under its attempt's
/// token), and answered as new; a client's key is remembered for a day, and only the client's
/// retry is answered as a replay.
#[tokio::test]
async fn an_append_without_a_key_is_remembered_for_a_minute_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let store = open(&cluster).await;
    let (&port, room) = room_per_primary(&cluster).await.iter().next().map(|(p, r)| (p, r.clone())).unwrap();
    let appended = store.submit(new(&room, "no key")).await.unwrap();
    assert!(!appended.replayed);
    let made_up = keys_with_ttl(port, &format!("ssechat:{{{room}}}:key:*")).await;
    assert_eq!(made_up.len(), 1, "one made-up key: {made_up:?}");
    assert!(made_up[0].1 > 0 && made_up[0].1 <= 60_000, "for a minute at most: {made_up:?}");
    let stored = store.find(&RoomName::parse(&room).unwrap(), &key_in(&made_up[0].0)).await.unwrap();
    assert_eq!(stored, Some(appended.message), "it names the message");

    let key = IdempotencyKey::parse("key", "client-key-1").unwrap();
    let keyed = new(&room, "keyed").with_key(Some(key));
    assert!(!store.submit(keyed.clone()).await.unwrap().replayed, "sent once");
    assert!(store.submit(keyed).await.unwrap().replayed, "the client's retry");
    let client = keys_with_ttl(port, &format!("ssechat:{{{room}}}:key:client-key-1")).await;
    assert!(client[0].1 > 3_600_000, "a client's key for a day: {client:?}");

    let target = store.append(new(&room, "to delete")).await.unwrap().id;
    let delete = TakeBack { room: RoomName::parse(&room).unwrap(), target, change: Change::Delete };
    store.take_back(delete).await.unwrap().expect("deleted");
    assert_eq!(keys_with_ttl(port, &format!("ssechat:{{{room}}}:key:*")).await.len(), 4, "take-backs too");
}

fn key_in(redis_key: &str) -> IdempotencyKey {
    IdempotencyKey::parse("key", redis_key.rsplit(':').next().unwrap()).unwrap()
}

/// An append and an edit on `room`.
async fn write_twice(store: &RedisStore, room: &str) {
    let target = store.append(new(room, "hello")).await.unwrap().id;
    let text = MessageText::parse("edited").unwrap();
    let edit = TakeBack { room: RoomName::parse(room).unwrap(), target, change: Change::Edit(text) };
    store.take_back(edit).await.unwrap().expect("edited");
}

/// Every write (append, take-back) waits for a replica on its own primary.
#[tokio::test]
async fn every_write_on_a_cluster_waits_for_a_replica_on_its_primary() {
    let cluster = RedisCluster::start().await;
    let store = open(&cluster).await;
    let rooms = room_per_primary(&cluster).await;
    for room in rooms.values() {
        // A node runs a script it doesn't know yet twice (NOSCRIPT, load, again), WAIT too.
        write_twice(&store, room).await;
    }
    let before: Vec<u64> = futures_util::future::join_all(rooms.keys().map(|&p| waits(p))).await;
    for room in rooms.values() {
        write_twice(&store, room).await;
    }
    for (&port, before) in rooms.keys().zip(before) {
        assert_eq!(waits(port).await - before, 2, "the primary on {port}: one WAIT per write");
    }
}

/// A shard whose replica is gone keeps taking writes, without every write waiting for the
/// replica; the other shards still wait.
#[tokio::test]
async fn a_primary_without_its_replica_takes_writes_without_waiting_on_each() {
    let mut cluster = RedisCluster::start().await;
    let store = open(&cluster).await;
    let rooms = room_per_primary(&cluster).await;
    let mut shards = rooms.iter();
    let ((&alone, alone_room), (&other, other_room)) = (shards.next().unwrap(), shards.next().unwrap());
    let replica = cluster.replica_of(alone).await;
    cluster.kill(replica);
    until("the primary to lose its replica", || async {
        let info: String = node_query(alone, redis::cmd("INFO").arg("replication")).await.unwrap();
        info.contains("connected_slaves:0")
    })
    .await;
    let (alone_before, other_before) = (waits(alone).await, waits(other).await);
    for n in 0..40 {
        store.append(new(alone_room, &format!("m{n}"))).await.unwrap();
    }
    store.append(new(other_room, "elsewhere")).await.unwrap();
    let alone_waits = waits(alone).await - alone_before;
    assert!(alone_waits < 10, "40 writes, {alone_waits} waited: it is asked again now and then only");
    assert_eq!(waits(other).await - other_before, 1, "a shard with its replica still waits");
}
