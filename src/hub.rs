//! The hub: the one owner of rooms and fan-out.
//!
//! Each live room has a `tokio::sync::broadcast` channel. A message is encoded into a
//! [`Frame`] once and every subscriber gets the same `Arc`, so publishing costs the same
//! whatever the format each reader asked for. The channel's buffer is shared by the room,
//! so a slow reader costs no memory of its own: it lags, and its stream catches up from the
//! store (see `feed.rs`).
//!
//! Heartbeats and shutdown travel the same channels: the hub sends every room a heartbeat
//! frame on a timer, and closing the hub closes every channel. So a stream waits on exactly
//! one thing, its room, and no per-stream timer or shutdown future exists.
//!
//! A shared store follows the rooms' lifecycle ([`Hub::on_rooms`]): it is told when a room
//! opens (its first subscriber) and closes (its last leaves), so a node listens only to the
//! rooms it has readers of. A room opened under such a store is *followed* once the store
//! confirms it listens ([`Hub::followed`]); until then a stream may have read its cursor
//! before anything reached this node, so confirming has every stream of the room catch up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{broadcast, watch};

use crate::domain::{Entry, RoomName};
use crate::wire::{Event, Frame};

pub struct Hub {
    /// Rooms with at least one subscriber; a room leaves with its last subscriber, so the
    /// map never outgrows the rooms people are reading. A std mutex: it is held for a map
    /// lookup or insert, never across an `.await`.
    rooms: Mutex<Rooms>,
    /// Frames a room's channel holds for its slowest reader before that reader lags.
    capacity: usize,
    /// One heartbeat frame, shared by every room.
    heartbeat: Arc<Frame>,
    /// Where "a room's presence changed elsewhere" goes (the presence task), once set.
    presence_changed: Mutex<Option<tokio::sync::mpsc::UnboundedSender<RoomName>>>,
    /// Set by every publish (this node's and, with a shared store, the others'): the room
    /// counts may have changed (see `room_counts.rs`).
    activity: AtomicBool,
}

#[derive(Default)]
struct Rooms {
    channels: HashMap<RoomName, Room>,
    /// Set by `close`: every channel is gone and no new one opens.
    closed: bool,
    /// Told of every room that opens or closes (a shared store's follower), once set. Sent
    /// under the lock, so the follower sees the changes in the order they happened.
    changes: Option<UnboundedSender<RoomChange>>,
}

struct Room {
    tx: broadcast::Sender<Arc<Frame>>,
    /// Whether everything published to the room from now on reaches this hub: at once
    /// without a follower, else once the follower confirms.
    followed: watch::Sender<bool>,
}

/// A room's lifecycle, as told to [`Hub::on_rooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomChange {
    /// The room's first subscriber arrived.
    Opened(RoomName),
    /// The room's last subscriber left (or the hub closed).
    Closed(RoomName),
}

impl Hub {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::new(Rooms::default()),
            capacity: capacity.max(1),
            heartbeat: Arc::new(Frame::new(Event::Heartbeat)),
            presence_changed: Mutex::new(None),
            activity: AtomicBool::new(false),
        })
    }

    /// Starts receiving every frame published to `room` from now on. After `close`, the
    /// subscription ends at once.
    pub fn subscribe(self: &Arc<Self>, room: &RoomName) -> Subscription {
        let mut rooms = self.rooms.lock().expect("hub lock poisoned");
        let rx = match rooms.channels.get(room) {
            Some(open) => open.tx.subscribe(),
            None if rooms.closed => broadcast::channel(1).1,
            None => {
                let (tx, rx) = broadcast::channel(self.capacity);
                let followed = watch::Sender::new(rooms.changes.is_none());
                rooms.tell(RoomChange::Opened(room.clone()));
                rooms.channels.insert(room.clone(), Room { tx, followed });
                rx
            }
        };
        Subscription { hub: Arc::clone(self), room: room.clone(), rx }
    }

    /// Hands a stored log entry (a message, a delete, an edit) to every subscriber of its
    /// room.
    ///
    /// Stores call this in id order (under their own ordering), which is what lets every
    /// stream de-duplicate by id. Nothing is encoded for a room nobody reads.
    pub fn publish(&self, entry: &Entry) {
        self.activity.store(true, Ordering::Relaxed);
        self.send_to(entry.room(), || Event::of(entry.clone()));
    }

    /// Something was published that this hub may not see (a room nobody reads here).
    pub fn note_activity(&self) {
        self.activity.store(true, Ordering::Relaxed);
    }

    /// Whether anything was published since the last call.
    pub fn take_activity(&self) -> bool {
        self.activity.swap(false, Ordering::Relaxed)
    }

    /// Sends one event, encoded once, to every room now.
    pub fn announce(&self, event: Event) {
        self.send_to_all(&Arc::new(Frame::new(event)));
    }

    /// Sends an event that is not a message (presence, typing) to everyone in `room` now.
    pub fn broadcast(&self, room: &RoomName, event: Event) {
        self.send_to(room, || event);
    }

    /// Sends to one room; the event is only made (and encoded) if someone reads the room.
    fn send_to(&self, room: &RoomName, event: impl FnOnce() -> Event) {
        let rooms = self.rooms.lock().expect("hub lock poisoned");
        if let Some(open) = rooms.channels.get(room) {
            // An error only means the last receiver left in the meantime.
            let _ = open.tx.send(Arc::new(Frame::new(event())));
        }
    }

    /// Sends one frame to every room; false once the hub is closed.
    fn send_to_all(&self, frame: &Arc<Frame>) -> bool {
        let rooms = self.rooms.lock().expect("hub lock poisoned");
        for open in rooms.channels.values() {
            let _ = open.tx.send(Arc::clone(frame));
        }
        !rooms.closed
    }

    /// Registers the presence task, which recomputes a room when told it changed.
    pub fn on_presence_changed(&self, sender: tokio::sync::mpsc::UnboundedSender<RoomName>) {
        *self.presence_changed.lock().expect("hub lock poisoned") = Some(sender);
    }

    /// Another node's readers of `room` changed (a shared store says so).
    pub fn presence_changed(&self, room: RoomName) {
        if let Some(sender) = self.presence_changed.lock().expect("hub lock poisoned").as_ref() {
            let _ = sender.send(room);
        }
    }

    /// Whether no stream is open at all.
    pub fn is_idle(&self) -> bool {
        self.rooms.lock().expect("hub lock poisoned").channels.is_empty()
    }

    /// Open subscriptions in `room`.
    pub fn subscribers(&self, room: &RoomName) -> usize {
        let rooms = self.rooms.lock().expect("hub lock poisoned");
        rooms.channels.get(room).map_or(0, |open| open.tx.receiver_count())
    }

    /// Tells `changes` of every room that opens or closes from now on, and of every room
    /// open now (as opened). Rooms opened from now on are followed once [`Hub::followed`]
    /// says so.
    pub fn on_rooms(&self, changes: UnboundedSender<RoomChange>) {
        let mut rooms = self.rooms.lock().expect("hub lock poisoned");
        for room in rooms.channels.keys() {
            let _ = changes.send(RoomChange::Opened(room.clone()));
        }
        rooms.changes = Some(changes);
    }

    /// The follower lost `room`'s subscription (its Redis node failed or moved the room): what
    /// is published until it listens again is missed, so the next [`Hub::followed`] has the
    /// room's streams catch up again.
    pub fn unfollowed(&self, room: &RoomName) {
        let rooms = self.rooms.lock().expect("hub lock poisoned");
        if let Some(open) = rooms.channels.get(room) {
            open.followed.send_replace(false);
        }
    }

    /// The follower listens to `room` now: from here on everything published to it arrives.
    /// Its streams may have read their cursors before, so the first confirmation of an open
    /// room has each of them catch up from the store, and its presence recomputed.
    pub fn followed(&self, room: &RoomName) {
        {
            let rooms = self.rooms.lock().expect("hub lock poisoned");
            let Some(open) = rooms.channels.get(room) else { return };
            if *open.followed.borrow() {
                return;
            }
            // The resync first: whoever waits for `followed` finds it already sent.
            let _ = open.tx.send(Arc::new(Frame::new(Event::Resync)));
            open.followed.send_replace(true);
        }
        self.presence_changed(room.clone());
    }

    /// Sends every room a heartbeat every `every`, for as long as the hub lives and is open.
    pub fn start_heartbeat(self: &Arc<Self>, every: Duration) {
        let hub: Weak<Hub> = Arc::downgrade(self);
        let first = tokio::time::Instant::now() + every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hub) = hub.upgrade() else { return };
                if !hub.send_to_all(&hub.heartbeat) {
                    return;
                }
            }
        });
    }

    /// Tells every stream to catch up from history: the store holds messages this hub may
    /// not have seen (a shared store's notifications were interrupted).
    pub fn resync(&self) {
        self.send_to_all(&Arc::new(Frame::new(Event::Resync)));
    }

    /// Tells every stream to look whether its reader may still read its room (the access
    /// rules changed).
    pub fn recheck(&self) {
        self.send_to_all(&Arc::new(Frame::new(Event::Recheck)));
    }

    /// Asks every stream to end within `window`, each at its own random moment.
    pub fn drain(&self, window: Duration) {
        self.send_to_all(&Arc::new(Frame::new(Event::Drain(window))));
    }

    /// Open streams per room, for `/metrics`.
    pub fn room_counts(&self) -> Vec<(RoomName, usize)> {
        let rooms = self.rooms.lock().expect("hub lock poisoned");
        let mut counts: Vec<_> =
            rooms.channels.iter().map(|(r, open)| (r.clone(), open.tx.receiver_count())).collect();
        counts.sort();
        counts
    }

    /// Closes every room: each stream gets what was already sent, then ends.
    pub fn close(&self) {
        let mut rooms = self.rooms.lock().expect("hub lock poisoned");
        rooms.closed = true;
        for (room, _) in std::mem::take(&mut rooms.channels) {
            rooms.tell(RoomChange::Closed(room));
        }
    }
}

impl Rooms {
    fn tell(&self, change: RoomChange) {
        if let Some(changes) = &self.changes {
            let _ = changes.send(change);
        }
    }
}

/// A reader's place in a room. Dropping it leaves the room.
pub struct Subscription {
    hub: Arc<Hub>,
    room: RoomName,
    rx: broadcast::Receiver<Arc<Frame>>,
}

impl Subscription {
    pub fn receiver(&mut self) -> &mut broadcast::Receiver<Arc<Frame>> {
        &mut self.rx
    }

    /// Waits until everything published to the room reaches this hub (see
    /// [`Hub::followed`]); at once without a shared store, or once the hub is closed.
    pub async fn followed(&self) {
        let mut followed = {
            let rooms = self.hub.rooms.lock().expect("hub lock poisoned");
            let Some(open) = rooms.channels.get(&self.room) else { return };
            open.followed.subscribe()
        };
        // An error means the room closed: nothing more will arrive anyway.
        let _ = followed.wait_for(|yes| *yes).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut rooms = self.hub.rooms.lock().expect("hub lock poisoned");
        // Under the lock the count is exact: 1 means this receiver is the last.
        if rooms.channels.get(&self.room).is_some_and(|open| open.tx.receiver_count() <= 1) {
            rooms.channels.remove(&self.room);
            rooms.tell(RoomChange::Closed(self.room.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Message, NewMessage, Timestamp};

    fn message(room: &str, id: u64) -> Entry {
        let new = NewMessage::parse(room, Some("ana"), Some("hi")).unwrap();
        Entry::Message(Message::new(id, new, Timestamp::now()))
    }

    #[tokio::test]
    async fn fan_out_shares_one_frame() {
        let hub = Hub::new(16);
        let room = RoomName::general();
        let mut a = hub.subscribe(&room);
        let mut b = hub.subscribe(&room);
        hub.publish(&message("general", 1));
        let fa = a.receiver().recv().await.unwrap();
        let fb = b.receiver().recv().await.unwrap();
        assert!(Arc::ptr_eq(&fa, &fb));
        assert_eq!(fa.id(), Some(1));
    }

    #[test]
    fn rooms_leave_with_their_last_subscriber() {
        let hub = Hub::new(16);
        let room = RoomName::general();
        let a = hub.subscribe(&room);
        let b = hub.subscribe(&room);
        assert_eq!(hub.subscribers(&room), 2);
        drop(a);
        assert_eq!(hub.subscribers(&room), 1);
        drop(b);
        assert!(hub.rooms.lock().unwrap().channels.is_empty());
        hub.publish(&message("general", 1)); // nobody listening: a no-op
    }

    #[tokio::test]
    async fn a_follower_is_told_of_rooms_opening_and_closing_and_confirms_with_a_resync() {
        let hub = Hub::new(16);
        let (general, other) = (RoomName::general(), RoomName::parse("other").unwrap());
        let early = hub.subscribe(&general);
        let (changes, mut told) = tokio::sync::mpsc::unbounded_channel();
        hub.on_rooms(changes);
        assert_eq!(told.try_recv(), Ok(RoomChange::Opened(general.clone())), "open before");
        let mut a = hub.subscribe(&other);
        let b = hub.subscribe(&other);
        assert_eq!(told.try_recv(), Ok(RoomChange::Opened(other.clone())), "once per room");
        assert!(told.try_recv().is_err());
        let waiting = tokio::spawn(async move {
            b.followed().await;
            b
        });
        hub.followed(&other);
        let b = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(matches!(a.receiver().recv().await.unwrap().event(), Event::Resync));
        hub.followed(&other);
        assert!(a.receiver().try_recv().is_err(), "one resync per opening");
        drop((a, b, early));
        assert_eq!(told.try_recv(), Ok(RoomChange::Closed(other)));
        assert_eq!(told.try_recv(), Ok(RoomChange::Closed(general)));
    }

    #[tokio::test]
    async fn closing_ends_every_subscription() {
        let hub = Hub::new(16);
        let mut before = hub.subscribe(&RoomName::general());
        hub.publish(&message("general", 1));
        hub.close();
        assert_eq!(before.receiver().recv().await.unwrap().id(), Some(1), "what was sent still arrives");
        assert!(before.receiver().recv().await.is_err());
        let mut after = hub.subscribe(&RoomName::general());
        assert!(after.receiver().recv().await.is_err());
    }
}
