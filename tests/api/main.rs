//! Integration tests: one binary, the real server on 127.0.0.1:0, real HTTP.

mod helpers;
mod process;
mod raw;

mod abuse;
mod browser;
mod capacity;
mod cluster;
mod durable;
mod fast_path;
mod input;
mod lifecycle;
mod names;
mod nginx;
mod page;
mod presence;
mod proxy;
mod resume;
mod shared_limits;
mod streams;
