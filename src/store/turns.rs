//! Slow-mode turns kept in this process: for the stores that serve one node (memory,
//! SQLite). Redis keeps them in Redis, so that every node shares them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::RoomName;

/// Entries held before the expired ones are swept out.
const SWEEP_AT: usize = 10_000;

#[derive(Default)]
pub struct LocalTurns {
    /// When each (room, sender) may post next. A std mutex: never held across an await.
    next: Mutex<HashMap<(RoomName, String), Instant>>,
}

impl LocalTurns {
    /// Takes the sender's turn (`None`), or says how long until the next one.
    pub fn take(&self, room: &RoomName, sender: &str, every: Duration) -> Option<Duration> {
        let now = Instant::now();
        let mut next = self.next.lock().expect("turns poisoned");
        if next.len() >= SWEEP_AT {
            next.retain(|_, at| *at > now);
        }
        let key = (room.clone(), sender.to_owned());
        match next.get(&key) {
            Some(at) if *at > now => Some(*at - now),
            _ => {
                next.insert(key, now + every);
                None
            }
        }
    }
}
