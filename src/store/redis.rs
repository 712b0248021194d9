//! The Redis store: history, ids and fan-out shared by every node (`--store redis://...`,
//! or `redis+cluster://...` on a Redis Cluster: [`RedisStore::open_cluster`]).
//!
//! Publishing is one Lua script, run atomically by Redis: take the room's next id, append
//! the message to the room's log (a sorted set scored by id, capped at `--retain`), note the
//! room's activity, and PUBLISH it; the room index follows by a separate command. Ids and
//! order are decided in one place, so every node sees the same messages in the same order
//! with the same ids.
//!
//! Each room has its own channel, and each node one pub/sub connection, subscribed to the
//! rooms it has readers of only (`redis/follow.rs`); what arrives goes to its hub, which
//! fans out locally. A room's first subscription, and any broken connection, has the
//! room's (or every) local stream catch up from the log, so a gap in notifications never
//! becomes a gap in a stream.
//!
//! The `/send` acknowledgement means "the script ran": the message is in Redis, as durable
//! as that Redis is configured to be (AOF with `appendfsync everysec` or `always`). On a
//! Redis Cluster it also means a replica has it (`WAIT 1` on its primary, see
//! `redis/replicas.rs`), unless that primary has no replica that keeps up; and a write
//! carries a token of its own, remembered with its entry (for a minute under the token
//! when there is no client key), because the cluster connection may send a script twice
//! (see [`room::Attempt`]).
//! Deletes and edits are entries of the same log, published on the same channel
//! ([`TAKE_BACK`]): a payload with `kind` `delete` or `edit` and a `target`; one without
//! `kind` (all that was written before them) is a message. Checking a take-back reads the
//! log from its target on, within the room's one key: no second slot.
//! Keys are `ssechat:{room}:seq`, `:log`, `:last` and `:key:K` (one slot per room, see
//! `redis/room.rs`) and `ssechat:rooms` (the room index, written after the script), the
//! channel `ssechat:{room}:ch`; one Redis primary (with replicas or Sentinel) or a Redis
//! Cluster, named as such (`redis://` at a Cluster node is refused: `refuse_cluster_node`).
//!
//! Rules, bans and room settings: see `redis/policy.rs`.
//!
//! The `/send` rate limit of every node lives here too ([`SharedRateLimiter`]): one key
//! per client, `ssechat:{client:ADDRESS}:send`, its own Cluster slot.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManagerConfig;
use redis::{AsyncCommands, Script};
use serde::Deserialize;
use tokio_util::sync::{CancellationToken, DropGuard};

mod accounts;
pub mod conn;
mod follow;
mod policy;
mod presence;
mod replicas;
pub mod room;
mod shards;
mod slots;

use self::conn::RedisConn;
use self::presence::SharedPresence;
use self::replicas::Replication;
use self::room::{Attempt, Outcome, ROOMS, RoomScripts, idempotency_key, log_key, remembered, seq_key};
use super::{Appended, Page, Range, Retention, RoomInfo, Store, StoreError};
use crate::domain::PresenceView;
use crate::domain::{
    Author, Entry, IdempotencyKey, Message, MessageId, MessageText, NewMessage, RoomName, TakeBack, Timestamp,
};
use crate::domain::{Session, Token, User};
use crate::hub::Hub;
use crate::rules::{Ban, BanTarget, Directory, RoomPattern, RoomSettings, Rule, Subject};

/// How long a command may take before `/send` answers 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long start-up waits for Redis before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How often messages older than `--retain-for` are deleted for real.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Rooms (or messages of one room) one pruning step looks at.
const PRUNE_PAGE: isize = 1000;

/// GCRA, the token bucket as one number: the key holds the bucket's "theoretical arrival
/// time" (TAT, microseconds, Redis clock). A send is allowed when, after adding one
/// interval, the TAT is at most `burst` intervals ahead of now. The key expires when the
/// bucket would be full again, since then it says nothing. Returns 0, or the wait in µs.
/// ARGV: interval (µs), tolerance (interval × burst, µs).
const TAKE_TOKEN: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
"#;

pub struct RedisStore {
    conn: RedisConn,
    /// This node's readers in Redis, and everyone else's (`redis/presence.rs`).
    presence: Arc<SharedPresence>,
    /// Tells every node's room list that messages changed.
    activity: follow::Activity,
    url: String,
    retention: Retention,
    scripts: RoomScripts,
    /// On a Cluster, which primaries lately had no replica to wait for.
    replication: Replication,
    /// Stops the subscription (and pruning) when the store is dropped.
    _stop: DropGuard,
}

/// An entry as the scripts store it. Payloads written before deletes and edits existed
/// have no `kind`: they are messages.
#[derive(Deserialize)]
struct Stored {
    id: MessageId,
    room: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    text: String,
    /// A message's (and an edit's message's) time; a delete's own.
    time: i64,
    /// `delete` or `edit`; none: a message.
    kind: Option<String>,
    target: Option<MessageId>,
    /// An edit's own time.
    edited: Option<i64>,
    #[serde(default)]
    user: bool,
}

impl Stored {
    /// Validates what was read back, so a damaged entry is an error, never a bad message.
    fn decode(payload: &[u8]) -> Result<Entry, String> {
        let s: Stored =
            serde_json::from_slice(payload).map_err(|e| format!("damaged entry in Redis: {e}"))?;
        let room = RoomName::parse(&s.room).map_err(|e| e.to_string())?;
        let time = |ms| Timestamp::from_millis(ms).ok_or("damaged time in Redis");
        let target = s.target.ok_or("a delete or edit without a target in Redis");
        let message = |id| -> Result<Message, String> {
            Ok(Message {
                id,
                room: room.clone(),
                author: Author::read_back(&s.author).map_err(|e| e.to_string())?,
                text: MessageText::read_back(&s.text).map_err(|e| e.to_string())?,
                time: time(s.time)?,
                edited: s.edited.map(time).transpose()?,
                user: s.user,
            })
        };
        match s.kind.as_deref() {
            None => Ok(Entry::Message(message(s.id)?)),
            Some("delete") => {
                Ok(Entry::Delete { id: s.id, room: room.clone(), target: target?, time: time(s.time)? })
            }
            Some("edit") => Ok(Entry::Edit { id: s.id, message: message(target?)? }),
            Some(other) => Err(format!("unknown kind of entry in Redis: {other}")),
        }
    }

    /// A payload that must be a message (what a client's idempotency key remembers).
    fn decode_message(payload: &[u8]) -> Result<Message, String> {
        Self::decode(payload).and_then(Self::message)
    }

    /// What an idempotency key names must be a message.
    fn message(entry: Entry) -> Result<Message, String> {
        match entry {
            Entry::Message(m) => Ok(m),
            _ => Err("an idempotency key names a delete or edit in Redis".to_owned()),
        }
    }
}

/// Who follows the rooms: one pub/sub connection on one Redis (`redis/follow.rs`), or
/// sharded subscriptions on a Cluster's primaries (`redis/shards.rs`).
enum Follower {
    Single(redis::Client),
    /// With the `USER:PASSWORD@` (or nothing) every node takes.
    Shards(RedisConn, String),
}

/// What a failed `APPEND` means. Refused connection: the script was never sent. An error
/// reply: Redis did not run it (or stopped it before its first write). Anything else (a
/// timeout, a dropped connection, a reply that won't decode) came after the script was sent:
/// it may have run, so the outcome is unknown until the key is asked again.
fn append_failed(url: &str, e: redis::RedisError) -> StoreError {
    let certain = e.is_connection_refusal() || matches!(e.kind(), redis::ErrorKind::Server(_));
    if certain { unavailable(url, e) } else { StoreError::Unknown(format!("Redis at {url}: {e}")) }
}

impl RedisStore {
    /// Connects, checks Redis answers, and subscribes before returning, so nothing
    /// published after start-up is missed. An unreachable Redis is an error naming the URL.
    pub async fn open(url: &str, hub: Arc<Hub>, retention: Retention) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL {url}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = tokio::time::timeout(START_TIMEOUT, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| unreachable(url, "timed out"))?
            .map(RedisConn::Single)
            .map_err(|e| unreachable(url, e))?;
        refuse_cluster_node(&mut conn.clone(), &client, url).await?;
        Self::start(conn, Follower::Single(client), url, hub, retention).await
    }

    /// The store on a Redis Cluster (`--store redis+cluster://`), found through `seeds`
    /// (`redis://HOST:PORT`; the cluster connection finds the others from any live one):
    /// commands and scripts go through the cluster connection, which routes each by its
    /// key's slot; each room's channel is followed on its shard's primary
    /// (`redis/shards.rs`). Unreachable seeds are an error naming them.
    pub async fn open_cluster(seeds: &[String], hub: Arc<Hub>, retention: Retention) -> Result<Self, String> {
        let label = Self::cluster_label(seeds);
        let conn = tokio::time::timeout(START_TIMEOUT, RedisConn::cluster(seeds, COMMAND_TIMEOUT))
            .await
            .map_err(|_| unreachable(&label, "timed out"))?
            .map_err(|e| cluster_unreachable(&label, e))?;
        let follower =
            Follower::Shards(conn.clone(), seeds.first().and_then(|s| userinfo(s)).unwrap_or_default());
        Self::start(conn, follower, &label, hub, retention).await
    }

    /// How a Cluster is named in logs and errors: `redis+cluster://HOST:PORT,...`, as the
    /// flag names it, from its seeds (`redis://HOST:PORT`).
    /// A password is shown as `***`, once.
    pub fn cluster_label(seeds: &[String]) -> String {
        let userinfo = seeds.first().and_then(|seed| userinfo(seed)).unwrap_or_default();
        let nodes: Vec<&str> = seeds
            .iter()
            .map(|s| s.trim_start_matches("redis://").trim_start_matches(&userinfo).trim_end_matches('/'))
            .collect();
        redact_password(&format!("redis+cluster://{userinfo}{}", nodes.join(",")))
    }

    /// Checks `conn` answers, starts `follower`, presence and pruning. `url` names the Redis
    /// in errors.
    async fn start(
        mut conn: RedisConn,
        follower: Follower,
        url: &str,
        hub: Arc<Hub>,
        retention: Retention,
    ) -> Result<Self, String> {
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| unreachable(url, e))?;
        let stop = CancellationToken::new();
        let (subscribed, ready) = tokio::sync::oneshot::channel();
        let (hub2, stop2) = (Arc::clone(&hub), stop.clone());
        match follower {
            Follower::Single(client) => tokio::spawn(follow::follow(client, hub2, stop2, subscribed)),
            Follower::Shards(cluster, userinfo) => {
                tokio::spawn(shards::follow(cluster, userinfo, hub2, stop2, subscribed))
            }
        };
        tokio::time::timeout(START_TIMEOUT, ready)
            .await
            .map_err(|_| unreachable(url, "could not subscribe in time"))?
            .map_err(|_| unreachable(url, "could not subscribe"))?;
        if retention.age.is_some() {
            tokio::spawn(prune_by_age(conn.clone(), retention, stop.clone()));
        }
        let presence = SharedPresence::start(conn.clone(), Arc::clone(&hub), stop.clone())
            .await
            .map_err(|e| unreachable(url, e))?;
        let scripts = RoomScripts::new(conn.publish_command());
        Ok(Self {
            activity: follow::Activity::new(Arc::clone(&hub), conn.clone()),
            conn,
            presence,
            url: url.to_owned(),
            retention,
            scripts,
            replication: Replication::default(),
            _stop: stop.drop_guard(),
        })
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        unavailable(&self.url, e)
    }

    /// A send limit of one every `interval`, `burst` at once, per client, on this store's
    /// connection: the same buckets for every node.
    pub fn rate_limiter(&self, interval: Duration, burst: u32) -> SharedRateLimiter {
        let interval = interval.as_micros().max(1) as f64;
        SharedRateLimiter {
            conn: self.conn.clone(),
            url: self.url.clone(),
            script: Script::new(TAKE_TOKEN),
            interval,
            tolerance: interval * f64::from(burst.max(1)),
        }
    }

    /// A token for one write, when a request may reach Redis twice (a Cluster): the script
    /// stores it with the entry it remembers (under the client's key, or under the token
    /// itself for [`room::ATTEMPT_TTL`]), so a second run of the same write gives back the
    /// first one's entry instead of writing another, and knows it was its own.
    fn attempt(&self) -> Option<Attempt> {
        self.conn.resends().then(Attempt::new)
    }

    /// `submit`, as the one `attempt`. A second run of the same attempt is answered as stored
    /// now; a client's key seen before, as a replay.
    async fn submit_once(&self, new: NewMessage, attempt: Option<&Attempt>) -> Result<Appended, StoreError> {
        let call = self.scripts.append(&new, self.retention.count, attempt);
        let outcome = self.write(&call, &new.room).await?;
        let outcome =
            outcome.ok_or_else(|| StoreError::Unknown("Redis answered an append with nil".into()))?;
        let replayed = matches!(outcome, Outcome::Replayed(_));
        // The script ran, and may have stored what can't be read back: not "nothing saved".
        let entry = self.noted(&new.room, outcome).await;
        let message = entry.and_then(Stored::message).map_err(StoreError::Unknown)?;
        Ok(Appended { message, replayed })
    }

    /// `take_back`, as the one `attempt`: run twice, it gives back the same entry.
    async fn take_back_once(
        &self,
        change: TakeBack,
        attempt: Option<&Attempt>,
    ) -> Result<Option<Entry>, StoreError> {
        let call = self.scripts.take_back(&change, self.retention.count, attempt);
        let Some(outcome) = self.write(&call, &change.room).await? else { return Ok(None) };
        self.noted(&change.room, outcome).await.map(Some).map_err(StoreError::Unknown)
    }

    /// Runs a write script on `room`'s primary; on a Cluster it waits for a replica too
    /// (`redis/replicas.rs`).
    async fn write(&self, call: &room::Call<'_>, room: &RoomName) -> Result<Option<Outcome>, StoreError> {
        let mut conn = self.conn.clone();
        self.replication.write(&mut conn, call, room).await.map_err(|e| append_failed(&self.url, e))
    }

    /// The second half of a write: the room moves up the room index, and room lists hear of
    /// it; then the entry is read back. A client's replay wrote nothing now; a write's
    /// second run is noted too (its first run's reply, and so its note, may have been lost).
    /// The entry is stored and published already, so a failed note is only logged: the room
    /// is missing from the list until its next message (or pruning repairs it).
    async fn noted(&self, room: &RoomName, outcome: Outcome) -> Result<Entry, String> {
        let (payload, ms) = match outcome {
            Outcome::Wrote(written) => (written.payload, Some(written.ms)),
            Outcome::Resent(payload) => (payload, None),
            Outcome::Replayed(payload) => return Stored::decode(&payload),
        };
        let entry = Stored::decode(&payload)?;
        let ms = ms.unwrap_or_else(|| entry.time().millis());
        if let Err(e) = RoomScripts::note(&mut self.conn.clone(), room, ms).await {
            tracing::warn!(%room, error = %e, "noting a room's activity in Redis failed");
        }
        self.activity.noted();
        Ok(entry)
    }

    /// The oldest id retention still shows, given the room's newest id.
    async fn first_held(&self, room: &RoomName, last_id: MessageId) -> Result<MessageId, StoreError> {
        let mut conn = self.conn.clone();
        let cutoff = self.retention.cutoff();
        let mut from = 0;
        loop {
            // Oldest first, a page at a time; pruning keeps expired entries few.
            let page: Vec<(Vec<u8>, f64)> = conn
                .zrangebyscore_limit_withscores(log_key(room), format!("({from}"), "+inf", 0, 100)
                .await
                .map_err(|e| self.unavailable(e))?;
            if page.is_empty() {
                return Ok(last_id + 1);
            }
            for (payload, score) in &page {
                let young = match cutoff {
                    None => true,
                    Some(cutoff) => {
                        Stored::decode(payload).map_err(|e| self.unavailable(e))?.time() >= cutoff
                    }
                };
                if young {
                    return Ok(*score as MessageId);
                }
                from = *score as MessageId;
            }
        }
    }

    /// One room of the room list: `None` if its messages expired meanwhile.
    async fn room_info(&self, name: String, last_time: i64) -> Result<Option<RoomInfo>, StoreError> {
        let room = RoomName::parse(&name).map_err(|e| self.unavailable(e))?;
        let last_id: Option<MessageId> =
            self.conn.clone().get(seq_key(&room)).await.map_err(|e| self.unavailable(e))?;
        let last_id = last_id.unwrap_or(0);
        let first_held = self.first_held(&room, last_id).await?;
        if first_held > last_id {
            return Ok(None);
        }
        let last_activity = Timestamp::from_millis(last_time).ok_or_else(|| self.unavailable("bad time"))?;
        Ok(Some(RoomInfo { name: room, messages: last_id - first_held + 1, last_activity }))
    }
}

/// `url` with the password of its `user:password@` part, if any, replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..end].rsplit_once('@') else { return url.to_owned() };
    let Some((user, _password)) = userinfo.split_once(':') else { return url.to_owned() };
    format!("{scheme}://{user}:***@{host}{}", &rest[end..])
}

/// The `USER:PASSWORD@` of a `redis://` seed, if it has one.
fn userinfo(seed: &str) -> Option<String> {
    let rest = seed.strip_prefix("redis://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    Some(format!("{userinfo}@"))
}

fn unavailable(url: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("Redis at {url}: {e}"))
}

/// A Redis Cluster node named by `redis://` would half work (every key of another shard
/// answers MOVED), so it is refused at start with the flag to use instead. Cluster mode is
/// never switched on from here: it is what `redis+cluster://` says. A Redis that won't run
/// `INFO` (an ACL without it) is taken for what it was named.
async fn refuse_cluster_node(conn: &mut RedisConn, client: &redis::Client, url: &str) -> Result<(), String> {
    let info: String = match redis::cmd("INFO").arg("cluster").query_async(conn).await {
        Ok(info) => info,
        Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => return Ok(()),
        Err(e) => return Err(unreachable(url, e)),
    };
    if !info.lines().any(|line| line.trim() == "cluster_enabled:1") {
        return Ok(());
    }
    let node = match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        _ => "HOST:PORT".to_owned(),
    };
    Err(format!(
        "Redis at {url} is a node of a Redis Cluster: name the Cluster with \
         --store redis+cluster://{node}[,HOST:PORT...] (a few of its nodes)"
    ))
}

/// Why the store could not start on a Cluster: its seeds did not answer, or answered as a
/// Redis without cluster mode (which `redis://` serves).
fn cluster_unreachable(label: &str, e: redis::RedisError) -> String {
    match e.detail() {
        Some(detail) if detail.contains("cluster support disabled") => format!(
            "{label} names a Redis that is not in cluster mode ({detail}): \
             use --store redis://HOST:PORT/DB for one Redis"
        ),
        _ => unreachable(label, e),
    }
}

/// Why the store could not start: Redis did not answer.
fn unreachable(url: &str, e: impl std::fmt::Display) -> String {
    format!("cannot reach Redis at {url}: {e}")
}

/// The `/send` token buckets of all nodes, one Redis key per client (see [`TAKE_TOKEN`]).
pub struct SharedRateLimiter {
    conn: RedisConn,
    url: String,
    script: Script,
    /// Microseconds between two tokens.
    interval: f64,
    /// Microseconds a bucket may run ahead: the burst.
    tolerance: f64,
}

impl SharedRateLimiter {
    /// Takes a token for `client` (already cut to its /64 if IPv6): `None`, or how long
    /// until there is one. Redis unreachable: an error, as a send would get from the store.
    pub async fn take(&self, client: std::net::IpAddr) -> Result<Option<Duration>, StoreError> {
        let mut conn = self.conn.clone();
        let wait: u64 = self
            .script
            .key(format!("ssechat:{{client:{client}}}:send"))
            .arg(self.interval)
            .arg(self.tolerance)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&self.url, e))?;
        Ok((wait > 0).then(|| Duration::from_micros(wait)))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn submit(&self, new: NewMessage) -> Result<Appended, StoreError> {
        self.submit_once(new, self.attempt().as_ref()).await
    }

    async fn take_back(&self, change: TakeBack) -> Result<Option<Entry>, StoreError> {
        self.take_back_once(change, self.attempt().as_ref()).await
    }

    async fn find(&self, room: &RoomName, key: &IdempotencyKey) -> Result<Option<Message>, StoreError> {
        let mut conn = self.conn.clone();
        let payload: Option<Vec<u8>> =
            conn.get(idempotency_key(room, key.as_str())).await.map_err(|e| self.unavailable(e))?;
        payload.map(|p| Stored::decode_message(remembered(&p).1).map_err(|e| self.unavailable(e))).transpose()
    }

    async fn read(&self, room: &RoomName, range: Range, limit: usize) -> Result<Page, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic().get(seq_key(room));
        match range {
            Range::After(after) => {
                pipe.zrangebyscore_limit(log_key(room), format!("({after}"), "+inf", 0, limit as isize)
            }
            Range::Latest => pipe.zrevrangebyscore_limit(log_key(room), "+inf", "-inf", 0, limit as isize),
        };
        let (last_id, mut payloads): (Option<MessageId>, Vec<Vec<u8>>) =
            pipe.query_async(&mut conn).await.map_err(|e| self.unavailable(e))?;
        let last_id = last_id.unwrap_or(0);
        if range == Range::Latest {
            payloads.reverse();
        }
        let first_held = self.first_held(room, last_id).await?;
        let mut entries = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let entry = Stored::decode(&payload).map_err(|e| self.unavailable(e))?;
            if entry.id() >= first_held && entry.id() <= last_id {
                entries.push(entry);
            }
        }
        Ok(Page { entries, first_held, last_id })
    }

    async fn typing(&self, room: &RoomName, author: &Author) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.publish(&follow::channel(room), &follow::typing(author)).await.map_err(|e| self.unavailable(e))
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        policy::generation(&self.conn).await.map_err(|e| self.unavailable(e))
    }

    async fn directory(&self) -> Result<Directory, StoreError> {
        policy::directory(&self.conn).await.map_err(|e| self.unavailable(e))
    }

    async fn set_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        policy::set_rule(&self.conn, rule).await.map_err(|e| self.unavailable(e))
    }

    async fn reset_rules(&self, subject: &Subject, pattern: Option<&RoomPattern>) -> Result<u64, StoreError> {
        policy::reset_rules(&self.conn, subject, pattern).await.map_err(|e| self.unavailable(e))
    }

    async fn add_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        policy::add_ban(&self.conn, ban).await.map_err(|e| self.unavailable(e))
    }

    async fn remove_ban(&self, target: &BanTarget, room: Option<&RoomName>) -> Result<u64, StoreError> {
        policy::remove_ban(&self.conn, target, room).await.map_err(|e| self.unavailable(e))
    }

    async fn set_room(&self, room: &RoomName, settings: RoomSettings) -> Result<(), StoreError> {
        policy::set_room(&self.conn, room, settings).await.map_err(|e| self.unavailable(e))
    }

    async fn slow_turn(
        &self,
        room: &RoomName,
        sender: &str,
        every: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        policy::slow_turn(&self.conn, room, sender, every).await.map_err(|e| self.unavailable(e))
    }

    async fn share_presence(
        &self,
        room: &RoomName,
        local: PresenceView,
        joined: PresenceView,
    ) -> Result<(), StoreError> {
        self.presence.share(room, local, joined).await.map_err(|e| self.unavailable(e))
    }

    async fn presence(&self, room: &RoomName, local: PresenceView) -> Result<PresenceView, StoreError> {
        self.presence.read(room, local).await.map_err(|e| self.unavailable(e))
    }

    async fn withdraw_presence(
        &self,
        rooms: &[(RoomName, PresenceView)],
        grace: Duration,
    ) -> Result<(), StoreError> {
        self.presence.withdraw(rooms, grace).await.map_err(|e| self.unavailable(e))
    }

    async fn rooms(&self, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        // Newest first, and only rooms whose newest message is young enough: `limit` at most.
        let min = self.retention.cutoff().map_or("-inf".to_owned(), |t| t.millis().to_string());
        let newest: Vec<(String, i64)> = conn
            .zrevrangebyscore_limit_withscores(ROOMS, "+inf", min, 0, limit as isize)
            .await
            .map_err(|e| self.unavailable(e))?;
        let infos = newest.into_iter().map(|(name, last_time)| self.room_info(name, last_time));
        let rooms = futures_util::future::try_join_all(infos).await?;
        Ok(rooms.into_iter().flatten().collect())
    }

    // Accounts (`redis/accounts.rs`).

    async fn add_user(&self, user: &User) -> Result<Option<Author>, StoreError> {
        self.add_user_here(user).await
    }
    async fn user(&self, skeleton: &str) -> Result<Option<User>, StoreError> {
        self.user_here(skeleton).await
    }
    async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.users_here().await
    }
    async fn set_password(&self, name: &Author, hash: &str, epoch: u64) -> Result<bool, StoreError> {
        self.set_password_here(name, hash, epoch).await
    }
    async fn delete_user(&self, name: &Author) -> Result<bool, StoreError> {
        self.delete_user_here(name).await
    }
    async fn add_token(&self, token: &Token) -> Result<(), StoreError> {
        self.add_token_here(token).await
    }
    async fn token(&self, hash: &str) -> Result<Option<Token>, StoreError> {
        self.token_here(hash).await
    }
    async fn tokens(&self, owner: &Author) -> Result<Vec<Token>, StoreError> {
        self.tokens_here(owner).await
    }
    async fn delete_token(&self, hash: &str) -> Result<bool, StoreError> {
        self.delete_token_here(hash).await
    }
    async fn add_session(&self, session: &Session) -> Result<(), StoreError> {
        self.add_session_here(session).await
    }
    async fn session(&self, hash: &str) -> Result<Option<Session>, StoreError> {
        self.session_here(hash).await
    }
    async fn extend_session(&self, hash: &str, expires: Timestamp) -> Result<(), StoreError> {
        self.extend_session_here(hash, expires).await
    }
    async fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        self.delete_session_here(hash).await
    }

    async fn prune(&self) -> Result<u64, StoreError> {
        prune_expired(&mut self.conn.clone(), self.retention).await.map_err(|e| self.unavailable(e))
    }
}

/// Deletes messages older than `--retain-for` (reads hide them before that).
async fn prune_by_age(mut conn: RedisConn, retention: Retention, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = prune_expired(&mut conn, retention).await {
            tracing::warn!(error = %e, "pruning old messages in Redis failed; will retry");
        }
    }
}

/// One pass, `PRUNE_PAGE` rooms at a time: forgets the rooms whose messages all expired
/// (they leave the room index, so later passes and room lists skip them), then deletes the
/// expired messages of the others. Returns the rooms and messages deleted.
async fn prune_expired(conn: &mut RedisConn, retention: Retention) -> redis::RedisResult<u64> {
    let Some(cutoff) = retention.cutoff() else { return Ok(0) };
    let scripts = RoomScripts::default();
    let mut deleted = 0;
    loop {
        let before = deleted;
        let idle: Vec<(String, i64)> = conn
            .zrangebyscore_limit_withscores(ROOMS, "-inf", format!("({}", cutoff.millis()), 0, PRUNE_PAGE)
            .await?;
        for (name, indexed) in &idle {
            let Ok(room) = RoomName::parse(name) else { continue };
            deleted += u64::from(scripts.forget(conn, &room, *indexed, cutoff.millis()).await?);
        }
        // A full page that forgot nothing (damaged names) would come back the same.
        if idle.len() < PRUNE_PAGE as usize || deleted == before {
            break;
        }
    }
    let mut start = 0;
    loop {
        let rooms: Vec<String> = conn.zrange(ROOMS, start, start + PRUNE_PAGE - 1).await?;
        for room in &rooms {
            let Ok(room) = RoomName::parse(room) else { continue };
            let oldest: Vec<(Vec<u8>, f64)> =
                conn.zrange_withscores(log_key(&room), 0, PRUNE_PAGE - 1).await?;
            let expired: Vec<_> = oldest
                .iter()
                .take_while(|(payload, _)| Stored::decode(payload).is_ok_and(|e| e.time() < cutoff))
                .collect();
            if let Some((_, score)) = expired.last() {
                let _: () = conn.zrembyscore(log_key(&room), "-inf", *score).await?;
                deleted += expired.len() as u64;
            }
        }
        if rooms.len() < PRUNE_PAGE as usize {
            return Ok(deleted);
        }
        start += PRUNE_PAGE;
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::domain::Change;
    use std::collections::HashMap;

    /// A throwaway `redis-server` on a free loopback port, stopped on drop.
    pub struct RedisServer {
        child: std::process::Child,
        pub url: String,
        _dir: tempfile::TempDir,
    }

    impl RedisServer {
        pub fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (apt-get install redis-server)");
            // Owned before waiting, so a failed start still kills (and reaps) the child.
            let server = Self { child, url: format!("redis://127.0.0.1:{port}/0"), _dir: dir };
            let client = redis::Client::open(server.url.as_str()).unwrap();
            for _ in 0..500 {
                if client
                    .get_connection()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
                {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("redis-server did not start on port {port}");
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn contract() {
        // One server per store, so every check starts from an empty Redis.
        let servers = std::sync::Mutex::new(Vec::new());
        super::super::contract::run_all(|hub, retention| {
            let server = RedisServer::start();
            let url = server.url.clone();
            servers.lock().unwrap().push(server);
            async move { Arc::new(RedisStore::open(&url, hub, retention).await.unwrap()) as Arc<dyn Store> }
        })
        .await;
    }

    #[tokio::test]
    async fn the_shared_rate_limit_is_one_bucket_per_client_for_every_connection() {
        let server = RedisServer::start();
        let open = || RedisStore::open(&server.url, Hub::new(4), Retention::count(5));
        let (a, b) = (open().await.unwrap(), open().await.unwrap());
        let (on_a, on_b) =
            (a.rate_limiter(Duration::from_secs(2), 3), b.rate_limiter(Duration::from_secs(2), 3));
        let client: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        for limiter in [&on_a, &on_b, &on_a] {
            assert_eq!(limiter.take(client).await.unwrap(), None);
        }
        let wait = on_b.take(client).await.unwrap().expect("the burst is spent, on every node");
        assert!(wait <= Duration::from_secs(2), "at most one interval: {wait:?}");
        assert_eq!(on_a.take("192.0.2.8".parse().unwrap()).await.unwrap(), None, "another client");
        let mut conn = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg("ssechat:{client:192.0.2.7}:send").query(&mut conn).unwrap();
        assert!(ttl > 0 && ttl <= 6_000, "the key lives until the bucket is full again: {ttl}");
    }

    /// Calls of each command since the last `CONFIG RESETSTAT`, from Redis's own counters.
    fn command_calls(conn: &mut redis::Connection) -> HashMap<String, u64> {
        let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
        info.lines()
            .filter_map(|line| line.strip_prefix("cmdstat_")?.split_once(":calls="))
            .map(|(name, rest)| (name.to_owned(), rest.split(',').next().unwrap().parse().unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn a_room_list_reads_limit_rooms_from_the_index() {
        let server = RedisServer::start();
        let store = RedisStore::open(&server.url, Hub::new(4), Retention::count(5)).await.unwrap();
        for n in 0..300 {
            store.append(NewMessage::parse(&format!("r{n}"), Some("ana"), Some("x")).unwrap()).await.unwrap();
        }
        let mut conn = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
        redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut conn).unwrap();
        assert_eq!(store.rooms(10).await.unwrap().len(), 10);
        let calls = command_calls(&mut conn);
        assert_eq!(calls.get("zrevrangebyscore"), Some(&1), "{calls:?}");
        assert_eq!(calls.get("get"), Some(&10), "one id per listed room: {calls:?}");
        assert_eq!(calls.get("zrangebyscore"), Some(&10), "one count per listed room: {calls:?}");
        assert!(!calls.contains_key("zrevrange") && !calls.contains_key("zrange"), "{calls:?}");
    }

    /// A Redis holding message 7 of `general` as written before deletes, edits and `:last`
    /// existed, and a connection to it.
    fn with_an_old_message() -> (RedisServer, redis::Connection) {
        let server = RedisServer::start();
        let mut conn = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
        let old = r#"{"id":7,"room":"general","author":"ana","text":"old","time":1764072062345}"#;
        redis::pipe()
            .zadd("ssechat:{general}:log", old, 7)
            .set("ssechat:{general}:seq", 7)
            .zadd(ROOMS, "general", 1764072062345_i64)
            .exec(&mut conn)
            .unwrap();
        (server, conn)
    }

    /// A payload written before deletes and edits existed (no `kind`) is a message, and can
    /// be deleted and edited like a new one.
    #[tokio::test]
    async fn messages_stored_before_deletes_and_edits_can_be_taken_back() {
        let (server, _) = with_an_old_message();
        let store = RedisStore::open(&server.url, Hub::new(4), Retention::count(100)).await.unwrap();
        let room = RoomName::general();
        assert_eq!(store.message(&room, 7).await.unwrap().unwrap().text.as_str(), "old");
        let text = MessageText::parse("new").unwrap();
        let change = TakeBack { room: room.clone(), target: 7, change: Change::Edit(text) };
        let Some(Entry::Edit { id, message }) = store.take_back(change).await.unwrap() else {
            panic!("an edit")
        };
        assert_eq!(
            (id, message.id, message.text.as_str(), message.time.millis()),
            (8, 7, "new", 1764072062345)
        );
        let delete = TakeBack { room: room.clone(), target: 7, change: Change::Delete };
        assert_eq!(store.take_back(delete.clone()).await.unwrap().unwrap().id(), 9);
        assert_eq!(store.take_back(delete).await.unwrap(), None, "deleted once");
        assert!(store.read(&room, Range::Latest, 10).await.unwrap().current().is_empty());
    }

    /// Rooms written before `:last` existed are forgotten by the index's score; a room whose
    /// index entry lags its `:last` (a crash between script and `ZADD`) is repaired instead.
    #[tokio::test]
    async fn pruning_forgets_rooms_without_last_and_repairs_a_lagging_index() {
        let (server, mut conn) = with_an_old_message();
        let retention = Retention { age: Some(Duration::from_secs(3600)), ..Retention::count(100) };
        let store = RedisStore::open(&server.url, Hub::new(4), retention).await.unwrap();
        store.append(NewMessage::parse("fresh", Some("ana"), Some("x")).unwrap()).await.unwrap();
        redis::cmd("ZADD").arg(ROOMS).arg(1).arg("fresh").exec(&mut conn).unwrap();
        // The background pruner runs once at start too, so it may be the one that forgets
        // `general`: the outcome is checked, not who did it.
        store.prune().await.unwrap();
        let general: bool = redis::cmd("EXISTS").arg("ssechat:{general}:log").query(&mut conn).unwrap();
        assert!(!general, "general forgotten");
        let index: Vec<String> = redis::cmd("ZRANGE").arg(ROOMS).arg(0).arg(-1).query(&mut conn).unwrap();
        assert_eq!(index, ["fresh"]);
        let names: Vec<String> =
            store.rooms(10).await.unwrap().into_iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["fresh"], "its score repaired from :last");
    }

    /// A write sent twice on the way (as redis-rs's cluster connection may), as one attempt:
    /// stored once, and both runs answer with it as stored now; without a client key it is
    /// remembered under the attempt's token, briefly.
    #[tokio::test]
    async fn a_write_run_twice_as_one_attempt_is_stored_once() {
        let server = RedisServer::start();
        let store = RedisStore::open(&server.url, Hub::new(4), Retention::count(100)).await.unwrap();
        let mut conn = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
        let room = RoomName::general();
        let new = NewMessage::parse("general", Some("ana"), Some("hi")).unwrap();
        let token = IdempotencyKey::random();
        let attempt = Attempt::with_token(token.clone());
        let first = store.submit_once(new.clone(), Some(&attempt)).await.unwrap();
        let again = store.submit_once(new, Some(&attempt)).await.unwrap();
        assert_eq!(again, first, "the same message, and not a replay to the client");
        assert!(!first.replayed);
        let ttl: i64 =
            redis::cmd("PTTL").arg(idempotency_key(&room, token.as_str())).query(&mut conn).unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "remembered briefly: {ttl} ms");

        let edit = Change::Edit(MessageText::parse("hello").unwrap());
        for change in [edit, Change::Delete] {
            let change = TakeBack { room: room.clone(), target: first.message.id, change };
            let attempt = Attempt::new();
            let entry = store.take_back_once(change.clone(), Some(&attempt)).await.unwrap();
            assert!(entry.is_some());
            assert_eq!(store.take_back_once(change, Some(&attempt)).await.unwrap(), entry, "the same entry");
        }
        let ids: Vec<_> =
            store.read(&room, Range::After(0), 10).await.unwrap().entries.iter().map(Entry::id).collect();
        assert_eq!(ids.len(), 3, "a message, one edit, one delete: {ids:?}");
    }

    /// Under a client's key, a second run of the same attempt is not a replay to the client;
    /// another attempt (the client's retry) is.
    #[tokio::test]
    async fn a_client_key_replays_for_another_attempt_only() {
        let server = RedisServer::start();
        let store = RedisStore::open(&server.url, Hub::new(4), Retention::count(100)).await.unwrap();
        let key = IdempotencyKey::parse("key", "client-key").unwrap();
        let new = NewMessage::parse("general", Some("ana"), Some("hi")).unwrap().with_key(Some(key.clone()));
        let (attempt, retry) = (Attempt::new(), Attempt::new());
        let first = store.submit_once(new.clone(), Some(&attempt)).await.unwrap();
        assert_eq!(store.submit_once(new.clone(), Some(&attempt)).await.unwrap(), first, "sent twice");
        let replay = store.submit_once(new.clone(), Some(&retry)).await.unwrap();
        assert!(replay.replayed && replay.message == first.message, "the client's retry");
        assert_eq!(store.submit_once(new, None).await.unwrap(), replay, "a retry on one Redis");
        let found = store.find(&RoomName::general(), &key).await.unwrap();
        assert_eq!(found, Some(first.message), "the key names the message");
    }

    /// On one Redis a request is sent once: no key is made up, nothing is remembered.
    #[tokio::test]
    async fn on_one_redis_a_write_without_a_key_leaves_no_key() {
        let server = RedisServer::start();
        let store = RedisStore::open(&server.url, Hub::new(4), Retention::count(100)).await.unwrap();
        let new = NewMessage::parse("general", Some("ana"), Some("hi")).unwrap();
        let message = store.append(new).await.unwrap();
        let delete = TakeBack { room: RoomName::general(), target: message.id, change: Change::Delete };
        store.take_back(delete).await.unwrap().unwrap();
        let mut conn = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("ssechat:*:key:*").query(&mut conn).unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("redis://127.0.0.1:{port}/0");
        let err = RedisStore::open(&url, Hub::new(4), Retention::count(5)).await.err().unwrap();
        assert!(err.contains(&url) && err.contains("cannot reach Redis"), "{err}");
    }
}
