//! The state every handler shares, and how it is built from the configuration.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use std::net::IpAddr;

use crate::auth::{Access, Identity};
use crate::certificates::{self, CertificateFiles};
use crate::config::{Config, StoreUrl};
use crate::domain::RoomName;
use crate::error::AppError;
use crate::hub::Hub;
use crate::limits::{
    AllowedHosts, Caps, SendLimiter, SignInLimiter, Site, TrustedProxies, TypingLimiter, client_key,
};
use crate::metrics::Metrics;
use crate::policy::evaluate;
use crate::policy::watch::{Need, Policy, check};
use crate::presence::{Presence, PresenceRules};
use crate::store::{MemoryStore, NewestIds, RedisStore, Retention, RoomInfo, SqliteStore, Store};
use rustls::server::ResolvesServerCert;

/// Shared by every request; cheap to clone (one `Arc`: a request's extractors clone it
/// several times, and cloning every field, the cancellation tokens above all, showed in
/// profiles of `/send`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// History: the only way handlers read or write messages.
    pub store: Arc<dyn Store>,
    /// Streams starting now share reads of their room's newest id.
    pub newest: NewestIds,
    /// Fan-out: streams subscribe here; the store publishes here.
    pub hub: Arc<Hub>,
    /// Who has each room open, on every node.
    pub presence: Arc<Presence>,
    /// Typing signals per client and per author and room: a flood of signals under many
    /// names from one client is refused before its bodies are read.
    pub typing: Arc<TypingLimiter>,
    /// Caps on open streams, overall and per client.
    pub streams: Arc<Caps>,
    /// Caps on open connections of every kind, overall and per peer (taken at accept).
    pub connections: Arc<Caps>,
    /// Sends per client (token buckets; in Redis when nodes share one).
    pub sends: Arc<SendLimiter>,
    /// Failed sign-ins per client and per name.
    pub sign_ins: Arc<SignInLimiter>,
    /// Whose forwarding headers name the client and the site (`--trusted-proxy`).
    pub proxies: Arc<TrustedProxies>,
    pub metrics: Arc<Metrics>,
    /// The hosts requests may be for (`--allowed-host`), so a DNS-rebinding page cannot
    /// reach a server on loopback.
    pub hosts: Arc<AllowedHosts>,
    pub config: Arc<Config>,
    /// This node's snapshot of the access rules, bans and room settings, kept current by a
    /// watcher that also ends streams that lost access (`policy/watch.rs`).
    pub policy: Arc<Policy>,
    /// Cancelled when shutdown starts: the server drains (streams end, answers say
    /// `connection: close`) but still answers.
    pub shutdown: CancellationToken,
    /// Cancelled when draining is over: idle connections close. (Streams end through the
    /// hub, which closes then.)
    pub stopped: CancellationToken,
    /// With TLS on, how connections are served (`--tls-cert`, or `--acme`): HTTPS on the
    /// listener, and the site counts as https (secure cookies).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `--acme`: how the CA's TLS-ALPN-01 validation handshakes are answered.
    pub acme_challenge: Option<Arc<rustls::ServerConfig>>,
}

/// The Redis store `store` names: a Redis Cluster for `redis+cluster://` (by its seed nodes),
/// else one Redis. Shared by the server and the commands (`cli.rs`).
pub async fn open_redis(store: &StoreUrl, hub: Arc<Hub>, retention: Retention) -> Result<RedisStore, String> {
    match store {
        StoreUrl::Redis(url) => RedisStore::open(url, hub, retention).await,
        StoreUrl::RedisCluster(seeds) => RedisStore::open_cluster(seeds, hub, retention).await,
        StoreUrl::Memory | StoreUrl::Sqlite(_) => Err(format!("{} is not Redis", store.described())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Tls(String),
}

/// How HTTPS is served: the clients' configuration, and with ACME the validations'.
struct Tls {
    serving: Arc<rustls::ServerConfig>,
    challenge: Option<Arc<rustls::ServerConfig>>,
}

impl AppState {
    /// Builds the hub and opens the store named by `config`.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let certificates = CertificateFiles::from_config(&config).map_err(StartError::Tls)?;
        // Before the store opens: a bad cache directory or CA file is said at once.
        let acme = match config.acme.enabled() {
            true => {
                Some(crate::acme::acme_acceptor(&config.acme).map_err(|e| StartError::Tls(e.to_string()))?)
            }
            false => None,
        };
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
            StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => {
                let store = open_redis(&config.store, Arc::clone(&hub), retention)
                    .await
                    .map_err(StartError::Store)?;
                shared_sends = Some(SendLimiter::shared(&store, config.send_rate, config.send_burst));
                Arc::new(store)
            }
        };
        let (tls, renew) = match (&certificates, acme) {
            (Some(files), _) => {
                let files = Arc::clone(files) as Arc<dyn ResolvesServerCert>;
                (Some(Tls { serving: certificates::server_config(files), challenge: None }), None)
            }
            (None, Some((acme, renew))) => {
                (Some(Tls { serving: acme.serving(), challenge: Some(acme.challenge()) }), Some(renew))
            }
            (None, None) => (None, None),
        };
        let state = Self::assemble(config, hub, store, shared_sends, tls);
        if let Some(certificates) = certificates {
            certificates.watch(state.stopped.clone());
        }
        if let Some(renew) = renew {
            // Orders and renews the certificate until the server has stopped.
            let stopped = state.stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = renew => {}
                    _ = stopped.cancelled() => {}
                }
            });
        }
        Ok(state)
    }

    /// What `who` may do in `room`, by the access rules (`ssechat access`) and
    /// `--default-access`; see [`crate::policy`] for the precedence. Reads the node's
    /// snapshot: no store call.
    pub async fn access(&self, who: &Identity, room: &RoomName) -> Result<Access, AppError> {
        let dir = self.policy.directory().await?;
        Ok(evaluate(&dir.rules, who, room, self.policy.default))
    }

    /// Refuses a request that may not do `need` in `room` (`401` for a guest the rules keep
    /// out, `403` for a signed-in user or a ban, naming the room and why); else its access.
    pub async fn admit(
        &self,
        who: &Identity,
        client: IpAddr,
        room: &RoomName,
        need: Need,
    ) -> Result<Access, AppError> {
        let dir = self.policy.directory().await?;
        Ok(check(&dir, who, client, room, self.policy.default, need)?)
    }

    /// The rooms of `rooms` that `who` (from `client`) may read: the room list hides the
    /// others.
    pub async fn readable(
        &self,
        who: &Identity,
        client: IpAddr,
        mut rooms: Vec<RoomInfo>,
    ) -> Result<Vec<RoomInfo>, AppError> {
        let dir = self.policy.directory().await?;
        rooms.retain(|r| check(&dir, who, client, &r.name, self.policy.default, Need::Read).is_ok());
        Ok(rooms)
    }

    /// Slow mode: takes the sender's turn in `room` (moderators need none), or refuses with
    /// `429` and how long until the next. One atomic step in the store, shared by all nodes.
    pub async fn take_turn(
        &self,
        who: &Identity,
        client: IpAddr,
        room: &RoomName,
        access: Access,
    ) -> Result<(), AppError> {
        let Some(every) = self.policy.directory().await?.settings(room).slow else { return Ok(()) };
        if access.moderate {
            return Ok(());
        }
        let sender = match who.user() {
            Some(name) => format!("user:{name}"),
            None => format!("client:{client}"),
        };
        let Some(wait) = self.store.slow_turn(room, &sender, every).await? else { return Ok(()) };
        let retry_after = wait.as_millis().div_ceil(1000).max(1) as u64;
        Err(AppError::RateLimited {
            message: format!(
                "room {:?} is in slow mode: one message per {} per sender; try again in {retry_after} s",
                room.as_str(),
                humantime::format_duration(every)
            ),
            retry_after,
        })
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
            None if self.tls.is_some() => self.proxies.site(peer.ip(), headers).over_tls(),
            None => self.proxies.site(peer.ip(), headers),
        }
    }

    /// Refuses (`421`) a request for a host this server does not answer for: judged by the
    /// `Host` header, or from a trusted proxy by the host it forwards. Every request passes
    /// here: the router's middleware and, for streams served on their socket, `feed_request`.
    pub fn host_allowed(
        &self,
        peer: std::net::SocketAddr,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), AppError> {
        self.hosts.check(self.proxies.site(peer.ip(), headers).host())
    }

    /// Wires a store that was opened elsewhere (it must publish to `hub`).
    pub fn with_store(config: Config, hub: Arc<Hub>, store: Arc<dyn Store>) -> Self {
        Self::assemble(config, hub, store, None, None)
    }

    /// Starts what runs beside the requests (heartbeat, presence, the policy watcher);
    /// sends are limited on this node unless `shared_sends` share a store's limiter; HTTPS
    /// is served with the certificates `resolver` gives, if there is one.
    fn assemble(
        config: Config,
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        shared_sends: Option<SendLimiter>,
        tls: Option<Tls>,
    ) -> Self {
        hub.start_heartbeat(config.heartbeat);
        let policy = Policy::new(&store, &hub, config.default_access);
        let presence = Presence::start(
            &store,
            &hub,
            PresenceRules {
                grace: config.presence_grace,
                names: config.presence_names,
                names_per_client: config.names_per_client,
            },
        );
        let public_host = config.public_url.as_ref().map(|url| url.site().host());
        let hosts = AllowedHosts::new(&config.listen, &config.allowed_host, public_host);
        let sends = shared_sends.unwrap_or_else(|| SendLimiter::local(config.send_rate, config.send_burst));
        let state = Self(Arc::new(Shared {
            store,
            newest: NewestIds::default(),
            hub,
            presence,
            typing: Arc::new(TypingLimiter::new(config.typing_rate, config.typing_burst)),
            streams: Caps::new("stream", config.stream_cap(), config.max_streams_per_client),
            connections: Caps::new("connection", config.connection_cap(), config.max_connections_per_client),
            sends: Arc::new(sends),
            sign_ins: Arc::new(SignInLimiter::default()),
            proxies: Arc::new(config.trusted_proxies()),
            metrics: Arc::new(Metrics::default()),
            hosts: Arc::new(hosts),
            config: Arc::new(config),
            policy,
            shutdown: CancellationToken::new(),
            stopped: CancellationToken::new(),
            acme_challenge: tls.as_ref().and_then(|tls| tls.challenge.clone()),
            tls: tls.map(|tls| tls.serving),
        }));
        // The policy watcher stops when the server has stopped.
        state.policy.start(state.stopped.clone());
        crate::room_counts::start(&state.store, &state.hub, &state.policy, state.stopped.clone());
        state
    }
}
