//! A room's newest id, for streams that start now: one read of the store serves every
//! stream of the room that subscribed before the read began.
//!
//! A stream that starts without a resume point subscribes first, then asks for the room's
//! newest id: anything newer reaches it through the subscription. A read that began before
//! the stream subscribed could miss a message published in between, so a stream joins only
//! a read that has not begun yet, and a room's reads run one after another. A burst of
//! readers (10,000 streams opened over a few HTTP/2 connections, every tab coming back
//! after a restart) then costs a few reads instead of one each, and the requests waiting on
//! them (several KiB each on the router's path) are waiting for far less time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::StoreError;
use crate::domain::{MessageId, RoomName};

type Read = Shared<BoxFuture<'static, Result<MessageId, StoreError>>>;

/// The reads under way and about to begin, per room (see the module's text).
#[derive(Default)]
pub struct NewestIds {
    /// A std mutex: never held across an await.
    rooms: Arc<Mutex<HashMap<RoomName, Room>>>,
}

#[derive(Default)]
struct Room {
    /// Held by the room's read under way: the next one waits for it.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The read not begun yet, which a stream subscribed now may join.
    next: Option<Read>,
}

impl NewestIds {
    /// `room`'s newest id, from a read (`read`, unless one is joined) that begins after this
    /// call. Call it after subscribing to the room.
    pub async fn after_subscribing<F, Fut>(&self, room: &RoomName, read: F) -> Result<MessageId, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<MessageId, StoreError>> + Send + 'static,
    {
        let joined = {
            let mut rooms = self.rooms.lock().unwrap();
            let entry = rooms.entry(room.clone()).or_default();
            match &entry.next {
                Some(next) => next.clone(),
                None => {
                    let turn = Arc::clone(&entry.turn);
                    let next = in_turn(Arc::clone(&self.rooms), room.clone(), turn, read()).boxed().shared();
                    entry.next = Some(next.clone());
                    next
                }
            }
        };
        joined.await
    }

    /// Rooms with a read under way or about to begin.
    #[cfg(test)]
    fn rooms(&self) -> usize {
        self.rooms.lock().unwrap().len()
    }
}

/// Runs `read` once the room's previous read has ended; from the moment it begins, streams
/// that subscribe join the next one. The room is forgotten when nothing is left to join.
async fn in_turn(
    rooms: Arc<Mutex<HashMap<RoomName, Room>>>,
    room: RoomName,
    turn: Arc<tokio::sync::Mutex<()>>,
    read: impl Future<Output = Result<MessageId, StoreError>>,
) -> Result<MessageId, StoreError> {
    let _turn = turn.lock().await;
    if let Some(entry) = rooms.lock().unwrap().get_mut(&room) {
        entry.next = None;
    }
    let newest = read.await;
    let mut rooms = rooms.lock().unwrap();
    if rooms.get(&room).is_some_and(|entry| entry.next.is_none()) {
        rooms.remove(&room);
    }
    newest
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::sync::Semaphore;

    use super::*;

    /// Reads that count themselves and wait for `open` to let each one finish; each gives
    /// its own number as the id.
    #[derive(Clone)]
    struct Reads {
        begun: Arc<AtomicU64>,
        open: Arc<Semaphore>,
    }

    impl Default for Reads {
        fn default() -> Self {
            Self { begun: Arc::default(), open: Arc::new(Semaphore::new(0)) }
        }
    }

    impl Reads {
        fn read(&self) -> impl Future<Output = Result<MessageId, StoreError>> + Send + 'static {
            let reads = self.clone();
            async move {
                let number = reads.begun.fetch_add(1, Ordering::SeqCst) + 1;
                reads.open.acquire().await.unwrap().forget();
                Ok(number)
            }
        }
        fn begun(&self) -> u64 {
            self.begun.load(Ordering::SeqCst)
        }
    }

    fn room() -> RoomName {
        RoomName::parse("lobby").unwrap()
    }

    #[tokio::test]
    async fn streams_that_subscribe_together_share_one_read() {
        let (newest, reads) = (Arc::new(NewestIds::default()), Reads::default());
        let waiting: Vec<_> = (0..100)
            .map(|_| {
                let (newest, reads) = (Arc::clone(&newest), reads.clone());
                tokio::spawn(async move { newest.after_subscribing(&room(), || reads.read()).await })
            })
            .collect();
        // Every stream has subscribed and asked (each task runs until it waits) before
        // the first read answers.
        while reads.begun() == 0 {
            tokio::task::yield_now().await;
        }
        reads.open.add_permits(100);
        for stream in waiting {
            assert!(stream.await.unwrap().unwrap() <= 2);
        }
        // The first caller's read began before the others asked: they share the second.
        assert_eq!(reads.begun(), 2, "reads for 100 streams");
        assert_eq!(newest.rooms(), 0, "a room with no read under way is forgotten");
    }

    #[tokio::test]
    async fn a_stream_never_joins_a_read_that_began_before_it_subscribed() {
        let (newest, reads) = (Arc::new(NewestIds::default()), Reads::default());
        let early = {
            let (newest, reads) = (Arc::clone(&newest), reads.clone());
            tokio::spawn(async move { newest.after_subscribing(&room(), || reads.read()).await })
        };
        while reads.begun() == 0 {
            tokio::task::yield_now().await;
        }
        // The first read is under way and has not answered: a stream subscribing now gets a
        // second read, begun after the first has ended.
        let late = {
            let (newest, reads) = (Arc::clone(&newest), reads.clone());
            tokio::spawn(async move { newest.after_subscribing(&room(), || reads.read()).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(reads.begun(), 1, "a room's reads run one after another");
        reads.open.add_permits(2);
        assert_eq!(early.await.unwrap().unwrap(), 1);
        assert_eq!(late.await.unwrap().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_failed_read_fails_every_stream_that_joined_it_and_the_next_read_runs() {
        let (newest, room) = (NewestIds::default(), room());
        let down = || async { Err(StoreError::Unavailable("down".into())) };
        assert!(matches!(newest.after_subscribing(&room, down).await, Err(StoreError::Unavailable(_))));
        assert_eq!(newest.after_subscribing(&room, || async { Ok(7) }).await.unwrap(), 7);
    }
}
