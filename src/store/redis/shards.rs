//! Following rooms on a Redis Cluster with sharded pub/sub. A room's channel
//! (`ssechat:{ROOM}:ch`) and [`ACTIVITY`] are sharded channels: `SPUBLISH` reaches only the
//! primary serving the channel's slot (and its replicas), so a node `SSUBSCRIBE`s each
//! channel on that primary, over one RESP3 connection per primary it needs. No message
//! crosses the Cluster's bus to nodes nobody listens on.
//!
//! redis-rs's cluster connection loses sharded subscriptions when a shard changes primary
//! (see `tests/api/redis_cluster.rs`), so the node owns them: it reads the slot map
//! (`CLUSTER SLOTS`), subscribes each channel on the primary the map names, and whenever a
//! subscription ends without being asked (the connection broke, the primary failed over, the
//! slot moved: Redis sends `sunsubscribe`), or the map says a channel's slot moved (checked
//! every [`CHECK_EVERY`]), it reads the map again and subscribes anew. Before it trusts a
//! node with a subscription it asks that node for its own slot map: a primary demoted a
//! moment ago (a switch-over) still confirms `SSUBSCRIBE` and then delivers nothing, and the
//! other nodes' maps may lag behind. What was published
//! in between never arrived, so the room counts as not followed until Redis confirms the new
//! subscription, and then its streams catch up from the log ([`Hub::unfollowed`],
//! [`Hub::followed`]), as at a room's first subscription.
//!
//! Rooms open and close as on one Redis ([`Following`]: subscribed while read, unsubscribed
//! [`super::follow::LINGER`] after the last reader left).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::COMMAND_TIMEOUT;
use super::conn::RedisConn;
use super::follow::{ACTIVITY, Following, channel, deliver, room_of};
use super::slots::{SlotMap, text};
use crate::hub::{Hub, RoomChange};

/// How often the node compares where its channels are subscribed with the slot map.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// The first wait before subscribing again after a failure; it doubles up to [`MAX_WAIT`].
const MIN_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(2);
/// What a connection's pushes come with: its primary's address and its generation, so a
/// late push of a replaced connection is told apart.
type Push = (String, u64, PushInfo);

struct Node {
    generation: u64,
    conn: MultiplexedConnection,
}

struct Shards {
    hub: Arc<Hub>,
    cluster: RedisConn,
    slots: SlotMap,
    nodes: HashMap<String, Node>,
    generation: u64,
    pushes: UnboundedSender<Push>,
    /// `USER:PASSWORD@` for every node, or nothing.
    userinfo: String,
    /// Channels subscribed, confirmed by the primary named.
    at: HashMap<String, String>,
    /// Channels wanted and not subscribed: new, or lost to a failure or a move.
    pending: HashSet<String>,
    following: Following,
}

/// Follows the hub's open rooms on the Cluster that `cluster` talks to, until `stop`.
/// `ready` is told once the node listens to [`ACTIVITY`].
/// `userinfo` is the `USER:PASSWORD@` every node takes, or empty.
pub async fn follow(
    cluster: RedisConn,
    userinfo: String,
    hub: Arc<Hub>,
    stop: CancellationToken,
    ready: oneshot::Sender<()>,
) {
    let (changes, told) = unbounded_channel();
    hub.on_rooms(changes);
    let (pushes, pushed) = unbounded_channel();
    let mut shards = Shards {
        hub,
        cluster,
        slots: SlotMap::default(),
        nodes: HashMap::new(),
        generation: 0,
        pushes,
        userinfo,
        at: HashMap::new(),
        pending: HashSet::from([ACTIVITY.to_owned()]),
        following: Following::default(),
    };
    shards.run(told, pushed, stop, ready).await;
}

impl Shards {
    async fn run(
        &mut self,
        mut told: UnboundedReceiver<RoomChange>,
        mut pushed: UnboundedReceiver<Push>,
        stop: CancellationToken,
        ready: oneshot::Sender<()>,
    ) {
        let mut ready = Some(ready);
        let (mut retry, mut wait) = (Instant::now(), MIN_WAIT);
        let mut check = tokio::time::interval_at(Instant::now() + CHECK_EVERY, CHECK_EVERY);
        loop {
            if !self.pending.is_empty() && retry <= Instant::now() {
                let done = self.subscribe_pending().await;
                (retry, wait) =
                    if done { (retry, MIN_WAIT) } else { (Instant::now() + wait, (wait * 2).min(MAX_WAIT)) };
            }
            if self.at.contains_key(ACTIVITY) {
                ready.take().map(|ready| ready.send(()));
            }
            let expiry = self.following.next_expiry();
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(push) = pushed.recv() => self.pushed(push).await,
                change = told.recv() => {
                    // Closed only if another store took over this hub's rooms.
                    let Some(change) = change else { return };
                    let mut changes = vec![change];
                    while let Ok(more) = told.try_recv() {
                        changes.push(more);
                    }
                    self.changed(changes);
                }
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => self.expire().await,
                _ = tokio::time::sleep_until(retry), if !self.pending.is_empty() => {}
                _ = check.tick() => self.check().await,
            }
        }
    }

    /// Notes the hub's changes: new rooms to subscribe, closed rooms left to linger, and
    /// nothing pending for a room that closed before it was subscribed.
    fn changed(&mut self, changes: Vec<RoomChange>) {
        let new = self.following.apply(&self.hub, changes);
        self.pending.extend(new.iter().map(channel));
        let open = &self.following.open;
        self.pending.retain(|c| room_of(c).is_none_or(|room| open.contains(&room)));
    }

    async fn pushed(&mut self, (addr, generation, push): Push) {
        let current = self.nodes.get(&addr).is_some_and(|n| n.generation == generation);
        match (push.kind, push.data.as_slice()) {
            (PushKind::SMessage, [Value::BulkString(channel), Value::BulkString(payload)]) => {
                deliver(&self.hub, &String::from_utf8_lossy(channel), payload)
            }
            (PushKind::SUnsubscribe, [channel, ..]) => {
                let Some(channel) = text(channel) else { return };
                // Not asked for: the slot moved or its primary stepped down.
                if current && self.at.get(&channel) == Some(&addr) {
                    tracing::warn!(%channel, node = %addr, "Redis ended a subscription; subscribing again");
                    self.lose(channel);
                }
            }
            (PushKind::Disconnection, _) if current => {
                tracing::warn!(node = %addr, "lost a Redis Cluster node's subscriptions; subscribing again");
                self.drop_node(&addr);
            }
            _ => {}
        }
    }

    /// Subscribes what is pending, each channel on its primary; false if some could not be.
    async fn subscribe_pending(&mut self) -> bool {
        if self.pending.iter().any(|c| self.slots.owner(c).is_none()) {
            self.refresh().await;
        }
        let (mut asked, mut failed, mut stale) = (HashSet::new(), HashSet::new(), false);
        for channel in self.pending.clone() {
            let Some(addr) = self.primary_of(&channel, &mut asked, &mut failed).await else {
                stale = true;
                continue;
            };
            match self.ssubscribe(&addr, &channel).await {
                Ok(()) => self.confirmed(channel, addr),
                Err(e) if e.redirect_node().is_some() => stale = true,
                Err(e) => {
                    tracing::warn!(node = %addr, error = %e, "cannot subscribe on a Redis Cluster node; retrying");
                    self.drop_node(&addr);
                    failed.insert(addr);
                    stale = true;
                }
            }
        }
        if stale {
            self.refresh().await;
        }
        self.pending.is_empty()
    }

    /// The primary serving `channel`, as that node itself says (`asked`: nodes whose slot
    /// map this pass read). A primary that was just demoted still confirms `SSUBSCRIBE` and
    /// then delivers nothing, and other nodes' maps may lag, so the node the map names is
    /// asked before it is trusted; it may name another, asked in turn (three hops at most).
    async fn primary_of(
        &mut self,
        channel: &str,
        asked: &mut HashSet<String>,
        failed: &mut HashSet<String>,
    ) -> Option<String> {
        for _ in 0..3 {
            let addr = self.slots.owner(channel)?.to_owned();
            if failed.contains(&addr) {
                return None;
            }
            if asked.contains(&addr) {
                return Some(addr);
            }
            match self.map_of(&addr).await {
                Ok(map) => {
                    self.slots = map;
                    asked.insert(addr);
                }
                Err(e) => {
                    tracing::warn!(node = %addr, error = %e, "cannot ask a Redis Cluster node for its slots; retrying");
                    self.drop_node(&addr);
                    failed.insert(addr);
                    return None;
                }
            }
        }
        None
    }

    /// The slot map as the node at `addr` sees it.
    async fn map_of(&mut self, addr: &str) -> RedisResult<SlotMap> {
        let mut conn = self.conn_to(addr).await?;
        within(SlotMap::read(&mut conn)).await
    }

    async fn conn_to(&mut self, addr: &str) -> RedisResult<MultiplexedConnection> {
        match self.nodes.get(addr) {
            Some(node) => Ok(node.conn.clone()),
            None => self.connect(addr).await,
        }
    }

    async fn ssubscribe(&mut self, addr: &str, channel: &str) -> RedisResult<()> {
        let mut conn = self.conn_to(addr).await?;
        run(&mut conn, "SSUBSCRIBE", channel).await
    }

    /// A RESP3 connection to `addr` whose pushes come to this follower.
    async fn connect(&mut self, addr: &str) -> RedisResult<MultiplexedConnection> {
        self.generation += 1;
        let (generation, tx, address) = (self.generation, self.pushes.clone(), addr.to_owned());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_push_sender(move |push| tx.send((address.clone(), generation, push)));
        let client = redis::Client::open(format!("redis://{}{addr}/?protocol=resp3", self.userinfo))?;
        let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        self.nodes.insert(addr.to_owned(), Node { generation, conn: conn.clone() });
        Ok(conn)
    }

    /// Redis confirmed `channel` on `addr`: from here on everything published arrives.
    fn confirmed(&mut self, channel: String, addr: String) {
        self.pending.remove(&channel);
        match room_of(&channel) {
            Some(room) => {
                if !self.following.open.contains(&room) {
                    self.following.idle.insert(room.clone(), Instant::now());
                }
                self.hub.followed(&room);
                self.following.subscribed.insert(room);
            }
            // Notices may have been missed: room lists look again.
            None => self.hub.note_activity(),
        }
        self.at.insert(channel, addr);
    }

    /// `channel` is no longer subscribed: subscribed again if still wanted.
    fn lose(&mut self, channel: String) {
        self.at.remove(&channel);
        let Some(room) = room_of(&channel) else {
            self.pending.insert(channel);
            return;
        };
        self.following.subscribed.remove(&room);
        if self.following.open.contains(&room) {
            self.hub.unfollowed(&room);
            self.pending.insert(channel);
        } else {
            self.following.idle.remove(&room);
        }
    }

    /// Closes the connection to `addr`; its channels are lost.
    fn drop_node(&mut self, addr: &str) {
        self.nodes.remove(addr);
        let lost: Vec<String> = self.at.iter().filter(|(_, a)| *a == addr).map(|(c, _)| c.clone()).collect();
        for channel in lost {
            self.lose(channel);
        }
    }

    /// Reads the slot map again; on failure the old one stays.
    async fn refresh(&mut self) {
        match within(SlotMap::read(&mut self.cluster)).await {
            Ok(map) => self.slots = map,
            Err(e) => tracing::warn!(error = %e, "cannot read the Redis Cluster's slot map"),
        }
    }

    /// Unsubscribes the rooms whose linger is over.
    async fn expire(&mut self) {
        for room in self.following.expire(Instant::now()) {
            let channel = channel(&room);
            if let Some(addr) = self.at.remove(&channel) {
                self.sunsubscribe(&addr, &channel).await;
            }
        }
        self.close_unused();
    }

    /// Moves every channel whose slot the map now gives to another primary, and closes
    /// connections no channel uses.
    async fn check(&mut self) {
        self.refresh().await;
        let moved: Vec<(String, String)> = self
            .at
            .iter()
            .filter(|(channel, addr)| self.slots.owner(channel).is_some_and(|owner| owner != addr.as_str()))
            .map(|(c, a)| (c.clone(), a.clone()))
            .collect();
        for (channel, addr) in moved {
            tracing::info!(%channel, from = %addr, "a room's slot moved; subscribing on its new primary");
            self.lose(channel.clone());
            self.sunsubscribe(&addr, &channel).await;
        }
        self.close_unused();
    }

    /// Best effort: a failure closes the connection, which ends the subscription anyway.
    async fn sunsubscribe(&mut self, addr: &str, channel: &str) {
        let Some(node) = self.nodes.get(addr) else { return };
        let mut conn = node.conn.clone();
        if run(&mut conn, "SUNSUBSCRIBE", channel).await.is_err() {
            self.drop_node(addr);
        }
    }

    fn close_unused(&mut self) {
        let used: HashSet<&String> = self.at.values().collect();
        self.nodes.retain(|addr, _| used.contains(addr));
    }
}

/// `verb channel` on `conn`, within [`COMMAND_TIMEOUT`].
async fn run(conn: &mut MultiplexedConnection, verb: &str, channel: &str) -> RedisResult<()> {
    within(redis::cmd(verb).arg(channel).to_owned().exec_async(conn)).await
}

/// `request`'s outcome, or a timeout error after [`COMMAND_TIMEOUT`].
async fn within<T>(request: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
        Ok(done) => done,
        Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
    }
}
