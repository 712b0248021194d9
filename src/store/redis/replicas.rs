//! On a Redis Cluster, a write is acknowledged once a replica has it too.
//!
//! Redis replicates asynchronously: a primary killed right after answering a write may
//! take it along, and the replica promoted in its place never had it. So after each write
//! script the store sends `WAIT 1 <ms>` to the same primary over the same connection (WAIT
//! counts the writes of the connection it arrives on), in one pipeline with the script:
//! `/send` answers once a replica has the message, or once [`WAIT_FOR`] has passed.
//!
//! A primary whose replica is down or behind must keep taking writes, but every `WAIT`
//! would then hold its connection for [`WAIT_FOR`] (a blocked client's later commands wait
//! behind it). So a primary found without a replica is remembered by its slot ranges, its
//! writes are acknowledged without waiting, and it is asked again every [`ASK_AGAIN`] (one
//! write waits); a warning is logged at most every [`WARN_EVERY`] while writes go
//! unconfirmed. That is the window of loss: writes to a primary without a live replica, and
//! writes in flight when it is found so, are on one node only until a replica catches up.

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::RedisResult;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::conn::RedisConn;
use super::room::{Call, Outcome};
use super::slots::{SlotMap, slot_of};
use crate::domain::RoomName;

/// How long a write waits for a replica. Well under the command timeout (a `WAIT` that
/// outlasts it would be re-sent), well over a healthy replica's delay (a round trip).
const WAIT_FOR: Duration = Duration::from_millis(500);
/// How long a primary found without a replica is trusted alone before one write waits again.
const ASK_AGAIN: Duration = Duration::from_secs(5);
/// At most one warning this often about writes acknowledged without a replica.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Which primaries were last seen without a replica. A `std` mutex: never held across an
/// await.
#[derive(Default)]
pub struct Replication {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    alone: Vec<Alone>,
    /// Writes acknowledged without a replica since the last warning.
    unconfirmed: u64,
    warned: Option<Instant>,
}

/// A primary without a replica: its slot ranges, and when to wait on it again.
struct Alone {
    slots: Vec<RangeInclusive<u16>>,
    ask_at: Instant,
}

impl Replication {
    /// Runs the write `call` on `room`'s primary. On a Cluster, `WAIT 1` follows it in the
    /// same pipeline (so on the same connection, to the same node: a pipeline is sent as one
    /// request), unless that primary was found alone lately. The script ran but `WAIT` got
    /// no reply, or an error: an IO error, since the write may not outlive its primary (the
    /// store reports the outcome as unknown).
    pub async fn write(
        &self,
        conn: &mut RedisConn,
        call: &Call<'_>,
        room: &RoomName,
    ) -> RedisResult<Option<Outcome>> {
        let RedisConn::Cluster(cluster) = conn else { return Ok(call.run(conn, None).await?.0) };
        let slot = slot_of(room);
        let wait = self.should_wait(slot).then(|| {
            let mut wait = redis::cmd("WAIT");
            wait.arg(1).arg(WAIT_FOR.as_millis() as u64);
            wait
        });
        let (outcome, acks) = call.run(cluster, wait.as_ref()).await?;
        match acks.map(redis::from_redis_value::<i64>) {
            None => {}
            Some(Ok(acks)) if acks > 0 => self.state().alone.retain(|a| !a.serves(slot)),
            Some(Ok(_)) => self.found_alone(cluster, slot).await,
            Some(Err(e)) => return Err(std::io::Error::other(format!("no reply to WAIT: {e}")).into()),
        }
        Ok(outcome)
    }

    /// The primary serving `slot` answered `WAIT` with no replica: its slot ranges are
    /// asked (`CLUSTER SLOTS`); if that fails, the one slot is noted.
    async fn found_alone(&self, conn: &mut ClusterConnection, slot: u16) {
        let shards = conn.route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), primary(slot)).await;
        let slots =
            shards.ok().and_then(|s| SlotMap::parse(&s)).map(|map| map.ranges_with(slot)).unwrap_or_default();
        self.note_alone(if slots.is_empty() { vec![slot..=slot] } else { slots });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a write to `slot` waits: yes, unless its primary is alone and was asked
    /// less than [`ASK_AGAIN`] ago (then this write is counted as unconfirmed).
    fn should_wait(&self, slot: u16) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let Some(alone) = state.alone.iter_mut().find(|a| a.serves(slot)) else { return true };
        if now >= alone.ask_at {
            // This write asks; the others still don't wait meanwhile.
            alone.ask_at = now + ASK_AGAIN;
            return true;
        }
        state.unconfirmed += 1;
        state.warn(now);
        false
    }

    /// The primary serving `slots` has no replica that keeps up.
    fn note_alone(&self, slots: Vec<RangeInclusive<u16>>) {
        let now = Instant::now();
        let mut state = self.state();
        state.unconfirmed += 1;
        state.alone.retain(|a| !slots.iter().any(|r| a.serves(*r.start())));
        state.alone.push(Alone { slots, ask_at: now + ASK_AGAIN });
        state.warn(now);
    }
}

impl State {
    fn warn(&mut self, now: Instant) {
        if self.warned.is_some_and(|at| now < at + WARN_EVERY) {
            return;
        }
        tracing::warn!(
            writes = self.unconfirmed,
            "a Redis Cluster primary has no replica that keeps up: writes acknowledged without \
             a replica (lost if that primary fails before one catches up)"
        );
        self.unconfirmed = 0;
        self.warned = Some(now);
    }
}

impl Alone {
    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

/// The route to the primary serving `slot`.
fn primary(slot: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_found_alone_is_asked_again_by_one_write_at_a_time() {
        let replication = Replication::default();
        assert!(replication.should_wait(10));
        replication.note_alone(vec![0..=99]);
        assert!(!replication.should_wait(10), "alone: no wait");
        assert!(replication.should_wait(100), "another primary still waits");
        replication.state().alone[0].ask_at = Instant::now();
        assert!(replication.should_wait(50), "time to ask again");
        assert!(!replication.should_wait(50), "one write asks, the others don't wait");
    }
}
