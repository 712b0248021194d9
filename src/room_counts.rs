//! The room list's message counts, live: `event: rooms` to every page stream.
//!
//! One task per node. Every [`EVERY`], if something was published (on this node or, with a
//! shared store, on any: the store tells each hub, see `store/redis/follow.rs`) or
//! [`REFRESH`] passed (retention prunes without a word), it reads the room list from the
//! store once (if any stream is open) and sends one frame to every room with the rooms whose count changed since
//! (by absolute count: a stream that missed a frame is right again at the room's next one).
//! Streams that asked for presence (`presence=1`: the page) pass it on, the others skip it.
//! So the cost is one store read and one encoding per node per tick, whatever the number
//! of streams, and no stream holds anything of its own for it.
//!
//! The frame is the same for every stream, whoever reads it, so it lists only the rooms a
//! guest may read: their counts tell nobody anything a guest could not see. A room only
//! some may read keeps, on their page, the count it was rendered with.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::domain::RoomName;
use crate::hub::Hub;
use crate::policy::watch::Policy;
use crate::rules::decide;
use crate::store::{Store, StoreError};
use crate::wire::{Event, RoomCount};

/// Rooms a page lists (the most recently active), and so the rooms the event counts.
pub const ROOM_LINKS: usize = 20;
/// The least time between two `rooms` events.
const EVERY: Duration = Duration::from_secs(2);
/// How often the counts are read even when nothing was published.
const REFRESH: Duration = Duration::from_secs(30);

/// Starts the task; it ends with `stop`, or when the app is gone.
pub fn start(store: &Arc<dyn Store>, hub: &Arc<Hub>, policy: &Arc<Policy>, stop: CancellationToken) {
    // Weak, like every reference kept beside the app: nothing here keeps a store alive.
    let (store, hub, policy): (Weak<dyn Store>, _, _) =
        (Arc::downgrade(store), Arc::downgrade(hub), Arc::downgrade(policy));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + EVERY, EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (mut read_at, mut known) = (Instant::now(), Vec::new());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let (Some(store), Some(hub), Some(policy)) = (store.upgrade(), hub.upgrade(), policy.upgrade())
            else {
                return;
            };
            // With no stream open there is nobody to tell: pages read the counts themselves.
            if hub.is_idle() || (!hub.take_activity() && read_at.elapsed() < REFRESH) {
                continue;
            }
            read_at = Instant::now();
            match public_counts(&*store, &policy).await {
                Ok(counts) => {
                    let changed: Vec<RoomCount> =
                        counts.iter().filter(|c| !known.contains(*c)).cloned().collect();
                    if !changed.is_empty() {
                        hub.announce(Event::Rooms(changed));
                    }
                    known = counts;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the room counts"),
            }
        }
    });
}

/// The most recently active rooms that a guest may read, with their counts.
async fn public_counts(store: &dyn Store, policy: &Policy) -> Result<Vec<RoomCount>, StoreError> {
    let rooms = store.rooms(ROOM_LINKS).await?;
    let dir = policy.directory().await?;
    let public = |room: &RoomName| decide(&dir.rules, &Identity::Guest, room, policy.default).0.read;
    Ok(rooms
        .into_iter()
        .filter(|r| public(&r.name))
        .map(|r| RoomCount { name: r.name, messages: r.messages })
        .collect())
}
