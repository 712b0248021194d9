//! ssechat: a real-time chat server over plain HTTP and Server-Sent Events.
//!
//! Clients post messages to `/send` and read every room through one `/events` stream
//! (SSE, NDJSON or plain text). The page is server-rendered and works without JavaScript;
//! curl is a first-class client.
//!
//! # Layout
//! - [`acme`]: automatic certificates (`--acme`): the TLS acceptor, the renewal task, and
//!   an HTTPS accept loop (HTTP/1.1 and HTTP/2).
//! - [`cli`]: `ssechat user|token|access|ban|unban|room ...`, administration against the
//!   store, and `ssechat backup PATH`, a consistent copy of the SQLite file.
//! - [`config`]: command-line flags, each with an environment variable.
//! - [`server`]: `run(listener, state, shutdown)`, the accept loop, and the shutdown signal.
//! - [`state`]: [`state::AppState`], what every handler shares, built from the config.
//! - [`app`]: the router.
//! - [`accounts`]: users, tokens and sessions: passwords (argon2id), secrets, their rules.
//! - [`auth`]: who is asking (a guest or a signed-in user) and what they may do in a room.
//! - [`sign_in`]: who signed in (cookie, bearer token, Basic), one function for both paths.
//! - [`rules`]: access rules, bans, room settings, and `evaluate`, the pure function that
//!   decides what someone may do in a room.
//! - [`policy`]: each node's snapshot of the rules and the watcher that keeps it current and
//!   ends streams that lost access.
//! - [`body_deadline`]: one deadline for a whole request body.
//! - [`domain`]: `RoomName`, `Author`, `MessageText`, `Message`: validated once, at the edge;
//!   a room's log of `Entry`s (messages, deletes, edits) and its current state.
//! - [`hub`]: rooms and fan-out; each frame encoded once and shared.
//! - [`limits`]: client identity, send rate limits, caps on open streams.
//! - [`metrics`]: counters and the publish-to-flush histogram behind `/metrics`.
//! - [`presence`]: who has a room open, with a grace period, merged across nodes.
//! - [`room_counts`]: the room list's message counts, sent live to every page stream.
//! - [`feed`]: one reader's stream: subscribe, replay, live, catch up when lagging.
//! - [`connection`]: one HTTP/1.1 connection: each request head read, streams to the fast
//!   path, everything else to hyper one request at a time.
//! - [`fast_path`]: streams served straight on the socket.
//! - [`tls`]: HTTPS: certificate files and their reload, connections over TLS (HTTP/2 and
//!   HTTP/1.1 through hyper-util's auto builder), the per-stream stall cut-off, and the
//!   `--redirect-http` listener.
//! - [`wire`]: the SSE, NDJSON and plain-text encodings.
//! - [`store`]: the history trait and its backends (memory, SQLite, Redis; Redis's presence
//!   sharing and node liveness in `store/redis/presence.rs`), and the settling of a send whose
//!   outcome is unknown.
//! - [`routes`]: one module per endpoint.
//! - [`takeback`]: who may delete or edit a message (the log entries are in `domain`).
//! - [`error`]: the error type that decides status codes.

pub mod accounts;
pub mod acme;
pub mod app;
pub mod auth;
pub mod body_deadline;
pub mod certificates;
pub mod cli;
pub mod config;
pub mod connection;
pub mod domain;
pub mod error;
pub mod fast_path;
pub mod feed;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod presence;
pub mod room_counts;
pub mod routes;
pub mod rules;
pub mod server;
pub mod sign_in;
pub mod state;
pub mod store;
pub mod takeback;
pub mod tls;
pub mod wire;

pub use app::router;
pub use config::Config;
pub use server::run;
pub use state::AppState;
