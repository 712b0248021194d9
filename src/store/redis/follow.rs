//! Following rooms through Redis: one pub/sub connection per node, subscribed to the
//! channels of the rooms this node has readers of, and to nothing else.
//!
//! Each room has one channel, `ssechat:{ROOM}:ch` (the room's hash tag, so sharded pub/sub
//! can put it on the room's slot), carrying three kinds of payload: a log entry (a JSON
//! object, as the scripts store it), `presence` (the room's readers changed somewhere) and
//! `typing:AUTHOR`. One more channel, [`ACTIVITY`], tells every node that some room's
//! messages changed (the room list's counts): each node says so at most once per
//! [`ACTIVITY_EVERY`] ([`Activity`]), so it costs nothing per message.
//!
//! The hub says when a room opens and closes ([`Hub::on_rooms`]). A room is subscribed when
//! it opens and unsubscribed [`LINGER`] after it closes, unless it opened again meanwhile,
//! so readers reconnecting do not make the node churn subscriptions. Nothing is missed at
//! the edges: once a SUBSCRIBE is confirmed, everything published after it arrives, and
//! the hub has every stream of the room that opened before catch up from the log
//! ([`Hub::followed`]). If the connection breaks, the node reconnects, subscribes to every
//! open room again, then has every stream catch up, as with one global channel.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};

use super::conn::RedisConn;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{COMMAND_TIMEOUT, Stored};
use crate::domain::{Author, RoomName};
use crate::hub::{Hub, RoomChange};
use crate::wire::Event;

/// How long a room stays subscribed after its last reader left.
pub const LINGER: Duration = Duration::from_secs(5);
/// The payload saying a room's readers changed on some node.
pub const PRESENCE: &str = "presence";
/// What a typing signal's payload starts with; the author follows.
const TYPING: &str = "typing:";
/// The channel saying some room's messages changed.
/// Its own hash tag: on a Cluster it is a sharded channel like a room's.
pub const ACTIVITY: &str = "ssechat:{activity}";
/// A node says so at most this often (the room list refreshes every 2 s at most).
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// The channel of `room`'s entries, presence notices and typing signals.
pub fn channel(room: &RoomName) -> String {
    format!("ssechat:{{{room}}}:ch")
}

/// The payload of a typing signal.
pub fn typing(author: &Author) -> String {
    format!("{TYPING}{author}")
}

pub(super) fn room_of(channel: &str) -> Option<RoomName> {
    let name = channel.strip_prefix("ssechat:{")?.strip_suffix("}:ch")?;
    RoomName::parse(name).ok()
}

/// Entries appended through this node, told to its hub at once and to the other nodes
/// at most once per [`ACTIVITY_EVERY`]: at once if none was told lately, else when that
/// interval is over, so the last entry is always told.
pub struct Activity {
    hub: Arc<Hub>,
    conn: RedisConn,
    /// When the last notice went out, and whether one is planned. A std mutex, never held
    /// across an `.await`.
    told: Arc<Mutex<(Option<Instant>, bool)>>,
}

impl Activity {
    pub fn new(hub: Arc<Hub>, conn: RedisConn) -> Self {
        Self { hub, conn, told: Arc::default() }
    }

    pub fn noted(&self) {
        self.hub.note_activity();
        let wait = {
            let mut told = self.told.lock().expect("activity lock poisoned");
            if told.1 {
                return;
            }
            told.1 = true;
            told.0.map_or(Duration::ZERO, |last| {
                (last + ACTIVITY_EVERY).saturating_duration_since(Instant::now())
            })
        };
        let (told, mut conn) = (Arc::clone(&self.told), self.conn.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            *told.lock().expect("activity lock poisoned") = (Some(Instant::now()), false);
            if let Err(e) = conn.publish(ACTIVITY, "1").await {
                tracing::warn!(error = %e, "cannot tell other nodes of new messages");
            }
        });
    }
}

/// What the node listens to.
#[derive(Default)]
pub(super) struct Following {
    /// Rooms the hub has open, as far as its changes were read.
    pub open: HashSet<RoomName>,
    /// Rooms subscribed, confirmed by Redis.
    pub subscribed: HashSet<RoomName>,
    /// Subscribed rooms that closed, and when: unsubscribed after [`LINGER`].
    pub idle: HashMap<RoomName, Instant>,
}

impl Following {
    /// Notes the hub's changes; returns the opened rooms not subscribed yet. A room that
    /// opens again while still subscribed is followed at once.
    pub fn apply(&mut self, hub: &Hub, changes: Vec<RoomChange>) -> Vec<RoomName> {
        let mut new = HashSet::new();
        for change in changes {
            match change {
                RoomChange::Opened(room) => {
                    self.idle.remove(&room);
                    if self.subscribed.contains(&room) {
                        hub.followed(&room);
                    } else {
                        new.insert(room.clone());
                    }
                    self.open.insert(room);
                }
                RoomChange::Closed(room) => {
                    new.remove(&room);
                    if self.subscribed.contains(&room) {
                        self.idle.insert(room.clone(), Instant::now());
                    }
                    self.open.remove(&room);
                }
            }
        }
        new.into_iter().collect()
    }

    /// When the next idle room is due to be unsubscribed.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle.values().min().map(|since| *since + LINGER)
    }

    /// Idle rooms whose linger is over, no longer counted as subscribed.
    pub fn expire(&mut self, now: Instant) -> Vec<RoomName> {
        let expired: Vec<RoomName> =
            self.idle.iter().filter(|(_, since)| **since + LINGER <= now).map(|(r, _)| r.clone()).collect();
        for room in &expired {
            self.idle.remove(room);
            self.subscribed.remove(room);
        }
        expired
    }
}

/// Why listening on a connection ended.
enum Ended {
    Stopped,
    Lost,
}

/// Follows the hub's open rooms until `stop`, reconnecting after any interruption. `ready`
/// is told once the first connection is up.
pub async fn follow(
    client: redis::Client,
    hub: Arc<Hub>,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let (changes, mut told) = tokio::sync::mpsc::unbounded_channel();
    hub.on_rooms(changes);
    let mut ready = Some(ready);
    let mut following = Following::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            attempt = tokio::time::timeout(COMMAND_TIMEOUT, connect(&client, &following.open)) => attempt,
        };
        match attempt {
            Ok(Ok((sink, stream))) => {
                following.subscribed = following.open.clone();
                following.idle.clear();
                match ready.take() {
                    Some(first) => {
                        let _ = first.send(());
                    }
                    None => {
                        tracing::info!("Redis subscription restored; streams catch up from history");
                        hub.resync();
                    }
                }
                for room in &following.open {
                    hub.followed(room);
                }
                backoff = Duration::from_millis(100);
                match listen(&hub, &mut following, sink, stream, &mut told, &stop).await {
                    Ended::Stopped => return,
                    Ended::Lost => tracing::warn!("lost the Redis subscription; reconnecting"),
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to Redis; retrying"),
            Err(_) => tracing::warn!("subscribing to Redis timed out; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A new pub/sub connection, subscribed to [`ACTIVITY`] and `rooms`.
async fn connect(
    client: &redis::Client,
    rooms: &HashSet<RoomName>,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    let mut channels = vec![ACTIVITY.to_owned()];
    channels.extend(rooms.iter().map(channel));
    sink.subscribe(channels).await?;
    Ok((sink, stream))
}

/// Hands what arrives to the hub, and (un)subscribes as rooms open and close, until the
/// connection breaks or `stop`. Commands are sent one batch at a time, in order; what
/// arrives meanwhile waits in the connection's queue.
async fn listen(
    hub: &Hub,
    following: &mut Following,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    told: &mut UnboundedReceiver<RoomChange>,
    stop: &CancellationToken,
) -> Ended {
    // Only changes and expiries move it, never a delivery: the hot path stays O(1).
    let mut expiry = following.next_expiry();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            message = stream.next() => match message {
                Some(message) => deliver(hub, message.get_channel_name(), message.get_payload_bytes()),
                None => return Ended::Lost,
            },
            change = told.recv() => {
                // Closed only if another store took over this hub's rooms.
                let Some(change) = change else { return Ended::Stopped };
                let mut changes = vec![change];
                while let Ok(more) = told.try_recv() {
                    changes.push(more);
                }
                let new = following.apply(hub, changes);
                expiry = following.next_expiry();
                if !new.is_empty() {
                    if !command(sink.subscribe(new.iter().map(channel).collect::<Vec<_>>())).await {
                        return Ended::Lost;
                    }
                    for room in new {
                        hub.followed(&room);
                        following.subscribed.insert(room);
                    }
                }
            }
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                let expired = following.expire(Instant::now());
                expiry = following.next_expiry();
                // Never an empty UNSUBSCRIBE: that one leaves every channel.
                if !expired.is_empty() && !command(sink.unsubscribe(expired.iter().map(channel).collect::<Vec<_>>())).await {
                    return Ended::Lost;
                }
            }
        }
    }
}

/// Runs a (un)subscribe; false if it failed or took too long, which breaks the connection.
async fn command(run: impl Future<Output = redis::RedisResult<()>>) -> bool {
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a Redis (un)subscribe failed");
            false
        }
        Err(_) => {
            tracing::warn!("a Redis (un)subscribe timed out");
            false
        }
    }
}

/// Hands one payload that arrived on `channel` to the hub; a bad one is logged and ignored.
pub(super) fn deliver(hub: &Hub, channel: &str, payload: &[u8]) {
    if channel == ACTIVITY {
        return hub.note_activity();
    }
    if payload.first() == Some(&b'{') {
        match Stored::decode(payload) {
            Ok(entry) => hub.publish(&entry),
            Err(e) => tracing::error!(error = %e, "ignoring an entry from Redis"),
        }
        return;
    }
    let Some(room) = room_of(channel) else {
        return tracing::error!(channel, "ignoring a notice on a bad channel");
    };
    let payload = String::from_utf8_lossy(payload);
    if payload == PRESENCE {
        hub.presence_changed(room);
    } else if let Some(author) = payload.strip_prefix(TYPING).and_then(|a| Author::parse(a).ok()) {
        hub.broadcast(&room, Event::Typing { author });
    } else {
        tracing::error!("ignoring a bad notice from Redis");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_names_its_room_within_its_hash_tag() {
        let room = RoomName::parse("lobby-2").unwrap();
        assert_eq!(channel(&room), "ssechat:{lobby-2}:ch");
        assert_eq!(room_of(&channel(&room)), Some(room));
        assert_eq!(room_of("ssechat:messages"), None);
    }

    #[test]
    fn a_room_lingers_after_closing_and_stays_if_it_opens_again() {
        let hub = Hub::new(4);
        let (a, b) = (RoomName::parse("a").unwrap(), RoomName::parse("b").unwrap());
        let mut following = Following::default();
        let new = following.apply(&hub, vec![RoomChange::Opened(a.clone()), RoomChange::Opened(b.clone())]);
        assert_eq!(new.len(), 2);
        following.subscribed.extend(new);
        assert!(
            following
                .apply(&hub, vec![RoomChange::Closed(a.clone()), RoomChange::Closed(b.clone())])
                .is_empty()
        );
        assert!(following.apply(&hub, vec![RoomChange::Opened(b.clone())]).is_empty(), "still subscribed");
        let due = following.next_expiry().unwrap();
        assert_eq!(following.expire(due), vec![a.clone()]);
        assert_eq!(following.subscribed, HashSet::from([b]));
        let opened_and_closed = vec![RoomChange::Opened(a.clone()), RoomChange::Closed(a)];
        assert!(following.apply(&hub, opened_and_closed).is_empty(), "nothing to subscribe");
    }
}
