//! One connection type for commands and scripts over both kinds of Redis: a single
//! primary (a `ConnectionManager`, which reconnects) or a Redis Cluster (redis-rs's cluster
//! connection, which routes each command by its key's slot and follows MOVED). Cheap to
//! clone; clones share the connection. Pub/sub does not go through it (`follow.rs`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// A connection to the Cluster that `seeds` (`redis://HOST:PORT`) belong to. Each
    /// command waits at most `timeout` per try, and an IO error is retried twice: a retried
    /// script may run twice (see `room.rs` on idempotency).
    pub async fn cluster(seeds: &[String], timeout: Duration) -> RedisResult<Self> {
        let client = ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()?;
        Ok(Self::Cluster(client.get_async_connection().await?))
    }

    /// How to publish: `PUBLISH` on one Redis, sharded `SPUBLISH` on a Cluster (a plain
    /// `PUBLISH` there goes to every node of the Cluster).
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    /// Publishes `payload` on `channel` with [`Self::publish_command`].
    pub async fn publish(&mut self, channel: &str, payload: &str) -> RedisResult<()> {
        redis::cmd(self.publish_command()).arg(channel).arg(payload).exec_async(self).await
    }

    /// Whether a request may reach Redis twice. The cluster connection re-sends a request
    /// after an IO error (redis-1.8.1 `cluster_handling/async_connection/request.rs`:
    /// 202-235 and 301-306; retry methods in `errors/redis_error.rs`:429-460), so a write
    /// script whose reply was lost runs again. The `ConnectionManager` sends each request
    /// once (`aio/connection_manager.rs`:702-711; its retries, :608-611, are connection
    /// attempts only), and a script goes again only after `NOSCRIPT`, when it did not run
    /// (`room::Call::run`, as `Script::invoke_async` does in `script.rs`:214-223).
    pub fn resends(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// Where a `MULTI` whose slot moved must go. redis-rs follows `MOVED` for a command, not for
/// a transaction (it gives up, and does not even learn the new slot map): after a failover,
/// every `MULTI` on a moved slot would fail until some single command refreshed the map.
fn moved_to(e: &RedisError) -> Option<(String, u16)> {
    let errors = e.clone().into_server_errors()?;
    let moved = errors.iter().find(|(_, e)| e.kind() == Some(ServerErrorKind::Moved))?;
    let (_slot, address) = moved.1.details()?.split_once(' ')?;
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => Box::pin(async move {
                match c.req_packed_commands(pipeline, offset, count).await {
                    Err(e) => match moved_to(&e) {
                        Some((host, port)) => {
                            let to = SingleNodeRoutingInfo::ByAddress { host, port };
                            c.route_pipeline(pipeline.clone(), offset, count, to).await
                        }
                        None => Err(e),
                    },
                    done => done,
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
