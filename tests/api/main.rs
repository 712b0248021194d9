//! Integration tests: one binary, the real server on 127.0.0.1:0, real HTTP.

mod helpers;
mod process;
mod raw;

mod abuse;
mod accounts;
mod acme;
mod ambiguity;
mod browser;
mod capacity;
mod cluster;
mod cluster_store;
mod connections;
mod cross_site;
mod deploy;
mod durable;
mod fast_path;
mod flags;
mod floods;
mod ids;
mod input;
mod lifecycle;
mod names;
mod nginx;
mod page;
mod policy;
mod presence;
mod presence_nodes;
mod presence_order;
mod proxy;
mod recipe;
mod redis_cluster;
mod resume;
mod rooms;
mod shared_limits;
mod streams;
mod subscriptions;
mod takeback;
mod tls;

/// reqwest's rustls takes the process's crypto provider (ring, as the server uses) when it
/// builds any client, TLS or not: installed before any test runs.
#[ctor::ctor(unsafe)]
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
