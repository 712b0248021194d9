//! Presence: who has a room open.
//!
//! Every open stream is a reader of its room: named if it said who it is (`?name=`),
//! anonymous otherwise. A reader that leaves stays present for `--presence-grace`, and a
//! reader that comes back within it (a reconnect, a reload) takes its own place again, so
//! nobody flaps in and out.
//!
//! This node's readers are counted here; the store shares them with other nodes (Redis) or
//! not at all (one node), and merges everyone's on request. Whenever the room's presence may
//! have changed, a single task recomputes it and broadcasts `event: presence` to the room.
//!
//! Every view carries a version from this node's presence clock, and a room's views are
//! computed one at a time, so a later version is a later look at everyone. A stream drops
//! any view older than the last it got (`feed.rs`): its first view is computed after it
//! joined, so everything it is told counts it. A draining node hands its readers over
//! ([`Presence::withdraw`]); how other nodes count them is the store's part.
//!
//! What a view costs is bounded whatever the number of readers: it lists at most
//! `--presence-names` names (those that arrived first, so a flood of new names cannot push
//! out the people already there) and counts readers under the other names with the
//! anonymous ones. One client may be listed under at most `--names-per-client` names per
//! room; its streams under further names read anonymously.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::domain::PresenceView;
use crate::domain::{Author, ReaderId, RoomName};
use crate::hub::Hub;
use crate::store::{Store, StoreError};
use crate::wire::Event;

/// How often this node re-shares its readers, so a shared room never expires while it is
/// read here. (Whether a node is alive at all is the store's business.)
const REFRESH: Duration = Duration::from_secs(10);
/// Rooms whose views may be computed at the same moment (see [`Presence::turns`]).
const TURNS: usize = 64;
/// How long changes to presence gather before a room is recomputed and told.
const SETTLE: Duration = Duration::from_millis(100);
/// Streams of one reader id in one room that are told apart (a tab and its duplicates);
/// further ones count like readers without an id, so one id costs little however often
/// it is given.
const STREAMS_PER_ID: usize = 16;

/// How presence is kept and shown.
#[derive(Debug, Clone, Copy)]
pub struct PresenceRules {
    /// How long a reader who left still counts (`--presence-grace`).
    pub grace: Duration,
    /// Names a view lists (`--presence-names`); readers under the others count as anonymous.
    pub names: usize,
    /// Distinct names one client may be listed under in a room (`--names-per-client`).
    pub names_per_client: usize,
}

/// Readers under one name (or the anonymous ones) in one room on this node.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    live: usize,
    /// Left, but still inside the grace period.
    leaving: usize,
    /// When the name arrived (the room's arrival counter): views list the earliest names.
    since: u64,
}

impl Count {
    fn present(&self) -> usize {
        self.live + self.leaving
    }
}

/// Where a reader is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seat {
    /// Under its name.
    Named(String),
    /// Anonymously, under the id it gave (counted once per id, here and across nodes).
    Identified(ReaderId),
    /// Anonymously, with no id.
    Anonymous,
}

/// One stream of a reader that gave an id.
#[derive(Debug)]
struct TabStream {
    /// Tells this stream from the others of the same id.
    token: u64,
    seat: Seat,
    /// False once it left: it is in its grace period.
    live: bool,
}

/// Where a reader with an id is counted, and whether it is live (else leaving).
type Counted = Option<(Seat, bool)>;

/// Only one stream of a reader id counts: the newest live one, else the last that left.
/// So a stream that comes back under a new name (a rename) takes its old seat over at once,
/// whether the old stream has ended yet or not, and a duplicated tab still counts once.
fn counted(streams: &[TabStream]) -> Counted {
    let stream = streams.iter().rev().find(|s| s.live).or(streams.last())?;
    Some((stream.seat.clone(), stream.live))
}

#[derive(Debug, Default)]
struct RoomReaders {
    names: HashMap<String, Count>,
    anonymous: Count,
    /// Anonymous readers who gave an id.
    identified: HashMap<ReaderId, Count>,
    /// The streams of each reader id (oldest first), live or in their grace period: the
    /// counts above hold one seat per id (see [`counted`]).
    tabs: HashMap<ReaderId, Vec<TabStream>>,
    /// The last [`TabStream::token`] given.
    tokens: u64,
    /// The names each client is listed under here, with its readers under each (live or in
    /// the grace period): what the per-client cap counts.
    clients: HashMap<IpAddr, HashMap<String, usize>>,
    /// Names that arrived so far, for [`Count::since`].
    arrivals: u64,
    /// Readers who joined since this node last shared the room: on another node they may
    /// take the place of readers in transit from a draining node (see `store/redis/presence.rs`).
    joined: PresenceView,
}

impl RoomReaders {
    /// At most `shown` names (the earliest to arrive), sorted; readers under the others are
    /// counted with the anonymous ones.
    fn view(&self, shown: usize) -> PresenceView {
        let mut present: Vec<(&String, u64)> =
            self.names.iter().filter(|(_, c)| c.present() > 0).map(|(n, c)| (n, c.since)).collect();
        let hidden = present.len().saturating_sub(shown);
        if hidden > 0 {
            present.select_nth_unstable_by_key(shown, |&(_, since)| since);
            present.truncate(shown);
        }
        let mut names: Vec<String> = present.into_iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        let identified: Vec<&ReaderId> =
            self.identified.iter().filter(|(_, c)| c.present() > 0).map(|(id, _)| id).collect();
        let mut readers: Vec<String> =
            identified.iter().take(PresenceView::MAX_READER_IDS).map(|id| id.as_str().to_owned()).collect();
        readers.sort();
        let anonymous = self.anonymous.present() + hidden + identified.len();
        PresenceView { names, anonymous: anonymous as u64, version: 0, readers }
    }

    /// The count `seat` is kept under; a name new here is stamped with its arrival.
    fn count(&mut self, seat: &Seat) -> &mut Count {
        match seat {
            Seat::Named(name) => {
                let arrivals = &mut self.arrivals;
                self.names.entry(name.clone()).or_insert_with(|| {
                    *arrivals += 1;
                    Count { since: *arrivals, ..Count::default() }
                })
            }
            Seat::Identified(id) => self.identified.entry(id.clone()).or_default(),
            Seat::Anonymous => &mut self.anonymous,
        }
    }

    /// A stream of reader `id` arrives in `seat`; it counts instead of the id's other
    /// streams. Returns its token, or `None` if the id has too many streams already (the
    /// stream then counts like one without an id).
    fn join_tab(&mut self, id: &ReaderId, seat: Seat) -> Option<u64> {
        if self.tabs.get(id).is_some_and(|streams| streams.len() >= STREAMS_PER_ID) {
            return None;
        }
        self.tokens += 1;
        let token = self.tokens;
        self.change_tab(id, |streams| streams.push(TabStream { token, seat, live: true }));
        Some(token)
    }

    /// Stream `token` of reader `id` left. It goes last, so that when no stream of the id
    /// is live, the last to leave counts.
    fn leave_tab(&mut self, id: &ReaderId, token: u64) -> bool {
        self.change_tab(id, |streams| {
            if let Some(at) = streams.iter().position(|s| s.token == token) {
                let mut stream = streams.remove(at);
                stream.live = false;
                streams.push(stream);
            }
        })
    }

    /// Changes the streams of `id`, and moves the id's one seat in the counts if the
    /// stream that counts changed. Returns whether who is present may have changed (not
    /// just whether the id's seat is live or in its grace period).
    fn change_tab(&mut self, id: &ReaderId, change: impl FnOnce(&mut Vec<TabStream>)) -> bool {
        let streams = self.tabs.entry(id.clone()).or_default();
        let before = counted(streams);
        change(streams);
        let after = counted(streams);
        if streams.is_empty() {
            self.tabs.remove(id);
        }
        if before == after {
            return false;
        }
        let moved = before.as_ref().map(|(seat, _)| seat) != after.as_ref().map(|(seat, _)| seat);
        if let Some((seat, live)) = before {
            let count = self.count(&seat);
            match live {
                true => count.live = count.live.saturating_sub(1),
                false => count.leaving = count.leaving.saturating_sub(1),
            }
        }
        if let Some((seat, live)) = after {
            let count = self.count(&seat);
            match live {
                true => count.live += 1,
                false => count.leaving += 1,
            }
        }
        moved
    }

    /// Forgets the names and ids nobody is under any more.
    fn forget_absent(&mut self) {
        self.names.retain(|_, c| c.present() > 0);
        self.identified.retain(|_, c| c.present() > 0);
    }

    /// Whether `client` may be listed as `name`: a name it is already listed under, or a
    /// new one while it has fewer than `cap`. Held until [`RoomReaders::release`].
    fn hold(&mut self, client: IpAddr, name: &str, cap: usize) -> bool {
        let held = self.clients.entry(client).or_default();
        if let Some(readers) = held.get_mut(name) {
            *readers += 1;
        } else if held.len() < cap {
            held.insert(name.to_owned(), 1);
        } else {
            return false;
        }
        true
    }

    fn release(&mut self, client: IpAddr, name: &str) {
        let Some(held) = self.clients.get_mut(&client) else { return };
        if let Some(readers) = held.get_mut(name) {
            *readers -= 1;
            if *readers == 0 {
                held.remove(name);
            }
        }
        if held.is_empty() {
            self.clients.remove(&client);
        }
    }

    /// Nobody left, not even within the grace period.
    fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.identified.is_empty()
            && self.tabs.is_empty()
            && self.anonymous.present() == 0
            && self.clients.is_empty()
    }
}

/// `view` with at most `shown` names (the first ones); the others count as anonymous. For
/// views merged from several nodes, each of which lists at most `shown`.
fn capped(mut view: PresenceView, shown: usize) -> PresenceView {
    let hidden = view.names.len().saturating_sub(shown);
    view.names.truncate(shown);
    view.anonymous += hidden as u64;
    view
}

pub struct Presence {
    /// This node's readers. A std mutex: held for counting only, never across an `.await`.
    rooms: Mutex<HashMap<RoomName, RoomReaders>>,
    rules: PresenceRules,
    /// Weak, like every reference presence keeps: presence must never keep a store (and its
    /// file lock) alive after the app is gone.
    store: Weak<dyn Store>,
    /// Rooms whose presence may have changed, for the task that recomputes and broadcasts.
    changed: mpsc::UnboundedSender<RoomName>,
    /// The last version stamped (see [`Presence::stamp`]). Only advanced under the `rooms`
    /// lock, so versions follow the order in which this node's readers were read.
    clock: AtomicU64,
    /// Set when the node drains: its readers were handed over, nothing is shared any more.
    withdrawn: AtomicBool,
    /// Views of a room are computed one at a time (rooms share these turns by hash), so a
    /// later version also holds a later read of the other nodes, and broadcasts go out in
    /// version order.
    turns: Vec<tokio::sync::Mutex<()>>,
    /// What each room was last told, and whether a view computed since (a new stream's
    /// first) showed other people: then the next view is told even if it equals the last.
    /// A std mutex, never held across an `.await`.
    told: Mutex<HashMap<RoomName, Told>>,
}

/// The last view a room's streams were told.
struct Told {
    view: PresenceView,
    /// Some stream was given a view with other people since.
    stale: bool,
}

impl Presence {
    /// Starts the task that keeps every room's presence up to date for its readers.
    pub fn start(store: &Arc<dyn Store>, hub: &Arc<Hub>, rules: PresenceRules) -> Arc<Self> {
        let (changed, mut rooms_changed) = mpsc::unbounded_channel();
        let presence = Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            rules,
            store: Arc::downgrade(store),
            changed,
            clock: AtomicU64::new(0),
            withdrawn: AtomicBool::new(false),
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            told: Mutex::new(HashMap::new()),
        });
        // Changes seen by other nodes arrive through the hub.
        hub.on_presence_changed(presence.changed.clone());
        let (weak, hub) = (Arc::downgrade(&presence), Arc::downgrade(hub));
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
            loop {
                let first = tokio::select! {
                    room = rooms_changed.recv() => match room {
                        Some(room) => room,
                        None => return,
                    },
                    _ = refresh.tick() => {
                        // Re-share every room with readers here, so its shared entry never
                        // expires; and forget rooms nobody reads any more.
                        let Some(presence) = weak.upgrade() else { return };
                        let rooms: HashSet<RoomName> = presence.rooms.lock().expect("presence lock poisoned").keys().cloned().collect();
                        presence.told.lock().expect("told lock poisoned").retain(|room, _| rooms.contains(room));
                        for room in &rooms {
                            presence.share(room);
                        }
                        continue;
                    }
                };
                // Let a burst of changes settle (a thousand readers connecting at once), so a
                // room is recomputed and told once, not once per reader.
                let mut rooms = HashSet::from([first]);
                let settled = tokio::time::sleep(SETTLE);
                tokio::pin!(settled);
                loop {
                    tokio::select! {
                        room = rooms_changed.recv() => match room {
                            Some(room) => { rooms.insert(room); }
                            None => return,
                        },
                        _ = &mut settled => break,
                    }
                }
                let (Some(presence), Some(hub)) = (weak.upgrade(), hub.upgrade()) else { return };
                if presence.store.strong_count() == 0 {
                    return;
                }
                for room in rooms {
                    if let Err(e) = presence.tell(&room, &hub).await {
                        tracing::warn!(%room, error = %e, "cannot compute presence");
                    }
                }
            }
        });
        presence
    }

    /// Counts a reader from `client` in `room` until the returned guard is dropped (plus the
    /// grace): under its name, unless the client is listed under too many names already;
    /// otherwise anonymously, under its id if it gave one.
    pub fn join(
        self: &Arc<Self>,
        room: &RoomName,
        reader: Option<&Author>,
        id: Option<&ReaderId>,
        client: IpAddr,
    ) -> Reader {
        let seat = {
            let mut rooms = self.rooms.lock().expect("presence lock poisoned");
            let readers = rooms.entry(room.clone()).or_default();
            let cap = self.rules.names_per_client;
            let name = reader.map(Author::as_str).filter(|name| readers.hold(client, name, cap));
            let seat = match (name, id) {
                (Some(name), _) => Seat::Named(name.to_owned()),
                (None, Some(id)) => Seat::Identified(id.clone()),
                (None, None) => Seat::Anonymous,
            };
            match &seat {
                Seat::Named(name) => readers.joined.names.push(name.clone()),
                _ => readers.joined.anonymous += 1,
            }
            let tab = id.and_then(|id| Some((id.clone(), readers.join_tab(id, seat.clone())?)));
            if tab.is_none() {
                let count = readers.count(&seat);
                // A reader back within the grace period takes its own place again.
                if count.leaving > 0 {
                    count.leaving -= 1;
                }
                count.live += 1;
            }
            (seat, tab)
        };
        // Shared even when the count here did not change: the arrival is news elsewhere.
        self.share(room);
        Reader { presence: Arc::downgrade(self), room: room.clone(), seat: seat.0, tab: seat.1, client }
    }

    /// This node's readers of `room`.
    pub fn local(&self, room: &RoomName) -> PresenceView {
        let rooms = self.rooms.lock().expect("presence lock poisoned");
        rooms.get(room).map_or_else(PresenceView::default, |r| r.view(self.rules.names))
    }

    /// Everyone reading `room`, on every node, as readers are told it.
    ///
    /// Views of a room are computed one at a time, each stamped with a version newer than
    /// every view before it here and than every part it merges. So a view computed after a
    /// reader joined both counts that reader and is newer than every view computed before:
    /// a stream that drops views older than the last it got (`feed.rs`) never goes back,
    /// and never hears of a room without itself.
    pub async fn view(&self, room: &RoomName) -> Result<PresenceView, StoreError> {
        let _turn = self.turn(room).lock().await;
        let view = self.compute(room).await?;
        if let Some(told) = self.told.lock().expect("told lock poisoned").get_mut(room) {
            told.stale |= !told.view.same_people(&view);
        }
        Ok(view)
    }

    /// Computes `room`'s view and broadcasts it to the room's streams, unless they all
    /// have the same people already.
    async fn tell(&self, room: &RoomName, hub: &Hub) -> Result<(), StoreError> {
        let _turn = self.turn(room).lock().await;
        let view = self.compute(room).await?;
        let mut told = self.told.lock().expect("told lock poisoned");
        if told.get(room).is_some_and(|told| !told.stale && told.view.same_people(&view)) {
            return Ok(());
        }
        hub.broadcast(room, Event::Presence(view.clone()));
        told.insert(room.clone(), Told { view, stale: false });
        Ok(())
    }

    /// Whose turn it is to compute views of `room`.
    fn turn(&self, room: &RoomName) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut hasher);
        &self.turns[hasher.finish() as usize % self.turns.len()]
    }

    /// Other nodes' readers first, then this node's, stamped in the same step. Only on
    /// `room`'s turn.
    async fn compute(&self, room: &RoomName) -> Result<PresenceView, StoreError> {
        let closed = || StoreError::Unavailable("the store is closed".to_owned());
        let store = self.store.upgrade().ok_or_else(closed)?;
        let others = store.presence(room, PresenceView::default()).await?;
        let local = self.stamped(room, others.version, None);
        Ok(capped(PresenceView::merge([&others, &local]), self.rules.names))
    }

    /// This node's readers of `room` with a new version; with `joined`, also takes who
    /// joined since the room was last shared.
    fn stamped(&self, room: &RoomName, newer_than: u64, joined: Option<&mut PresenceView>) -> PresenceView {
        let mut rooms = self.rooms.lock().expect("presence lock poisoned");
        let mut local = PresenceView::default();
        if let Some(readers) = rooms.get_mut(room) {
            local = readers.view(self.rules.names);
            if let Some(joined) = joined {
                *joined = std::mem::take(&mut readers.joined);
            }
        }
        local.version = self.stamp(newer_than);
        local
    }

    /// The next version: greater than the last one and than `newer_than`, and at least the
    /// wall clock in microseconds, so that views of different nodes compare too (a hybrid
    /// logical clock). Called under the `rooms` lock.
    fn stamp(&self, newer_than: u64) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let next = |last: u64| last.max(newer_than).saturating_add(1).max(now);
        let last = self.clock.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(next(l)));
        next(last.unwrap_or_default())
    }

    /// Draining: hands this node's readers of every room over to the other nodes at once,
    /// where they count for `--presence-grace` unless they reconnect there first (see
    /// `store/redis/presence.rs`). From now on this node shares nothing.
    pub async fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Relaxed);
        let Some(store) = self.store.upgrade() else { return };
        let rooms: Vec<(RoomName, PresenceView)> = {
            let rooms = self.rooms.lock().expect("presence lock poisoned");
            rooms.iter().map(|(room, readers)| (room.clone(), readers.view(self.rules.names))).collect()
        };
        if let Err(e) = store.withdraw_presence(&rooms, self.rules.grace).await {
            tracing::warn!(error = %e, "cannot withdraw presence; other nodes drop it when this node is gone");
        }
    }

    /// Tells the other nodes (if any) and this node's task that `room` changed.
    fn share(self: &Arc<Self>, room: &RoomName) {
        let Some(store) = self.store.upgrade() else { return };
        if self.withdrawn.load(Ordering::Relaxed) {
            // Handed over: only this node's own streams hear of it.
            let _ = self.changed.send(room.clone());
            return;
        }
        let mut joined = PresenceView::default();
        let local = self.stamped(room, 0, Some(&mut joined));
        let (room, changed) = (room.clone(), self.changed.clone());
        tokio::spawn(async move {
            if let Err(e) = store.share_presence(&room, local, joined).await {
                tracing::warn!(%room, error = %e, "cannot share presence");
            }
            let _ = changed.send(room);
        });
    }

    /// `reader` left: it still counts for the grace period, unless another stream of its
    /// reader id counts instead.
    fn leave(self: &Arc<Self>, reader: &Reader) {
        let moved = {
            let mut rooms = self.rooms.lock().expect("presence lock poisoned");
            let Some(readers) = rooms.get_mut(&reader.room) else { return };
            match &reader.tab {
                Some((id, token)) => readers.leave_tab(id, *token),
                None => {
                    let count = readers.count(&reader.seat);
                    count.live = count.live.saturating_sub(1);
                    count.leaving += 1;
                    false
                }
            }
        };
        if moved {
            // Another live stream of the same id counts now, perhaps under another name.
            self.share(&reader.room);
        }
        let (presence, room, seat) = (Arc::downgrade(self), reader.room.clone(), reader.seat.clone());
        let (tab, client, grace) = (reader.tab.clone(), reader.client, self.rules.grace);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(presence) = presence.upgrade() else { return };
            let changed = {
                let mut rooms = presence.rooms.lock().expect("presence lock poisoned");
                let Some(readers) = rooms.get_mut(&room) else { return };
                if let Seat::Named(name) = &seat {
                    readers.release(client, name);
                }
                let changed = match &tab {
                    Some((id, token)) => {
                        readers.change_tab(id, |streams| streams.retain(|s| s.token != *token))
                    }
                    None => {
                        let count = readers.count(&seat);
                        let before = count.present();
                        count.leaving = count.leaving.saturating_sub(1);
                        count.present() != before
                    }
                };
                // Forget what is gone, so the map only holds rooms with readers.
                readers.forget_absent();
                if readers.is_empty() {
                    rooms.remove(&room);
                }
                changed
            };
            if changed {
                presence.share(&room);
            }
        });
    }
}

/// One reader's place in a room; dropping it starts the grace period.
pub struct Reader {
    presence: Weak<Presence>,
    room: RoomName,
    seat: Seat,
    /// The reader id it gave, and this stream's token among the id's streams.
    tab: Option<(ReaderId, u64)>,
    client: IpAddr,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(presence) = self.presence.upgrade() {
            presence.leave(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(names: &[&str], anonymous: u64) -> PresenceView {
        PresenceView {
            names: names.iter().map(|n| n.to_string()).collect(),
            anonymous,
            ..PresenceView::default()
        }
    }

    #[test]
    fn views_merge_and_describe_themselves() {
        let merged = PresenceView::merge([&view(&["bob", "ana"], 1), &view(&["ana", "cy"], 2)]);
        assert_eq!(merged, view(&["ana", "bob", "cy"], 3));
        assert_eq!(merged.describe(), "ana, bob, cy and 3 others");
        assert_eq!(view(&[], 1).describe(), "1 other");
        assert_eq!(view(&[], 0).describe(), "nobody");
        assert_eq!(capped(view(&["a", "b", "c"], 2), 2), view(&["a", "b"], 3));
    }

    #[test]
    fn a_reader_with_an_id_is_counted_once_across_views() {
        let with = |ids: &[&str], anonymous| PresenceView {
            readers: ids.iter().map(|id| id.to_string()).collect(),
            ..view(&[], anonymous)
        };
        // One node: a reader with an id, one without. The other: the same id, two others.
        let merged = PresenceView::merge([&with(&["tab-a"], 2), &with(&["tab-a", "tab-b"], 3)]);
        assert_eq!((merged.anonymous, merged.readers.clone()), (4, vec!["tab-a".into(), "tab-b".into()]));
        let mut readers = RoomReaders::default();
        let tab = Seat::Identified(ReaderId::parse("tab-0001").unwrap());
        readers.count(&tab).live += 2; // a duplicated tab: the same reader
        readers.count(&Seat::Anonymous).live += 1;
        assert_eq!(readers.view(20), with(&["tab-0001"], 2));
    }

    #[test]
    fn only_one_stream_of_a_reader_id_counts() {
        let mut readers = RoomReaders::default();
        let id = ReaderId::parse("tab-0001").unwrap();
        let leave = |readers: &mut RoomReaders, token| readers.leave_tab(&id, token);
        let anonymous = readers.join_tab(&id, Seat::Identified(id.clone())).unwrap();
        assert_eq!(readers.view(20).anonymous, 1);
        let zoe = readers.join_tab(&id, Seat::Named("zoe".into())).unwrap();
        assert_eq!(readers.view(20), view(&["zoe"], 0), "a rename takes the seat over");
        assert!(!leave(&mut readers, anonymous), "the old stream's end changes nothing");
        let ann = readers.join_tab(&id, Seat::Named("ann".into())).unwrap();
        assert_eq!(readers.view(20), view(&["ann"], 0));
        assert!(leave(&mut readers, ann), "a duplicated tab under the other name counts again");
        assert_eq!(readers.view(20), view(&["zoe"], 0));
        assert!(!leave(&mut readers, zoe));
        assert_eq!(readers.view(20), view(&["zoe"], 0), "the last to leave, in its grace period");
        readers.change_tab(&id, |streams| streams.clear());
        readers.forget_absent();
        assert!(readers.is_empty());
        // One id given over and over is told apart only so often.
        let tokens: Vec<_> =
            (0..STREAMS_PER_ID + 1).map(|_| readers.join_tab(&id, Seat::Identified(id.clone()))).collect();
        assert!(tokens[..STREAMS_PER_ID].iter().all(Option::is_some) && tokens[STREAMS_PER_ID].is_none());
    }

    /// Joins `name` from `client` the way [`Presence::join`] does.
    fn join(readers: &mut RoomReaders, client: &str, name: &str, cap: usize) -> Option<String> {
        let reader = Some(name.to_owned()).filter(|n| readers.hold(client.parse().unwrap(), n, cap));
        let seat = reader.clone().map_or(Seat::Anonymous, Seat::Named);
        readers.count(&seat).live += 1;
        reader
    }

    #[test]
    fn a_view_lists_the_earliest_names_and_counts_the_rest() {
        let mut readers = RoomReaders::default();
        for name in ["zoe", "yan", "xu", "bob", "ana"] {
            join(&mut readers, "127.0.0.1", name, 100);
        }
        readers.count(&Seat::Anonymous).live += 1;
        assert_eq!(readers.view(3), view(&["xu", "yan", "zoe"], 3), "the first three, sorted");
        assert_eq!(readers.view(20), view(&["ana", "bob", "xu", "yan", "zoe"], 1));
        readers.count(&Seat::Named("yan".into())).live -= 1;
        assert_eq!(readers.view(3), view(&["bob", "xu", "zoe"], 2), "the next one moves up");
    }

    #[test]
    fn a_client_is_listed_under_a_few_names_at_most() {
        let mut readers = RoomReaders::default();
        assert_eq!(join(&mut readers, "10.0.0.1", "ana", 2).as_deref(), Some("ana"));
        assert_eq!(join(&mut readers, "10.0.0.1", "bob", 2).as_deref(), Some("bob"));
        assert_eq!(join(&mut readers, "10.0.0.1", "cy", 2), None, "a third name reads anonymously");
        assert_eq!(join(&mut readers, "10.0.0.1", "ana", 2).as_deref(), Some("ana"), "a name it holds");
        assert_eq!(join(&mut readers, "10.0.0.2", "cy", 2).as_deref(), Some("cy"), "another client");
        readers.release("10.0.0.1".parse().unwrap(), "bob");
        assert_eq!(join(&mut readers, "10.0.0.1", "dee", 2).as_deref(), Some("dee"), "bob's place is free");
        assert_eq!(readers.view(20), view(&["ana", "bob", "cy", "dee"], 1));
    }
}
