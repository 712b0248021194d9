//! The state every handler shares, and how it is built from the configuration.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreUrl};
use crate::hub::Hub;
use crate::limits::{Caps, SendLimiter, Site, TrustedProxies, TypingLimiter, client_key};
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
    /// Typing signals per author and room.
    pub typing: Arc<TypingLimiter>,
    /// Caps on open streams, overall and per client.
    pub streams: Arc<Caps>,
    /// Caps on open connections of every kind, overall and per peer (taken at accept).
    pub connections: Arc<Caps>,
    /// Sends per client (token buckets; in Redis when nodes share one).
    pub sends: Arc<SendLimiter>,
    /// Whose forwarding headers name the client and the site (`--trusted-proxy`).
    pub proxies: Arc<TrustedProxies>,
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
        let mut shared_sends = None;
        let store: Arc<dyn Store> = match &config.store {
            StoreUrl::Memory => Arc::new(MemoryStore::new(Arc::clone(&hub), retention)),
            StoreUrl::Sqlite(path) => {
                let store =
                    SqliteStore::open(path, Arc::clone(&hub), retention).map_err(StartError::Store)?;
                store.start_pruning();
                Arc::new(store)
            }
            StoreUrl::Redis(url) => {
                let store =
                    RedisStore::open(url, Arc::clone(&hub), retention).await.map_err(StartError::Store)?;
                shared_sends = Some(SendLimiter::shared(&store, config.send_rate, config.send_burst));
                Arc::new(store)
            }
        };
        let mut state = Self::with_store(config, hub, store);
        if let Some(sends) = shared_sends {
            state.sends = Arc::new(sends);
        }
        Ok(state)
    }

    /// The client a request comes from, as the key of its rate limits and stream caps: the
    /// peer, or behind a trusted proxy the client it reports (see [`TrustedProxies::client`]);
    /// IPv6 cut to its /64.
    pub fn client_of(&self, peer: std::net::SocketAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
        client_key(self.proxies.client(peer.ip(), headers))
    }

    /// The site the browser sent the request to: `--public-url`, else what the request (or a
    /// trusted proxy) says. A browser's post must come from a page of this site.
    pub fn site_of(&self, peer: std::net::SocketAddr, headers: &axum::http::HeaderMap) -> Site {
        match &self.config.public_url {
            Some(url) => url.site().clone(),
            None => self.proxies.site(peer.ip(), headers),
        }
    }

    /// Wires a store that was opened elsewhere (it must publish to `hub`).
    pub fn with_store(config: Config, hub: Arc<Hub>, store: Arc<dyn Store>) -> Self {
        hub.start_heartbeat(config.heartbeat);
        let presence = Presence::start(&store, &hub, config.presence_grace);
        Self {
            store,
            hub,
            presence,
            typing: Arc::default(),
            streams: Caps::new("streams", config.stream_cap(), config.max_streams_per_client),
            connections: Caps::new("connections", config.connection_cap(), config.max_connections_per_client),
            sends: Arc::new(SendLimiter::local(config.send_rate, config.send_burst)),
            proxies: Arc::new(config.trusted_proxies()),
            metrics: Arc::new(Metrics::default()),
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            stopped: CancellationToken::new(),
        }
    }
}
