//! Each node's view of the access rules ([`crate::rules`]) and the watcher that keeps it,
//! and open streams, current (`policy/watch.rs`).

pub mod watch;

pub use crate::rules::{
    Ban, BanTarget, Because, DefaultAccess, Directory, Perm, RoomPattern, RoomSettings, Rule, Subject,
    decide, evaluate,
};
