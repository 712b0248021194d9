//! The state every handler shares, and how it is built from the configuration.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreUrl};
use crate::domain::RoomName;
use crate::hub::Hub;
use crate::limits::{RateLimiter, StreamLimits};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::{MemoryStore, RedisStore, SqliteStore, Store};

/// Shared by every request; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// History: the only way handlers read or write messages.
    pub store: Arc<dyn Store>,
    /// Fan-out: streams subscribe here; the store publishes here.
    pub hub: Arc<Hub>,
    /// Who has each room open, on every node.
    pub presence: Arc<Presence>,
    /// When each (room, author) last sent a typing signal, for rate limiting. A std mutex:
    /// held for one map update, never across an `.await`.
    pub typing_limits:
        Arc<std::sync::Mutex<std::collections::HashMap<(RoomName, String), std::time::Instant>>>,
    /// Caps on open streams, overall and per client.
    pub streams: Arc<StreamLimits>,
    /// Sends per client (token buckets).
    pub sends: Arc<RateLimiter>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// Cancelled when shutdown starts: the server drains (streams end, answers say
    /// `connection: close`) but still answers.
    pub shutdown: CancellationToken,
    /// Cancelled when draining is over: idle connections close. (Streams end through the
    /// hub, which closes then.)
    pub stopped: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(String),
}

impl AppState {
    /// Builds the hub and opens the store named by `config`.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let hub = Hub::new(config.buffer);
        let retention = config.retention();
        let store: Arc<dyn Store> = match &config.store {
            StoreUrl::Memory => Arc::new(MemoryStore::new(Arc::clone(&hub), retention)),
            StoreUrl::Sqlite(path) => {
                let store =
                    SqliteStore::open(path, Arc::clone(&hub), retention).map_err(StartError::Store)?;
                store.start_pruning();
                Arc::new(store)
            }
            StoreUrl::Redis(url) => {
                Arc::new(RedisStore::open(url, Arc::clone(&hub), retention).await.map_err(StartError::Store)?)
            }
        };
        Ok(Self::with_store(config, hub, store))
    }

    /// The client a request comes from (see [`crate::limits::client_ip`]): the key of its
    /// rate limits and stream caps.
    pub fn client_of(&self, peer: std::net::SocketAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
        crate::limits::client_ip(peer, headers, self.config.trust_proxy)
    }

    /// Wires a store that was opened elsewhere (it must publish to `hub`).
    pub fn with_store(config: Config, hub: Arc<Hub>, store: Arc<dyn Store>) -> Self {
        hub.start_heartbeat(config.heartbeat);
        let presence = Presence::start(&store, &hub, config.presence_grace);
        Self {
            store,
            hub,
            presence,
            typing_limits: Default::default(),
            streams: StreamLimits::new(config.stream_cap(), config.max_streams_per_client),
            sends: Arc::new(RateLimiter::new(config.send_rate, config.send_burst)),
            metrics: Arc::new(Metrics::default()),
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            stopped: CancellationToken::new(),
        }
    }
}
