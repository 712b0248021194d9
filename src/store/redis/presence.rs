//! Presence shared through Redis: each node's readers of a room, merged by whoever asks.
//!
//! A room's hash `ssechat:{room}:presence` holds one field per node (its readers, with
//! the version of its presence clock they were counted at), and one `left:NODE` field per
//! node that drained lately: its readers in transit, counted until `--presence-grace` is
//! over. Every key a room's operations touch carries the room's hash tag.
//!
//! - **Liveness.** Each node keeps `ssechat:{node:ID}:alive` alive (a TTL of
//!   [`NODE_TTL`], renewed every [`NODE_BEAT`]). Entries of a node whose key is gone are
//!   ignored and deleted by whoever reads them, and every node checks, every beat, the
//!   nodes it has seen in its rooms: when one is gone those rooms are recomputed. So the
//!   readers of a node that died (`kill -9`) vanish within `NODE_TTL + NODE_BEAT` (8 s).
//!   Until then, a reader of it that reconnected elsewhere is in two entries, and counted
//!   once: by its name, or by the reader id among the anonymous ones (`readers`).
//! - **Drain.** A draining node deletes its entries at once and leaves its readers in
//!   transit (`left:NODE`) for `--presence-grace`. A reader that reconnects to another node
//!   within it takes one place in transit there (by name, or any anonymous place), in the
//!   same script that shares that node's readers: counted once, never twice, and nobody
//!   flickers out while moving. A reader that does not come back goes when the grace ends;
//!   one who does not come back while a newcomer arrives may go up to the grace earlier.
//! - **Versions only increase per entry**: shares run concurrently, and one counted
//!   earlier never overwrites one counted later.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::RedisConn;
use redis::{AsyncCommands, RedisResult, Script};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::follow;
use crate::domain::{PresenceView, RoomName};
use crate::hub::Hub;

/// How long a node counts as alive after it last said so.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How often a node says it is alive, and checks on the nodes it has seen.
pub const NODE_BEAT: Duration = Duration::from_secs(2);
/// A room's hash is forgotten this long after its last share (nodes re-share every 10 s).
const HASH_TTL: Duration = Duration::from_secs(60);
/// Fields of readers in transit start with this, followed by the drained node's id.
const LEFT: &str = "left:";

/// The time on Redis's clock (ms), the same for every node.
const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// Readers who joined this node take their places in transit, then this node's entry is
/// written unless a later one is there already; the hash lives on and the room is
/// announced. KEYS: hash; ARGV: node, entry, version, joined anonymous, joined names
/// (JSON list), hash TTL (ms), the room's channel, the presence notice, the publish command.
const SHARE: &str = r#"
local anonymous = tonumber(ARGV[4])
local names = cjson.decode(ARGV[5])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 5) == 'left:' then
    local left = cjson.decode(fields[i + 1])
    for _, name in ipairs(names) do left.names[name] = nil end
    local taken = math.min(anonymous, left.anonymous)
    left.anonymous = left.anonymous - taken
    anonymous = anonymous - taken
    if left['until'] <= now or (left.anonymous == 0 and next(left.names) == nil) then
      redis.call('HDEL', KEYS[1], fields[i])
    else
      redis.call('HSET', KEYS[1], fields[i], cjson.encode(left))
    end
  end
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old or (cjson.decode(old).version or 0) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call(ARGV[9], ARGV[7], ARGV[8])
return 0
"#;

/// A draining node's entry goes; its readers stay in transit until the grace is over.
/// KEYS: hash; ARGV: node, readers (`Transit` without `until`), grace (ms), hash TTL (ms),
/// the room's channel, the presence notice, the publish command.
const WITHDRAW: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
local left = cjson.decode(ARGV[2])
if tonumber(ARGV[3]) > 0 and (left.anonymous > 0 or next(left.names) ~= nil) then
  left['until'] = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'left:' .. ARGV[1], cjson.encode(left))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call(ARGV[7], ARGV[5], ARGV[6])
return 0
"#;

/// Redis's time and every field of the room's hash. KEYS: hash.
const READ: &str = r#"
return {now, redis.call('HGETALL', KEYS[1])}
"#;

fn presence_key(room: &RoomName) -> String {
    format!("ssechat:{{{room}}}:presence")
}

fn alive_key(node: &str) -> String {
    format!("ssechat:{{node:{node}}}:alive")
}

/// One node's readers of a room, as kept in the room's hash.
#[derive(Serialize, Deserialize)]
struct NodeEntry {
    #[serde(flatten)]
    view: PresenceView,
    /// The node's presence clock when it counted them.
    #[serde(default)]
    version: u64,
    /// The ids among its anonymous readers (`PresenceView::readers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    readers: Vec<String>,
}

/// Readers of a drained node, counted until `until` (Redis time, ms) unless they
/// reconnect elsewhere first. Names as a map, the shape Lua's cjson writes back.
#[derive(Serialize, Deserialize)]
struct Transit {
    names: HashMap<String, bool>,
    anonymous: u64,
    #[serde(default, rename = "until", skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
}

impl Transit {
    fn view(&self) -> PresenceView {
        let mut names: Vec<String> = self.names.keys().cloned().collect();
        names.sort();
        PresenceView { names, anonymous: self.anonymous, ..PresenceView::default() }
    }
}

/// This node's side of presence in Redis.
pub struct SharedPresence {
    conn: RedisConn,
    /// This node's name in presence entries: random, so no two nodes (or lives) share one.
    node: String,
    hub: Arc<Hub>,
    /// Other nodes seen in rooms' presence, with those rooms: when one stops saying it is
    /// alive, its rooms are recomputed (which drops and deletes its entries). A std mutex,
    /// never held across an `.await`.
    peers: Mutex<HashMap<String, HashSet<RoomName>>>,
    /// Transit ends (room, Redis time) a recompute is already planned for.
    planned: Mutex<HashSet<(RoomName, i64)>>,
    /// Set when this node drains: it no longer says it is alive.
    withdrawn: AtomicBool,
    share: Script,
    withdraw: Script,
    read: Script,
}

impl SharedPresence {
    /// Says this node is alive before anything is shared, then keeps saying so until `stop`.
    pub async fn start(conn: RedisConn, hub: Arc<Hub>, stop: CancellationToken) -> RedisResult<Arc<Self>> {
        let node = {
            use std::hash::{BuildHasher, Hasher};
            format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish())
        };
        let presence = Arc::new(Self {
            conn,
            node,
            hub,
            peers: Mutex::new(HashMap::new()),
            planned: Mutex::new(HashSet::new()),
            withdrawn: AtomicBool::new(false),
            share: Script::new(&format!("{NOW}{SHARE}")),
            withdraw: Script::new(&format!("{NOW}{WITHDRAW}")),
            read: Script::new(&format!("{NOW}{READ}")),
        });
        presence.beat().await?;
        let beating = Arc::clone(&presence);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + NODE_BEAT, NODE_BEAT);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = beating.beat().await {
                    tracing::warn!(error = %e, "cannot renew this node's presence in Redis; will retry");
                }
            }
        });
        Ok(presence)
    }

    /// Renews this node's liveness, and has the rooms of nodes that are gone recomputed.
    async fn beat(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        if !self.withdrawn.load(Ordering::Relaxed) {
            conn.pset_ex::<_, _, ()>(alive_key(&self.node), 1, NODE_TTL.as_millis() as u64).await?;
        }
        let peers: Vec<String> = self.peers.lock().expect("peers lock poisoned").keys().cloned().collect();
        let alive = self.alive(&peers).await?;
        let rooms: Vec<RoomName> = {
            let mut known = self.peers.lock().expect("peers lock poisoned");
            let gone = peers.iter().zip(alive).filter(|(_, alive)| !alive);
            gone.filter_map(|(peer, _)| known.remove(peer)).flatten().collect()
        };
        for room in rooms {
            self.hub.presence_changed(room);
        }
        Ok(())
    }

    /// Whether each of `nodes` still says it is alive.
    async fn alive(&self, nodes: &[String]) -> RedisResult<Vec<bool>> {
        // One EXISTS per node, concurrently (the connection pipelines them): each key is in its
        // own Cluster slot, so one pipeline of them would be refused there.
        let exists = nodes.iter().map(|node| {
            let mut conn = self.conn.clone();
            async move { conn.exists::<_, bool>(alive_key(node)).await }
        });
        futures_util::future::try_join_all(exists).await
    }

    /// Writes this node's readers of `room` (`joined`: who arrived since the last share).
    pub async fn share(&self, room: &RoomName, local: PresenceView, joined: PresenceView) -> RedisResult<()> {
        let version = local.version;
        let entry =
            serde_json::to_string(&NodeEntry { readers: local.readers.clone(), view: local, version })
                .expect("presence serialises");
        let names = serde_json::to_string(&joined.names).expect("names serialise");
        self.share
            .key(presence_key(room))
            .arg(&self.node)
            .arg(entry)
            .arg(version)
            .arg(joined.anonymous)
            .arg(names)
            .arg(HASH_TTL.as_millis() as u64)
            .arg(follow::channel(room))
            .arg(follow::PRESENCE)
            .arg(self.conn.publish_command())
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Deletes this node's entries at once, leaving its readers in transit for `grace`.
    pub async fn withdraw(&self, rooms: &[(RoomName, PresenceView)], grace: Duration) -> RedisResult<()> {
        self.withdrawn.store(true, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(alive_key(&self.node)).await?;
        let hash_ttl = HASH_TTL.max(grace + Duration::from_secs(1)).as_millis() as u64;
        // All rooms at once: the connection pipelines them, so a drain waits one round trip.
        let each = rooms.iter().map(|(room, view)| {
            let names = view.names.iter().map(|n| (n.clone(), true)).collect();
            let transit = Transit { names, anonymous: view.anonymous, until: None };
            let mut invocation = self.withdraw.key(presence_key(room));
            invocation
                .arg(&self.node)
                .arg(serde_json::to_string(&transit).expect("presence serialises"))
                .arg(grace.as_millis() as u64)
                .arg(hash_ttl)
                .arg(follow::channel(room))
                .arg(follow::PRESENCE)
                .arg(self.conn.publish_command());
            let mut conn = self.conn.clone();
            async move { invocation.invoke_async::<()>(&mut conn).await }
        });
        futures_util::future::try_join_all(each).await?;
        Ok(())
    }

    /// Every other live node's readers of `room`, and those in transit, merged with `local`.
    /// Entries of gone nodes and ended transits are deleted on the way.
    pub async fn read(&self, room: &RoomName, local: PresenceView) -> RedisResult<PresenceView> {
        let mut conn = self.conn.clone();
        let (now, fields): (i64, Vec<String>) =
            self.read.key(presence_key(room)).invoke_async(&mut conn).await?;
        let mut views = vec![local];
        let mut stale = Vec::new();
        let mut nodes = Vec::new();
        for pair in fields.chunks_exact(2) {
            let (field, value) = (&pair[0], &pair[1]);
            if let Some(node) = field.strip_prefix(LEFT) {
                if node == self.node {
                    continue; // this node's own readers, counted here as they are
                }
                match serde_json::from_str::<Transit>(value) {
                    Ok(t) if t.until.is_some_and(|until| until > now) => {
                        self.recompute_at(room, now, t.until.unwrap_or(now));
                        views.push(t.view());
                    }
                    _ => stale.push(field.clone()),
                }
            } else if *field != self.node {
                match serde_json::from_str::<NodeEntry>(value) {
                    Ok(entry) => nodes.push((field.clone(), entry)),
                    Err(_) => stale.push(field.clone()),
                }
            }
        }
        let ids: Vec<String> = nodes.iter().map(|(node, _)| node.clone()).collect();
        let alive = self.alive(&ids).await?;
        for ((node, entry), alive) in nodes.into_iter().zip(alive) {
            if alive {
                let mut peers = self.peers.lock().expect("peers lock poisoned");
                peers.entry(node).or_default().insert(room.clone());
                views.push(PresenceView { version: entry.version, readers: entry.readers, ..entry.view });
            } else {
                stale.push(node);
            }
        }
        if !stale.is_empty() {
            conn.hdel::<_, _, ()>(presence_key(room), stale).await?;
        }
        Ok(PresenceView::merge(&views))
    }

    /// Has `room` recomputed once the transit ending at `until` (Redis time) is over.
    fn recompute_at(&self, room: &RoomName, now: i64, until: i64) {
        {
            let mut planned = self.planned.lock().expect("planned lock poisoned");
            planned.retain(|(_, end)| *end >= now);
            if !planned.insert((room.clone(), until)) {
                return;
            }
        }
        let (hub, room) = (Arc::downgrade(&self.hub), room.clone());
        let wait = Duration::from_millis((until - now).max(0) as u64 + 50);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(hub) = hub.upgrade() {
                hub.presence_changed(room);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::tests::RedisServer;

    fn view(names: &[&str], anonymous: u64, version: u64) -> PresenceView {
        PresenceView {
            names: names.iter().map(|n| n.to_string()).collect(),
            anonymous,
            version,
            ..PresenceView::default()
        }
    }

    async fn node(server: &RedisServer) -> Arc<SharedPresence> {
        node_with(server, Hub::new(4)).await
    }

    async fn node_with(server: &RedisServer, hub: Arc<Hub>) -> Arc<SharedPresence> {
        let client = redis::Client::open(server.url.as_str()).unwrap();
        let conn = RedisConn::Single(client.get_connection_manager().await.unwrap());
        SharedPresence::start(conn, hub, CancellationToken::new()).await.unwrap()
    }

    /// Who `node` sees in `room`, with nobody of its own.
    async fn people(node: &SharedPresence, room: &RoomName) -> (Vec<String>, u64) {
        let seen = node.read(room, PresenceView::default()).await.unwrap();
        (seen.names, seen.anonymous)
    }

    #[tokio::test]
    async fn readers_in_transit_count_until_they_arrive_elsewhere_and_only_once() {
        let server = RedisServer::start();
        let (a, b, c) = (node(&server).await, node(&server).await, node(&server).await);
        let room = RoomName::general();
        let none = PresenceView::default();
        a.share(&room, view(&["ana", "bob"], 2, 10), none.clone()).await.unwrap();
        assert_eq!(people(&c, &room).await, (vec!["ana".into(), "bob".into()], 2));

        a.withdraw(&[(room.clone(), view(&["ana", "bob"], 2, 0))], Duration::from_secs(60)).await.unwrap();
        assert_eq!(people(&c, &room).await, (vec!["ana".into(), "bob".into()], 2), "in transit");
        // Ana and one anonymous reader reconnect to b: they take their places in transit.
        b.share(&room, view(&["ana"], 1, 20), view(&["ana"], 1, 0)).await.unwrap();
        assert_eq!(people(&c, &room).await, (vec!["ana".into(), "bob".into()], 2), "counted once");
        // A share counted earlier, arriving late, never overwrites a later one.
        b.share(&room, view(&[], 0, 15), none.clone()).await.unwrap();
        assert_eq!(people(&c, &room).await, (vec!["ana".into(), "bob".into()], 2));
        // Bob and another anonymous reader arrive: nobody is left in transit.
        b.share(&room, view(&["ana", "bob"], 2, 30), view(&["bob"], 1, 0)).await.unwrap();
        assert_eq!(people(&c, &room).await, (vec!["ana".into(), "bob".into()], 2));
        let fields: Vec<String> = c.conn.clone().hkeys(presence_key(&room)).await.unwrap();
        assert_eq!(fields, vec![b.node.clone()], "the emptied transit is deleted");
    }

    #[tokio::test]
    async fn readers_in_transit_go_when_the_grace_is_over_and_the_room_is_recomputed() {
        let server = RedisServer::start();
        let hub = Hub::new(4);
        let (changed, mut recompute) = tokio::sync::mpsc::unbounded_channel();
        hub.on_presence_changed(changed);
        let (a, c) = (node(&server).await, node_with(&server, hub).await);
        let room = RoomName::general();
        a.withdraw(&[(room.clone(), view(&["ana"], 1, 0))], Duration::from_millis(300)).await.unwrap();
        assert_eq!(people(&c, &room).await, (vec!["ana".into()], 1));
        let told = tokio::time::timeout(Duration::from_secs(5), recompute.recv()).await;
        assert_eq!(told.expect("recomputed when the grace ends"), Some(room.clone()));
        assert_eq!(people(&c, &room).await, (vec![], 0));
        let fields: Vec<String> = c.conn.clone().hkeys(presence_key(&room)).await.unwrap();
        assert!(fields.is_empty(), "the ended transit is deleted: {fields:?}");
    }
}
