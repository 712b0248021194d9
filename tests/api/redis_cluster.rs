//! A real Redis Cluster on loopback for the tests: three primaries with one replica each,
//! `redis-server --cluster-enabled yes` on free ports, joined by `redis-cli --cluster create`,
//! killed on drop. Every node writes an append-only file with `appendfsync always`, and the
//! node timeout is one second, so a killed primary's replica takes over in a few seconds.
//!
//! The tests below also answer what redis-rs 1.8's cluster connection can do for ssechat
//! (issue 16, Redis Cluster), in short:
//! - Scripts whose keys share the room's tag `{ROOM}` run atomically on its shard, and may
//!   `SPUBLISH` to `ssechat:{ROOM}:ch`. A global key in a room's script is refused
//!   (CROSSSLOT), so the store's APPEND/TAKE_BACK/FORGET touch one room's keys only and the
//!   room index `ssechat:rooms` is written by a command of its own (checked here on the
//!   store's own scripts); a pipeline of `EXISTS` over `{node:ID}` slots is refused by
//!   redis-rs, so presence sends them one by one. `{accounts}`, `{directory}`, `{client:ADDR}` and the other `{ROOM}`
//!   keys are fine. A script's error does not undo its earlier writes.
//! - `WAIT 1 ms` in the same pipeline as a write runs on the write's node: acknowledged
//!   writes survive a primary's SIGKILL.
//! - `SSUBSCRIBE` through the cluster connection (RESP3, push sender) works until a shard
//!   changes primary; then the subscription is lost (killed primary: a confirmation nobody
//!   holds; switch-over: the server's `sunsubscribe` makes redis-rs forget it). Hold one
//!   plain RESP3 connection per shard instead, follow `MOVED`, and on a `Disconnection` or
//!   an unasked `sunsubscribe` subscribe again and have the room catch up from its log.
//! - redis-rs retries a request after an IO error, so a script may run twice: give every
//!   append an idempotency key.
//!
//! The store on a Cluster (`RedisStore::open_cluster`): history, accounts and rules, and the
//! whole store contract suite (`ssechat::store::contract`, public with the `contract`
//! feature, which the package's dev-dependency on itself turns on, so a plain `cargo test`
//! runs it). `durable.rs`: no acknowledged write lost or doubled through a primary's SIGKILL,
//! every write waits for a replica (`WAIT`) unless its primary has none, and a write without
//! a client key is remembered for a minute under its attempt's token.
//!
//! The full audit, with references into redis-rs's source: /work/notes/i16-cluster-findings.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, FromRedisValue, PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

mod durable;

/// Bound on every wait of the harness: forming the cluster or failing a primary over takes a
/// few seconds; only a broken cluster needs longer.
const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// Redis Cluster's slot count.
const SLOTS: usize = 16384;

/// One `redis-server` of the cluster; `child` is `None` once it was killed.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six nodes, three primaries and three replicas, in one temporary directory.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    _turn: ClusterTurn,
}

/// Held while a Cluster lives (this harness's, or one a test starts otherwise).
pub struct ClusterTurn {
    /// Six servers with a one-second node timeout must not be starved by other heavy tests
    /// (a stalled primary would be failed over).
    _heavy: tokio::sync::MutexGuard<'static, ()>,
    /// One Cluster at a time on the machine, whichever test process starts it.
    _machine: std::fs::File,
}

impl ClusterTurn {
    /// Waits until no other test of this machine runs a Cluster.
    pub async fn take() -> ClusterTurn {
        let heavy = crate::helpers::HEAVY.lock().await;
        ClusterTurn { _heavy: heavy, _machine: machine_lock().await }
    }
}

/// What a node's `CLUSTER NODES` says about one node.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The primary's id for a replica, `-` for a primary.
    primary: String,
    /// Slot ranges as written (`0-5460`, `5461`); migrations (`[...]`) are left out.
    slots: Vec<(usize, usize)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<NodeLine> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let address = fields.get(1)?.split('@').next()?;
        let slots = fields.iter().skip(8).filter(|s| !s.starts_with('[')).map(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            (low.parse().unwrap(), high.parse().unwrap())
        });
        Some(NodeLine {
            id: fields[0].to_owned(),
            port: address.rsplit(':').next()?.parse().ok()?,
            flags: fields.get(2)?.split(',').map(str::to_owned).collect(),
            primary: fields.get(3)?.to_string(),
            slots: slots.collect(),
        })
    }

    fn is_live_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master") && !self.flags.iter().any(|f| f == "fail")
    }

    fn serves(&self, slot: usize) -> bool {
        self.slots.iter().any(|&(low, high)| (low..=high).contains(&slot))
    }
}

/// Distinct free loopback ports: all bound at once, so none is handed out twice.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Checks `condition` until it holds or `CLUSTER_WAIT` passes (then panics naming `what`).
pub async fn until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    crate::helpers::eventually_within(CLUSTER_WAIT, what, condition).await
}

/// One command to the node on `port` alone, on a fresh plain connection.
pub async fn node_query<T: FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

async fn cluster_info(port: u16) -> String {
    node_query(port, redis::cmd("CLUSTER").arg("INFO")).await.unwrap_or_default()
}

async fn cluster_nodes(port: u16) -> Vec<NodeLine> {
    let text: String = node_query(port, redis::cmd("CLUSTER").arg("NODES")).await.unwrap_or_default();
    text.lines().filter_map(NodeLine::parse).collect()
}

/// `ROLE`'s first element: `master` or `slave`; for a replica also whether its link is up.
async fn role(port: u16) -> (String, bool) {
    let reply: Vec<Value> = node_query(port, &redis::cmd("ROLE")).await.unwrap_or_default();
    let text = |i: usize| reply.get(i).and_then(|v| String::from_redis_value(v.clone()).ok());
    let role = text(0).unwrap_or_default();
    let linked = role == "slave" && text(3).as_deref() == Some("connected");
    (role, linked)
}

/// An exclusive lock on a file shared by every test process of this machine (several
/// checkouts may run their tests at once), released when the file closes.
async fn machine_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("ssechat-redis-cluster-tests.lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap();
    tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await.unwrap().unwrap()
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster, and waits until every node sees every slot
    /// served and every replica is linked to its primary.
    pub async fn start() -> RedisCluster {
        let turn = ClusterTurn::take().await;
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(12); // a client port and a cluster bus port per node
        let nodes: Vec<Node> = ports.chunks(2).map(|pair| start_node(dir.path(), pair[0], pair[1])).collect();
        let cluster = RedisCluster { nodes, _dir: dir, _turn: turn };
        for node in &cluster.nodes {
            let port = node.port;
            until("a node to answer PING", || async move {
                node_query::<String>(port, &redis::cmd("PING")).await.is_ok()
            })
            .await;
        }
        cluster.create().await;
        until("the cluster to form", || cluster.formed()).await;
        cluster
    }

    async fn create(&self) {
        let addresses = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port));
        let create = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(CLUSTER_WAIT, create).await.expect("cluster create ends").unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "redis-cli --cluster create failed: {stdout}");
    }

    /// Every live node says `cluster_state:ok` with all slots served by live primaries, knows
    /// every node, and every replica's link to its primary is up.
    async fn formed(&self) -> bool {
        let live = self.live_ports();
        for &port in &live {
            let info = cluster_info(port).await;
            let ok = info.contains("cluster_state:ok") && info.contains(&format!("cluster_slots_ok:{SLOTS}"));
            if !ok || !info.contains(&format!("cluster_known_nodes:{}", self.nodes.len())) {
                return false;
            }
            let (role, linked) = role(port).await;
            if role != "master" && !linked {
                return false;
            }
        }
        let primaries = cluster_nodes(live[0]).await.into_iter().filter(NodeLine::is_live_primary).count();
        primaries * 2 == live.len()
    }

    /// A node's store on this Cluster, fanning out through `hub`, keeping 10,000 messages a
    /// room.
    pub async fn store(&self, hub: std::sync::Arc<ssechat::hub::Hub>) -> ssechat::store::RedisStore {
        let retention = ssechat::store::Retention::count(10_000);
        ssechat::store::RedisStore::open_cluster(&self.urls(), hub, retention).await.unwrap()
    }

    /// The client ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    /// `redis://` URLs of the nodes still running, for `ClusterClient::new`.
    pub fn urls(&self) -> Vec<String> {
        self.live_ports().iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect()
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub async fn slot(&self, key: &str) -> usize {
        node_query(self.live_ports()[0], redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await.unwrap()
    }

    /// The port of the live primary that serves `key`'s slot.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let slot = self.slot(key).await;
        let nodes = cluster_nodes(self.live_ports()[0]).await;
        nodes.iter().find(|n| n.is_live_primary() && n.serves(slot)).expect("every slot is served").port
    }

    /// SIGKILLs the primary on `port` and waits until its replica was promoted and every
    /// surviving node sees it serving the dead primary's slots; returns the replica's port.
    pub async fn kill_primary(&mut self, port: u16) -> u16 {
        let replica = self.replica_of(port).await;
        self.kill(port);
        self.wait_promoted(replica).await;
        replica
    }

    /// `CLUSTER FAILOVER` on the replica of the primary on `port`: they swap roles, both
    /// alive, as in a planned switch-over; returns the new primary's port once promoted.
    pub async fn switch_over(&self, port: u16) -> u16 {
        let replica = self.replica_of(port).await;
        let _: String = node_query(replica, redis::cmd("CLUSTER").arg("FAILOVER")).await.unwrap();
        self.wait_promoted(replica).await;
        replica
    }

    /// Moves `slot` and its keys to the primary on `to`, as `redis-cli --cluster reshard`
    /// does: `IMPORTING` on `to`, `MIGRATING` on its owner, `MIGRATE` of its keys, then
    /// `SETSLOT NODE` on every primary; waits until every live node sees `to` serve it.
    pub async fn move_slot(&self, slot: usize, to: u16) {
        let nodes = cluster_nodes(to).await;
        let id = |port: u16| nodes.iter().find(|n| n.port == port).unwrap().id.clone();
        let from = nodes.iter().find(|n| n.is_live_primary() && n.serves(slot)).unwrap().port;
        let set = |state: &str, port: u16| {
            redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(id(port)).clone()
        };
        let _: () = node_query(to, &set("IMPORTING", from)).await.unwrap();
        let _: () = node_query(from, &set("MIGRATING", to)).await.unwrap();
        loop {
            let keys: Vec<String> =
                node_query(from, redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100))
                    .await
                    .unwrap();
            if keys.is_empty() {
                break;
            }
            let migrate = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .clone();
            let _: () = node_query(from, &migrate).await.unwrap();
        }
        let primaries: Vec<u16> = nodes.iter().filter(|n| n.is_live_primary()).map(|n| n.port).collect();
        for port in [to, from].into_iter().chain(primaries.into_iter().filter(|p| ![to, from].contains(p))) {
            let _: () = node_query(port, &set("NODE", to)).await.unwrap();
        }
        until("every node to see the slot moved", || async {
            for port in self.live_ports() {
                let sees = cluster_nodes(port).await;
                if !sees.iter().any(|n| n.port == to && n.serves(slot)) {
                    return false;
                }
            }
            true
        })
        .await;
    }

    async fn replica_of(&self, port: u16) -> u16 {
        let nodes = cluster_nodes(port).await;
        let primary = nodes.iter().find(|n| n.port == port).expect("the node knows itself");
        assert!(primary.is_live_primary(), "{port} is a primary");
        nodes.iter().find(|n| n.primary == primary.id).expect("the primary has a replica").port
    }

    /// Until `replica` is a primary serving slots in the eyes of every live node.
    async fn wait_promoted(&self, replica: u16) {
        let promoted = || async move {
            if role(replica).await.0 != "master" {
                return false;
            }
            for survivor in self.live_ports() {
                let sees = cluster_nodes(survivor).await;
                let serves =
                    sees.iter().any(|n| n.port == replica && n.is_live_primary() && !n.slots.is_empty());
                if !serves || !cluster_info(survivor).await.contains("cluster_state:ok") {
                    return false;
                }
            }
            true
        };
        until("the replica's promotion", promoted).await;
    }

    /// SIGKILL: the node on `port` stops without a goodbye.
    fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for port in self.live_ports() {
            self.kill(port);
        }
    }
}

fn start_node(dir: &Path, port: u16, bus_port: u16) -> Node {
    let data = dir.join(port.to_string());
    std::fs::create_dir(&data).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
        .args(["--cluster-port", &bus_port.to_string()])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .args(["--cluster-node-timeout", "1000", "--appendonly", "yes", "--appendfsync", "always"])
        .args(["--save", ""])
        .arg("--dir")
        .arg(&data)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (apt-get install redis-server)");
    Node { port, child: Some(child) }
}

/// One room per primary (`r0`, `r1`...: whose hash tag `{ROOM}` lands on it), mapped to
/// the primary's port.
async fn room_per_primary(cluster: &RedisCluster) -> BTreeMap<u16, String> {
    let mut rooms = BTreeMap::new();
    for n in 0.. {
        let room = format!("r{n}");
        rooms.entry(cluster.primary_of(&format!("{{{room}}}")).await).or_insert(room);
        if rooms.len() == cluster.nodes.len() / 2 {
            return rooms;
        }
    }
    unreachable!()
}

/// Writes `key` and waits until one replica has it (`WAIT 1 1000` in the same pipeline, so
/// on the same node); returns how many replicas acknowledged.
async fn write_acknowledged(conn: &mut ClusterConnection, key: &str, value: &str) -> i64 {
    let (acks,): (i64,) =
        redis::pipe().set(key, value).ignore().cmd("WAIT").arg(1).arg(1000).query_async(conn).await.unwrap();
    acks
}

#[tokio::test]
async fn a_cluster_keeps_acknowledged_writes_through_a_failover() {
    let mut cluster = RedisCluster::start().await;
    let mut conn = ClusterClient::new(cluster.urls()).unwrap().get_async_connection().await.unwrap();
    let rooms = room_per_primary(&cluster).await;
    let keys: BTreeMap<u16, String> =
        rooms.into_iter().map(|(p, room)| (p, format!("ssechat:{{{room}}}:probe"))).collect();
    for key in keys.values() {
        assert_eq!(write_acknowledged(&mut conn, key, key).await, 1, "a replica acknowledged {key}");
        assert_eq!(conn.get::<_, String>(key).await.unwrap(), *key);
    }
    let (&victim, _) = keys.iter().next().unwrap();
    let promoted = cluster.kill_primary(victim).await;
    assert_ne!(promoted, victim);
    for key in keys.values() {
        assert_eq!(conn.get::<_, String>(key).await.unwrap(), *key, "{key} survived the failover");
    }
    let key = &keys[&victim];
    assert_eq!(cluster.primary_of(key).await, promoted, "the replica serves the dead primary's slots");
}

// The spike: what redis-rs 1.8's cluster connection does for ssechat (see the module doc).

/// The shape of the publish script (`APPEND` in src/store/redis.rs): the room's next id, the
/// entry in the room's log, the idempotency key, and the entry published on the room's
/// sharded channel. KEYS: seq, log, idempotency key[, more]; ARGV: channel, payload.
const ROOM_SCRIPT: &str = r#"
local id = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], id, ARGV[2])
redis.call('SET', KEYS[3], ARGV[2], 'EX', 60)
redis.call('SPUBLISH', ARGV[1], ARGV[2])
return id
"#;

/// The room's sharded channel (`ssechat:{ROOM}:ch`): same hash tag, same slot as its keys.
fn channel(room: &str) -> String {
    format!("ssechat:{{{room}}}:ch")
}

/// Runs [`ROOM_SCRIPT`] for `room`, publishing `payload` on `publish_to`, with `extra` keys.
async fn run_room_script(
    conn: &mut ClusterConnection,
    room: &str,
    publish_to: &str,
    payload: &str,
    extra: &[&str],
) -> RedisResult<i64> {
    let keys = ["seq", "log", "key:k1"].map(|suffix| format!("ssechat:{{{room}}}:{suffix}"));
    redis::Script::new(ROOM_SCRIPT)
        .key(&keys)
        .key(extra)
        .arg(publish_to)
        .arg(payload)
        .invoke_async(conn)
        .await
}

fn is_cross_slot(e: &redis::RedisError) -> bool {
    matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot))
}

#[tokio::test]
async fn scripts_on_one_room_tag_run_on_a_cluster_and_a_global_key_is_refused() {
    let cluster = RedisCluster::start().await;
    let mut conn = ClusterClient::new(cluster.urls()).unwrap().get_async_connection().await.unwrap();
    let rooms: Vec<String> = room_per_primary(&cluster).await.into_values().collect();
    for room in &rooms {
        for expected in 1..=2 {
            let id = run_room_script(&mut conn, room, &channel(room), "hello", &[]).await.unwrap();
            assert_eq!(id, expected, "ids of {room} follow each other");
        }
        // The store's read: one MULTI on the room's two keys, one slot.
        let (seq, log): (i64, Vec<String>) = redis::pipe()
            .atomic()
            .get(format!("ssechat:{{{room}}}:seq"))
            .zrange(format!("ssechat:{{{room}}}:log"), 0, -1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!((seq, log.len()), (2, 1), "{room}: two ids, one distinct payload");
    }
    let (a, b) = (&rooms[0], &rooms[1]);
    let e = run_room_script(&mut conn, a, &channel(a), "x", &["ssechat:rooms"]).await.unwrap_err();
    assert!(is_cross_slot(&e), "APPEND touching the global room index: {e}");
    let e = run_room_script(&mut conn, a, &channel(b), "x", &[]).await.unwrap_err();
    assert!(e.to_string().contains("non local key"), "SPUBLISH to another shard's room from a script: {e}");
    // A pipeline of single-key commands on several slots (presence's liveness check today).
    let mut alive = redis::pipe();
    alive.exists("ssechat:{node:a}:alive").exists("ssechat:{node:b}:alive");
    let e = alive.query_async::<(bool, bool)>(&mut conn).await.unwrap_err();
    assert!(is_cross_slot(&e), "a pipeline across slots is refused by redis-rs: {e}");
}

/// A cluster connection over RESP3 whose push messages (pub/sub) arrive on the receiver.
async fn push_connection(cluster: &RedisCluster) -> (ClusterConnection, UnboundedReceiver<PushInfo>) {
    let (tx, rx) = unbounded_channel();
    let client = ClusterClientBuilder::new(cluster.urls())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()
        .unwrap();
    (client.get_async_connection().await.unwrap(), rx)
}

/// The next push of `kind`, skipping others; panics after `CLUSTER_WAIT`.
async fn next_push(rx: &mut UnboundedReceiver<PushInfo>, kind: PushKind) -> Vec<Value> {
    let found = tokio::time::timeout(CLUSTER_WAIT, async {
        loop {
            let push = rx.recv().await.expect("the connection lives");
            if push.kind == kind {
                return push.data;
            }
        }
    });
    found.await.unwrap_or_else(|_| panic!("no {kind:?} push"))
}

/// `(channel, payload)` of a `smessage` push.
fn smessage(data: &[Value]) -> (String, String) {
    let text = |v: &Value| String::from_redis_value(v.clone()).unwrap();
    (text(&data[0]), text(&data[1]))
}

/// Subscribers of `channel` on each live node (`PUBSUB SHARDNUMSUB`), summed.
async fn shard_subscribers(cluster: &RedisCluster, channel: &str) -> i64 {
    let mut total = 0;
    for port in cluster.live_ports() {
        let (_, n): (String, i64) =
            node_query(port, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel)).await.unwrap();
        total += n;
    }
    total
}

#[tokio::test]
async fn sharded_pubsub_works_on_the_cluster_connection() {
    let cluster = RedisCluster::start().await;
    let (mut sub, mut pushes) = push_connection(&cluster).await;
    let mut publisher = ClusterClient::new(cluster.urls()).unwrap().get_async_connection().await.unwrap();
    let rooms = room_per_primary(&cluster).await;
    for room in rooms.values() {
        sub.ssubscribe(channel(room)).await.unwrap();
        assert_eq!(smessage(&next_push(&mut pushes, PushKind::SSubscribe).await).0, channel(room));
    }
    for (primary, room) in &rooms {
        let on_primary: Vec<Value> =
            node_query(*primary, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel(room))).await.unwrap();
        assert_eq!(on_primary[1], Value::Int(1), "{room}'s subscription is on its shard's primary");
        run_room_script(&mut publisher, room, &channel(room), room, &[]).await.unwrap();
        let got = smessage(&next_push(&mut pushes, PushKind::SMessage).await);
        assert_eq!(got, (channel(room), room.clone()), "the script's SPUBLISH reached the subscriber");
    }
    let room = rooms.values().next().unwrap();
    sub.sunsubscribe(channel(room)).await.unwrap();
    next_push(&mut pushes, PushKind::SUnsubscribe).await;
    assert_eq!(shard_subscribers(&cluster, &channel(room)).await, 0);
}

/// Whether a push of `kind` about `channel` arrives within `within` (others are skipped).
async fn push_about(
    rx: &mut UnboundedReceiver<PushInfo>,
    kind: PushKind,
    channel: &str,
    within: Duration,
) -> bool {
    let wanted = async { while smessage(&next_push(rx, kind.clone()).await).0 != channel {} };
    tokio::time::timeout(within, wanted).await.is_ok()
}

/// What redis-rs 1.8.1 does with a sharded subscription when its shard changes primary.
/// Killed primary: the `Disconnection` push says something broke (not which node); nothing
/// resubscribes until a command touches that shard (no periodic topology refresh); then an
/// `ssubscribe` confirmation arrives, yet no node holds the subscription and publishes
/// reach nobody. Switch-over: the server's unasked `sunsubscribe` makes redis-rs forget the
/// channel for good. If this test fails, redis-rs changed: look again before building on
/// one plain connection per shard (the next test).
#[tokio::test]
async fn the_cluster_connection_loses_sharded_subscriptions_when_a_shard_changes_primary() {
    let mut cluster = RedisCluster::start().await;
    let (mut sub, mut pushes) = push_connection(&cluster).await;
    let mut publisher = ClusterClient::new(cluster.urls()).unwrap().get_async_connection().await.unwrap();
    let rooms: Vec<(u16, String)> = room_per_primary(&cluster).await.into_iter().collect();
    let short = Duration::from_secs(2);
    for (_, room) in &rooms[..2] {
        sub.ssubscribe(channel(room)).await.unwrap();
        assert!(push_about(&mut pushes, PushKind::SSubscribe, &channel(room), CLUSTER_WAIT).await);
    }

    let (killed, room) = &rooms[0];
    cluster.kill_primary(*killed).await;
    next_push(&mut pushes, PushKind::Disconnection).await;
    let resubscribed = push_about(&mut pushes, PushKind::SSubscribe, &channel(room), short).await;
    assert!(!resubscribed, "no resubscription while no command touches the shard");
    let _: Option<i64> = sub.get(format!("ssechat:{{{room}}}:seq")).await.unwrap();
    assert!(push_about(&mut pushes, PushKind::SSubscribe, &channel(room), CLUSTER_WAIT).await);
    let reached: i64 =
        redis::cmd("SPUBLISH").arg(channel(room)).arg("lost").query_async(&mut publisher).await.unwrap();
    let held = shard_subscribers(&cluster, &channel(room)).await;
    assert_eq!((reached, held), (0, 0), "confirmed, yet held nowhere");

    let (switched, room) = &rooms[1];
    cluster.switch_over(*switched).await;
    assert!(push_about(&mut pushes, PushKind::SUnsubscribe, &channel(room), CLUSTER_WAIT).await);
    let _: Option<i64> = sub.get(format!("ssechat:{{{room}}}:seq")).await.unwrap();
    let resubscribed = push_about(&mut pushes, PushKind::SSubscribe, &channel(room), short).await;
    assert!(!resubscribed, "a channel the server unsubscribed is forgotten");
    assert_eq!(shard_subscribers(&cluster, &channel(room)).await, 0);
}

/// A plain RESP3 connection subscribed to `channel` on a node that serves its slot: asks the
/// node on `port` first and follows `MOVED`. Its pushes (messages, an unasked `sunsubscribe`
/// when the slot moves away, `Disconnection` when the node dies) arrive on the receiver.
async fn subscribe_on_owner(
    mut port: u16,
    channel: &str,
) -> (MultiplexedConnection, UnboundedReceiver<PushInfo>) {
    loop {
        let (tx, rx) = unbounded_channel();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/?protocol=resp3")).unwrap();
        let config = AsyncConnectionConfig::new().set_push_sender(tx);
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
        match redis::cmd("SSUBSCRIBE").arg(channel).exec_async(&mut conn).await {
            Ok(()) => return (conn, rx),
            Err(e) => {
                let (address, _slot) = e.redirect_node().unwrap_or_else(|| panic!("SSUBSCRIBE: {e}"));
                port = address.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
    }
}

/// Publishes `payload` in `room` with the room script and waits for it on `pushes`.
async fn delivered(
    publisher: &mut ClusterConnection,
    pushes: &mut UnboundedReceiver<PushInfo>,
    room: &str,
    payload: &str,
) {
    run_room_script(publisher, room, &channel(room), payload, &[]).await.unwrap();
    let got = smessage(&next_push(pushes, PushKind::SMessage).await);
    assert_eq!(got, (channel(room), payload.to_owned()));
}

/// The way that works: one plain connection per shard, found by following `MOVED`; when it
/// breaks (`Disconnection`) or the server drops the subscription (`sunsubscribe` nobody
/// asked for, on a switch-over or slot move), subscribe again the same way. What was
/// published in between is lost to pub/sub: the room must catch up from its log.
#[tokio::test]
async fn a_subscription_per_shard_following_moved_survives_failovers() {
    let mut cluster = RedisCluster::start().await;
    let mut publisher = ClusterClient::new(cluster.urls()).unwrap().get_async_connection().await.unwrap();
    let rooms: Vec<(u16, String)> = room_per_primary(&cluster).await.into_iter().collect();

    let (switched, room) = &rooms[0];
    let (_conn, mut pushes) = subscribe_on_owner(cluster.live_ports()[0], &channel(room)).await;
    delivered(&mut publisher, &mut pushes, room, "before").await;
    let promoted = cluster.switch_over(*switched).await;
    next_push(&mut pushes, PushKind::SUnsubscribe).await;
    // Not asked on the demoted primary: Redis 7.0.15 accepts SSUBSCRIBE there (no MOVED)
    // and then delivers nothing. Another shard's node redirects to the new owner.
    let elsewhere = cluster.live_ports().into_iter().find(|p| ![*switched, promoted].contains(p)).unwrap();
    let (_conn, mut pushes) = subscribe_on_owner(elsewhere, &channel(room)).await;
    delivered(&mut publisher, &mut pushes, room, "after a switch-over").await;

    let (killed, room) = &rooms[1];
    let (_conn, mut pushes) = subscribe_on_owner(cluster.live_ports()[0], &channel(room)).await;
    delivered(&mut publisher, &mut pushes, room, "before").await;
    cluster.kill_primary(*killed).await;
    next_push(&mut pushes, PushKind::Disconnection).await;
    let (_conn, mut pushes) = subscribe_on_owner(cluster.live_ports()[0], &channel(room)).await;
    delivered(&mut publisher, &mut pushes, room, "after a failover").await;
}

/// What the write `call` wrote, if anything.
async fn written(
    call: ssechat::store::redis_room::Call<'_>,
    conn: &mut ClusterConnection,
) -> Option<ssechat::store::redis_room::Written> {
    call.run(conn, None).await.unwrap().0.and_then(ssechat::store::redis_room::Outcome::written)
}

/// The store's own room scripts (`ssechat::store::redis_room`), on a cluster connection:
/// their keys are one room's, so each runs on the room's shard; the room index follows.
#[tokio::test]
async fn the_stores_room_scripts_run_on_a_cluster() {
    use ssechat::domain::{Change, MessageText, NewMessage, RoomName, TakeBack};
    use ssechat::store::redis_room::{ROOMS, RoomScripts, log_key};

    let cluster = RedisCluster::start().await;
    let mut conn = ClusterClient::new(cluster.urls()).unwrap().get_async_connection().await.unwrap();
    let scripts = RoomScripts::default();
    for name in room_per_primary(&cluster).await.into_values() {
        let room = RoomName::parse(&name).unwrap();
        let new = NewMessage::parse(&name, Some("ana"), Some("hello")).unwrap();
        let first = written(scripts.append(&new, 100, None), &mut conn).await.expect("a new message");
        RoomScripts::note(&mut conn, &room, first.ms).await.unwrap();
        let target = written(scripts.append(&new, 100, None), &mut conn).await.expect("another").payload;
        let target: serde_json::Value = serde_json::from_slice(&target).unwrap();
        let edit = TakeBack {
            room: room.clone(),
            target: target["id"].as_u64().unwrap(),
            change: Change::Edit(MessageText::parse("edited").unwrap()),
        };
        let edited = written(scripts.take_back(&edit, 100, None), &mut conn).await.expect("an edit");
        RoomScripts::note(&mut conn, &room, edited.ms).await.unwrap();
        assert_eq!(conn.zcard::<_, usize>(log_key(&room)).await.unwrap(), 3, "{name}: two messages, an edit");
        let score: Option<i64> = conn.zscore(ROOMS, &name).await.unwrap();
        assert_eq!(score, Some(edited.ms), "{name} is in the room index at its last write");

        assert!(!scripts.forget(&mut conn, &room, 0, edited.ms).await.unwrap(), "{name} is not idle");
        assert!(scripts.forget(&mut conn, &room, 0, edited.ms + 1).await.unwrap(), "{name} is idle");
        assert_eq!(conn.zcard::<_, usize>(log_key(&room)).await.unwrap(), 0, "{name}'s log is gone");
        assert_eq!(
            conn.zscore::<_, _, Option<i64>>(ROOMS, &name).await.unwrap(),
            None,
            "and its index entry"
        );
    }
}

/// The whole store (not only its scripts) opened on a Cluster through `RedisConn`: history,
/// the room list, accounts and rules, one room per primary; with a second node, the shared
/// send limit, presence and typing. Delivery is the contract's (next test); the follower
/// still subscribes on one node (see `RedisStore::open_cluster`).
#[tokio::test]
async fn the_store_opened_on_a_cluster_keeps_history_accounts_and_rules() {
    use ssechat::accounts::{User, skeleton};
    use ssechat::domain::{Author, NewMessage, PresenceView, RoomName, Timestamp};
    use ssechat::hub::Hub;
    use ssechat::rules::{Perm, RoomPattern, Rule, Subject};
    use ssechat::store::{Range, Store};

    let cluster = RedisCluster::start().await;
    let store = cluster.store(Hub::new(64)).await;
    let rooms = room_per_primary(&cluster).await;
    for name in rooms.values() {
        let room = RoomName::parse(name).unwrap();
        let mut sent = vec![];
        for text in ["one", "two"] {
            sent.push(
                store.append(NewMessage::parse(name, Some("ana"), Some(text)).unwrap()).await.unwrap().id,
            );
        }
        assert_eq!(sent[1], sent[0] + 1, "{name}: ids follow");
        let page = store.read(&room, Range::After(0), 10).await.unwrap();
        assert_eq!(page.entries.iter().map(|e| e.id()).collect::<Vec<_>>(), sent, "{name}'s history");
    }
    let listed: Vec<String> =
        store.rooms(10).await.unwrap().into_iter().map(|r| r.name.to_string()).collect();
    assert_eq!(listed.len(), rooms.len(), "every room is listed: {listed:?}");

    let ana = Author::parse("Ana").unwrap();
    let user = User {
        name: ana.clone(),
        admin: false,
        password: "$argon2id$x".into(),
        epoch: 1,
        created: Timestamp::now(),
    };
    assert_eq!(store.add_user(&user).await.unwrap(), None);
    assert_eq!(store.user(&skeleton("ana")).await.unwrap().map(|u| u.name), Some(ana));

    let rule = Rule {
        subject: Subject::parse("ana").unwrap(),
        pattern: RoomPattern::parse("dev-*").unwrap(),
        perm: Perm::parse("rw").unwrap(),
    };
    store.set_rule(&rule).await.unwrap();
    assert_eq!(store.directory().await.unwrap().rules, [rule]);

    // A second node: the same send limit, and each sees the other's readers.
    let other = cluster.store(Hub::new(64)).await;
    let client: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(store.rate_limiter(Duration::from_secs(60), 1).take(client).await.unwrap(), None);
    assert!(
        other.rate_limiter(Duration::from_secs(60), 1).take(client).await.unwrap().is_some(),
        "one bucket"
    );
    for name in rooms.values() {
        let room = RoomName::parse(name).unwrap();
        let ana = PresenceView { names: vec!["ana".into()], anonymous: 1, ..PresenceView::default() };
        store.share_presence(&room, ana.clone(), ana).await.unwrap();
        let seen = other.presence(&room, PresenceView::default()).await.unwrap();
        assert_eq!(
            (seen.names, seen.anonymous),
            (vec!["ana".to_owned()], 1),
            "{name}: the other node's readers"
        );
        store.typing(&room, &Author::parse("ana").unwrap()).await.unwrap();
    }
}

/// The store contract suite on a Cluster, one store at a time on an emptied Cluster
/// (FLUSHALL goes to every primary). The suite is `ssechat::store::contract`, public with
/// the `contract` feature, which the package's dev-dependency on itself turns on for tests.
#[tokio::test]
async fn the_store_contract_holds_on_a_cluster() {
    use std::sync::Arc;

    use ssechat::store::{RedisStore, Store};

    let cluster = RedisCluster::start().await;
    let urls = cluster.urls();
    ssechat::store::contract::run_all(|hub, retention| {
        let urls = urls.clone();
        async move {
            let mut conn = ClusterClient::new(urls.clone()).unwrap().get_async_connection().await.unwrap();
            redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
            Arc::new(RedisStore::open_cluster(&urls, hub, retention).await.unwrap()) as Arc<dyn Store>
        }
    })
    .await;
}

/// A subscription to `room` once `hub`'s node follows it, without what came before (the
/// first resync): from here on, only following the room brings messages.
async fn followed(
    hub: &std::sync::Arc<ssechat::hub::Hub>,
    room: &ssechat::domain::RoomName,
) -> ssechat::hub::Subscription {
    let mut sub = hub.subscribe(room);
    tokio::time::timeout(CLUSTER_WAIT, sub.followed()).await.expect("the room is followed");
    while sub.receiver().try_recv().is_ok() {}
    sub
}

/// The next message `sub` gets (other frames skipped).
async fn next_message(sub: &mut ssechat::hub::Subscription) -> ssechat::domain::Message {
    let next = async {
        loop {
            let frame = sub.receiver().recv().await.expect("the room stays open");
            if let ssechat::wire::Event::Message(message) = frame.event() {
                return message.clone();
            }
        }
    };
    tokio::time::timeout(CLUSTER_WAIT, next).await.expect("a message arrives")
}

/// `channel`'s sharded subscribers on the node at `port`.
async fn shard_subscribers_on(port: u16, channel: &str) -> i64 {
    let (_, n): (String, i64) =
        node_query(port, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel)).await.unwrap();
    n
}

/// Two nodes on a Cluster: the reading node holds each read room's channel on that room's
/// primary only (`SSUBSCRIBE`; no plain channel anywhere), gets every message the other node
/// writes, in order, and lets each channel go once its readers left (after the linger).
#[tokio::test]
async fn a_node_follows_each_read_room_on_its_primary_only_while_read() {
    use ssechat::domain::{NewMessage, RoomName};
    use ssechat::hub::Hub;
    use ssechat::store::Store;

    let cluster = RedisCluster::start().await;
    let writer = cluster.store(Hub::new(64)).await;
    let hub = Hub::new(64);
    let _reader = cluster.store(hub.clone()).await;
    let rooms = room_per_primary(&cluster).await;
    let mut subs = vec![];
    for (&primary, name) in &rooms {
        let sub = followed(&hub, &RoomName::parse(name).unwrap()).await;
        for port in cluster.live_ports() {
            let expected = i64::from(port == primary);
            assert_eq!(shard_subscribers_on(port, &channel(name)).await, expected, "{name} on {port}");
            let plain: Vec<String> = node_query(port, redis::cmd("PUBSUB").arg("CHANNELS")).await.unwrap();
            assert_eq!(plain, Vec::<String>::new(), "no plain channel on {port}");
        }
        subs.push((name, sub));
    }
    for (name, sub) in &mut subs {
        let mut sent = vec![];
        for text in ["one", "two", "three"] {
            sent.push(
                writer.append(NewMessage::parse(name, Some("ana"), Some(text)).unwrap()).await.unwrap(),
            );
        }
        for message in sent {
            assert_eq!(next_message(sub).await, message, "{name}");
        }
    }
    drop(subs);
    for name in rooms.values() {
        until("the room's channel to be let go", || async {
            shard_subscribers(&cluster, &channel(name)).await == 0
        })
        .await;
    }
}

/// `(id, text)` of messages, in order.
type Entries = Vec<(u64, String)>;

/// What a reader of one room has seen: `(id, text)` in order, as a stream shows them (live,
/// or read from the log from its last id after a resync or a lag).
struct Seen {
    room: ssechat::domain::RoomName,
    entries: Entries,
    resyncs: usize,
}

impl Seen {
    fn last(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.0)
    }

    /// Every acknowledged entry shown, and everything shown once, in order.
    fn holds(&self, acked: &Entries) {
        let ids: Vec<u64> = self.entries.iter().map(|e| e.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{}: in order, once each", self.room);
        for entry in acked {
            assert!(self.entries.contains(entry), "{}: {entry:?} acknowledged, never shown", self.room);
        }
    }

    fn add(&mut self, message: &ssechat::domain::Message) {
        if message.id > self.last() {
            self.entries.push((message.id, message.text.to_string()));
        }
    }

    async fn catch_up(&mut self, store: &dyn ssechat::store::Store) {
        loop {
            let page = store.read(&self.room, ssechat::store::Range::After(self.last()), 100).await.unwrap();
            if page.entries.is_empty() {
                return;
            }
            for message in page.current() {
                self.add(&message);
            }
        }
    }

    /// Reads `room` on `hub`'s node in a task of its own, from now until the message "end"
    /// shows (live, or read from the log after a resync or a lag, as a stream does).
    async fn reading(
        hub: &std::sync::Arc<ssechat::hub::Hub>,
        store: std::sync::Arc<ssechat::store::RedisStore>,
        room: ssechat::domain::RoomName,
    ) -> tokio::task::JoinHandle<Seen> {
        let mut sub = followed(hub, &room).await;
        tokio::spawn(async move {
            let mut seen = Seen { room, entries: vec![], resyncs: 0 };
            seen.follow(&mut sub, &*store).await;
            seen
        })
    }

    async fn follow(&mut self, sub: &mut ssechat::hub::Subscription, store: &dyn ssechat::store::Store) {
        use tokio::sync::broadcast::error::RecvError;
        while self.entries.last().is_none_or(|e| e.1 != "end") {
            let frame =
                tokio::time::timeout(CLUSTER_WAIT, sub.receiver().recv()).await.expect("frames arrive");
            match frame.as_ref().map(|f| f.event()) {
                Ok(ssechat::wire::Event::Message(message)) => self.add(message),
                Ok(ssechat::wire::Event::Resync) => {
                    self.resyncs += 1;
                    self.catch_up(store).await;
                }
                Err(RecvError::Lagged(_)) => self.catch_up(store).await,
                Err(RecvError::Closed) => panic!("the room closed"),
                Ok(_) => {}
            }
        }
    }
}

/// Appends to rooms through a store until finished, a message per room every 5 ms, noting
/// each acknowledged one (`(id, text)` per room); failed appends are left out.
struct Posting {
    writer: std::sync::Arc<ssechat::store::RedisStore>,
    rooms: Vec<String>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<Entries>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Posting {
    fn start(writer: std::sync::Arc<ssechat::store::RedisStore>, rooms: Vec<String>) -> Posting {
        use ssechat::domain::NewMessage;
        use ssechat::store::Store;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(vec![vec![]; rooms.len()]));
        let stop = tokio_util::sync::CancellationToken::new();
        let (noted, stopped, names, store) = (acked.clone(), stop.clone(), rooms.clone(), writer.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for n in 0.. {
                if stopped.is_cancelled() {
                    return;
                }
                tick.tick().await;
                for (i, room) in names.iter().enumerate() {
                    let text = format!("m{n}");
                    let new = NewMessage::parse(room, Some("ana"), Some(&text)).unwrap();
                    if let Ok(m) = store.append(new).await {
                        noted.lock().unwrap()[i].push((m.id, text));
                    }
                }
            }
        });
        Posting { writer, rooms, acked, stop, task }
    }

    /// Waits until five more appends to room `i` were acknowledged.
    async fn more_acked(&self, i: usize, what: &str) {
        let past = self.acked.lock().unwrap()[i].len();
        until(what, || async { self.acked.lock().unwrap()[i].len() >= past + 5 }).await;
    }

    /// Stops, posts "end" to every room, and gives what was acknowledged in each.
    async fn finish(self) -> Vec<Entries> {
        use ssechat::domain::NewMessage;
        use ssechat::store::Store;
        self.stop.cancel();
        self.task.await.unwrap();
        let mut acked = self.acked.lock().unwrap().clone();
        for (room, acked) in self.rooms.iter().zip(&mut acked) {
            let end = NewMessage::parse(room, Some("ana"), Some("end")).unwrap();
            let message = self.writer.append(end).await.expect("the end is stored");
            acked.push((message.id, "end".to_owned()));
        }
        acked
    }
}

/// A node writes to a room on every shard while another node reads them; one shard switches
/// over, another's primary is killed. Every acknowledged message reaches the reader once, in
/// order, with its id and text (live, or from the log after the resync the follower sends
/// once it subscribed again), and the rooms of the changed shards were resynced.
#[tokio::test]
async fn readers_on_a_cluster_get_every_acknowledged_message_through_failovers() {
    use std::sync::Arc;

    use ssechat::domain::RoomName;
    use ssechat::hub::Hub;

    let mut cluster = RedisCluster::start().await;
    let writer = Arc::new(cluster.store(Hub::new(64)).await);
    let hub = Hub::new(1024);
    let reader = Arc::new(cluster.store(hub.clone()).await);
    let rooms: Vec<(u16, String)> = room_per_primary(&cluster).await.into_iter().collect();
    let mut readers = vec![];
    for (_, name) in &rooms {
        readers.push(Seen::reading(&hub, reader.clone(), RoomName::parse(name).unwrap()).await);
    }
    let posting = Posting::start(writer, rooms.iter().map(|r| r.1.clone()).collect());
    posting.more_acked(1, "posts are acknowledged").await;
    cluster.switch_over(rooms[0].0).await;
    posting.more_acked(0, "posts go on after the switch-over").await;
    cluster.kill_primary(rooms[1].0).await;
    posting.more_acked(1, "posts go on after the failover").await;
    let acked = posting.finish().await;
    let mut seen = vec![];
    for (reading, acked) in readers.into_iter().zip(&acked) {
        let reader = reading.await.unwrap();
        reader.holds(acked);
        seen.push(reader);
    }
    assert!(seen[0].resyncs > 0, "the switched shard's room caught up");
    assert!(seen[1].resyncs > 0, "the failed shard's room caught up");
}

/// redis-rs follows `MOVED` for a command but not inside a pipeline (the store reads a
/// room's page, and the access rules, with a `MULTI`, and writes with a script and its `WAIT`):
/// after their shards switched over, each still works at the first try.
#[tokio::test]
async fn transactions_follow_a_moved_slot() {
    use ssechat::domain::{NewMessage, RoomName};
    use ssechat::hub::Hub;
    use ssechat::store::{Range, Store};

    let cluster = RedisCluster::start().await;
    let store = cluster.store(Hub::new(64)).await;
    let room = RoomName::parse("moving").unwrap();
    let sent = store.append(NewMessage::parse("moving", Some("ana"), Some("hi")).unwrap()).await.unwrap();
    store.directory().await.unwrap();
    let (room_shard, rules_shard) =
        (cluster.primary_of("{moving}").await, cluster.primary_of("{directory}").await);
    cluster.switch_over(room_shard).await;
    if rules_shard != room_shard {
        cluster.switch_over(rules_shard).await;
    }
    // A write is a script and its WAIT in one pipeline: it too goes where the slot went.
    let again = NewMessage::parse("moving", Some("ana"), Some("again")).unwrap();
    let again = store.append(again).await.expect("a post after its shard moved");
    let page = store.read(&room, Range::Latest, 10).await.expect("a room's page after its shard moved");
    assert_eq!(page.current(), [sent, again]);
    store.directory().await.expect("the rules after their shard moved");
}

/// Two ssechat nodes on a Cluster, over HTTP: posts go to node A, one stream per room (a
/// room on every shard) reads on node B. One shard's primary is killed, another switches
/// over, while posts go on. Every post answered `201` shows on its stream once, in order,
/// with its id; posts answered otherwise may show or not, never twice.
#[tokio::test]
async fn streams_on_a_cluster_show_every_acknowledged_post_through_a_failover() {
    use std::sync::{Arc, Mutex};

    use crate::helpers::TestApp;
    use ssechat::config::StoreUrl;
    use ssechat::domain::Message;

    let mut cluster = RedisCluster::start().await;
    let node = || {
        let seeds = cluster.urls();
        TestApp::spawn_with(move |c| {
            c.store = StoreUrl::RedisCluster(seeds);
            c.heartbeat = Duration::from_millis(200);
            c.send_timeout = Duration::from_secs(10);
        })
    };
    let (a, b) = (Arc::new(node().await), node().await);
    let rooms: Vec<(u16, String)> = room_per_primary(&cluster).await.into_iter().collect();
    let mut streams = vec![];
    for (_, room) in &rooms {
        streams.push(b.subscribe(&format!("?room={room}"), &[]).await);
    }
    let acked: Arc<Mutex<Vec<Vec<Message>>>> = Arc::new(Mutex::new(vec![vec![]; rooms.len()]));
    let stop = tokio_util::sync::CancellationToken::new();
    let posting = {
        let (a, acked, stop) = (a.clone(), acked.clone(), stop.clone());
        let names: Vec<String> = rooms.iter().map(|r| r.1.clone()).collect();
        tokio::spawn(async move {
            for n in 0.. {
                for (i, room) in names.iter().enumerate() {
                    if stop.is_cancelled() {
                        return;
                    }
                    let body = serde_json::json!({ "room": room, "author": "ana", "text": format!("m{n}") });
                    let response = a.post_json(body).await;
                    if response.status() == 201 {
                        let message: Message = response.json().await.unwrap();
                        acked.lock().unwrap()[i].push(message);
                    }
                }
            }
        })
    };
    let more_acked = |i: usize| {
        let (acked, past) = (acked.clone(), acked.lock().unwrap()[i].len());
        move || {
            let acked = acked.clone();
            async move { acked.lock().unwrap()[i].len() >= past + 5 }
        }
    };
    until("posts are acknowledged", more_acked(1)).await;
    cluster.kill_primary(rooms[1].0).await;
    until("posts go on after the failover", more_acked(1)).await;
    cluster.switch_over(rooms[0].0).await;
    until("posts go on after the switch-over", more_acked(0)).await;
    stop.cancel();
    posting.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    for ((stream, acked), (_, room)) in streams.iter_mut().zip(&acked).zip(&rooms) {
        let last = acked.last().unwrap().id;
        let mut shown: Vec<Message> = vec![];
        while shown.last().is_none_or(|m| m.id < last) {
            shown.push(stream.next_message().await);
        }
        assert!(shown.windows(2).all(|w| w[0].id < w[1].id), "{room}: in order, once each");
        for message in acked {
            assert!(shown.contains(message), "{room}: {message:?} acknowledged, never shown");
        }
    }
}

/// A room's slot moves to another primary (resharding) while one node writes to the room and
/// another reads it: Redis ends the reader's subscription, its node subscribes on the new
/// primary, and every acknowledged message shows once, in order.
#[tokio::test]
async fn readers_follow_a_rooms_slot_to_another_primary() {
    use std::sync::Arc;

    use ssechat::domain::RoomName;
    use ssechat::hub::Hub;

    let cluster = RedisCluster::start().await;
    let writer = cluster.store(Hub::new(64)).await;
    let hub = Hub::new(1024);
    let reader = cluster.store(hub.clone()).await;
    let rooms: Vec<(u16, String)> = room_per_primary(&cluster).await.into_iter().collect();
    let ((from, name), (to, _)) = (rooms[0].clone(), rooms[1].clone());
    let reader = Arc::new(reader);
    let reading = Seen::reading(&hub, reader.clone(), RoomName::parse(&name).unwrap()).await;
    let posting = Posting::start(Arc::new(writer), vec![name.clone()]);
    posting.more_acked(0, "posts are acknowledged").await;
    cluster.move_slot(cluster.slot(&channel(&name)).await, to).await;
    posting.more_acked(0, "posts go on after the move").await;
    let acked = posting.finish().await.remove(0);
    let seen = reading.await.unwrap();
    seen.holds(&acked);
    assert!(seen.resyncs > 0, "the room caught up after the move");
    until("the subscription to move", || async {
        shard_subscribers_on(to, &channel(&name)).await == 1
            && shard_subscribers_on(from, &channel(&name)).await == 0
    })
    .await;
}

/// A Cluster whose nodes want a password (`requirepass`, and `masterauth` for their
/// replicas): `redis+cluster://:PASSWORD@...` gives it to every node, commands and sharded
/// subscriptions alike; without it the store does not start, and no message shows it.
#[tokio::test]
async fn a_cluster_with_a_password_takes_it_from_the_url() {
    use crate::helpers::TestApp;
    use ssechat::config::StoreUrl;
    use ssechat::hub::Hub;
    use ssechat::store::{RedisStore, Retention};

    let cluster = RedisCluster::start().await;
    let rooms: Vec<String> = room_per_primary(&cluster).await.into_values().collect();
    for port in cluster.live_ports() {
        for (key, value) in [("masterauth", "s3cret"), ("requirepass", "s3cret")] {
            let _: () = node_query(port, redis::cmd("CONFIG").arg("SET").arg(key).arg(value)).await.unwrap();
        }
    }
    let without = RedisStore::open_cluster(&cluster.urls(), Hub::new(4), Retention::count(10)).await;
    let error = without.err().expect("no password: no store");
    assert!(error.contains("redis+cluster://127.0.0.1:"), "{error}");

    let nodes: Vec<String> = cluster.live_ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let store: StoreUrl = format!("redis+cluster://:s3cret@{}", nodes.join(",")).parse().unwrap();
    assert!(!store.described().contains("s3cret"), "{}", store.described());
    let node = || {
        let store = store.clone();
        TestApp::spawn_with(move |c| c.store = store)
    };
    let (a, b) = (node().await, node().await);
    for room in &rooms {
        let mut stream = b.subscribe(&format!("?room={room}"), &[]).await;
        let sent = a.say(room, "ana", "behind a password").await;
        assert_eq!(stream.next_message().await, sent, "{room}");
    }
}
