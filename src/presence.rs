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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::PresenceView;
use crate::domain::{Author, RoomName};
use crate::hub::Hub;
use crate::store::Store;
use crate::wire::Event;

/// How often this node re-shares its readers (a node silent for 30 s counts as gone).
const REFRESH: Duration = Duration::from_secs(10);
/// How long changes to presence gather before a room is recomputed and told.
const SETTLE: Duration = Duration::from_millis(100);

/// Readers under one name (or the anonymous ones) in one room on this node.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    live: usize,
    /// Left, but still inside the grace period.
    leaving: usize,
}

impl Count {
    fn present(&self) -> usize {
        self.live + self.leaving
    }
}

#[derive(Debug, Default)]
struct RoomReaders {
    names: HashMap<String, Count>,
    anonymous: Count,
}

impl RoomReaders {
    fn view(&self) -> PresenceView {
        let mut names: Vec<String> =
            self.names.iter().filter(|(_, c)| c.present() > 0).map(|(n, _)| n.clone()).collect();
        names.sort();
        PresenceView { names, anonymous: self.anonymous.present() as u64 }
    }

    fn count(&mut self, reader: &Option<String>) -> &mut Count {
        match reader {
            Some(name) => self.names.entry(name.clone()).or_default(),
            None => &mut self.anonymous,
        }
    }
}

pub struct Presence {
    /// This node's readers. A std mutex: held for counting only, never across an `.await`.
    rooms: Mutex<HashMap<RoomName, RoomReaders>>,
    grace: Duration,
    /// Weak, like every reference presence keeps: presence must never keep a store (and its
    /// file lock) alive after the app is gone.
    store: Weak<dyn Store>,
    /// Rooms whose presence may have changed, for the task that recomputes and broadcasts.
    changed: mpsc::UnboundedSender<RoomName>,
}

impl Presence {
    /// Starts the task that keeps every room's presence up to date for its readers.
    pub fn start(store: &Arc<dyn Store>, hub: &Arc<Hub>, grace: Duration) -> Arc<Self> {
        let (changed, mut rooms_changed) = mpsc::unbounded_channel();
        let presence = Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            grace,
            store: Arc::downgrade(store),
            changed,
        });
        // Changes seen by other nodes arrive through the hub.
        hub.on_presence_changed(presence.changed.clone());
        let (weak, hub) = (Arc::downgrade(&presence), Arc::downgrade(hub));
        tokio::spawn(async move {
            // What each room was last told, so an unchanged view is not sent again.
            let mut told: HashMap<RoomName, PresenceView> = HashMap::new();
            let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
            loop {
                let first = tokio::select! {
                    room = rooms_changed.recv() => match room {
                        Some(room) => room,
                        None => return,
                    },
                    _ = refresh.tick() => {
                        // Re-share every room with readers here, so other nodes never take
                        // this one for dead; and forget rooms nobody reads any more.
                        let Some(presence) = weak.upgrade() else { return };
                        let rooms: Vec<RoomName> = presence.rooms.lock().expect("presence lock poisoned").keys().cloned().collect();
                        told.retain(|room, _| rooms.contains(room));
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
                let Some(store) = presence.store.upgrade() else { return };
                for room in rooms {
                    let local = presence.local(&room);
                    match store.presence(&room, local).await {
                        Ok(view) if told.get(&room) != Some(&view) => {
                            told.insert(room.clone(), view.clone());
                            hub.broadcast(&room, Event::Presence(view));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(%room, error = %e, "cannot compute presence"),
                    }
                }
            }
        });
        presence
    }

    /// Counts a reader in `room` until the returned guard is dropped (plus the grace).
    pub fn join(self: &Arc<Self>, room: &RoomName, reader: Option<&Author>) -> Reader {
        let reader = reader.map(|a| a.as_str().to_owned());
        let changed = {
            let mut rooms = self.rooms.lock().expect("presence lock poisoned");
            let readers = rooms.entry(room.clone()).or_default();
            let before = readers.view();
            let count = readers.count(&reader);
            // A reader back within the grace period takes its own place again.
            if count.leaving > 0 {
                count.leaving -= 1;
            }
            count.live += 1;
            readers.view() != before
        };
        if changed {
            self.share(room);
        }
        Reader { presence: Arc::downgrade(self), room: room.clone(), reader }
    }

    /// This node's readers of `room`.
    pub fn local(&self, room: &RoomName) -> PresenceView {
        let rooms = self.rooms.lock().expect("presence lock poisoned");
        rooms.get(room).map(RoomReaders::view).unwrap_or_default()
    }

    /// Tells the other nodes (if any) and this node's task that `room` changed.
    fn share(self: &Arc<Self>, room: &RoomName) {
        let Some(store) = self.store.upgrade() else { return };
        let local = self.local(room);
        let (room, changed) = (room.clone(), self.changed.clone());
        tokio::spawn(async move {
            if let Err(e) = store.share_presence(&room, local).await {
                tracing::warn!(%room, error = %e, "cannot share presence");
            }
            let _ = changed.send(room);
        });
    }

    fn leave(self: &Arc<Self>, room: &RoomName, reader: &Option<String>) {
        {
            let mut rooms = self.rooms.lock().expect("presence lock poisoned");
            let Some(readers) = rooms.get_mut(room) else { return };
            let count = readers.count(reader);
            count.live = count.live.saturating_sub(1);
            count.leaving += 1;
        }
        let (presence, room, reader) = (Arc::downgrade(self), room.clone(), reader.clone());
        let grace = self.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(presence) = presence.upgrade() else { return };
            let changed = {
                let mut rooms = presence.rooms.lock().expect("presence lock poisoned");
                let Some(readers) = rooms.get_mut(&room) else { return };
                let before = readers.view();
                let count = readers.count(&reader);
                count.leaving = count.leaving.saturating_sub(1);
                let after = readers.view();
                // Forget what is gone, so the map only holds rooms with readers.
                readers.names.retain(|_, c| c.present() > 0);
                if readers.names.is_empty() && readers.anonymous.present() == 0 {
                    rooms.remove(&room);
                }
                after != before
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
    reader: Option<String>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(presence) = self.presence.upgrade() {
            presence.leave(&self.room, &self.reader);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(names: &[&str], anonymous: u64) -> PresenceView {
        PresenceView { names: names.iter().map(|n| n.to_string()).collect(), anonymous }
    }

    #[test]
    fn views_merge_and_describe_themselves() {
        let merged = PresenceView::merge([&view(&["bob", "ana"], 1), &view(&["ana", "cy"], 2)]);
        assert_eq!(merged, view(&["ana", "bob", "cy"], 3));
        assert_eq!(merged.describe(), "ana, bob, cy and 3 others");
        assert_eq!(view(&[], 1).describe(), "1 other");
        assert_eq!(view(&[], 0).describe(), "nobody");
    }
}
