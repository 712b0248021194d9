//! HTTPS: connections over TLS are served in [`connection`] (HTTP/2 or HTTP/1.1 as ALPN
//! chose, each stream with its own stall cut-off, each connection with an idle deadline,
//! `idle`); `--redirect-http` is [`redirect`]. The certificate and the rustls configuration
//! are [`crate::certificates`].

pub mod connection;
mod idle;
pub mod redirect;

/// `Strict-Transport-Security` on every answer over TLS: a year.
pub const HSTS: &str = "max-age=31536000";
