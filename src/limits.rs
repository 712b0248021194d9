//! Limits that keep one client (or a flood) from taking the server: who a client is (behind
//! trusted proxies too), a token bucket per client for sends (in Redis when nodes share it),
//! typing signals per client and per author, caps on open streams overall and per client;
//! the site a browser's post must come from; and the hosts the server answers for.

mod host;
mod proxy;
mod sign_in;
mod site;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Author, RoomName};
use crate::error::AppError;
use crate::store::{RedisStore, SharedRateLimiter};

pub use host::{AllowedHosts, parse_allowed_host};
pub use proxy::{TrustedProxies, parse_trusted_proxy};
pub use sign_in::{SIGN_IN_BURST, SIGN_IN_EVERY, SignInLimiter};
pub use site::{Port, Site};

/// The key a client's limits are kept under: its address, with IPv6 cut to its /64 (one
/// host or home network usually holds a whole /64, so one address each would be a bucket
/// per address an attacker cares to use). IPv4-mapped IPv6 counts as the IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// The `/send` limit: a token bucket per client, `--send-rate` a second, `--send-burst` at
/// once. One node keeps its buckets itself; nodes sharing Redis keep them there, so the
/// limit holds for a client however its posts are spread over the nodes.
pub enum SendLimiter {
    Local(RateLimiter),
    Shared(SharedRateLimiter),
}

impl SendLimiter {
    pub fn local(rate: f64, burst: u32) -> Self {
        Self::Local(RateLimiter::new(rate, burst))
    }

    /// The limit kept in Redis, on `store`'s connection.
    pub fn shared(store: &RedisStore, rate: f64, burst: u32) -> Self {
        let (rate, burst) = sane_rate(rate, burst);
        Self::Shared(store.rate_limiter(Duration::from_secs_f64(1.0 / rate), burst))
    }

    /// Takes a token for `client`. Refused: `RateLimited` with the wait. Redis unreachable:
    /// the store's `503` (the send could not be stored either).
    pub async fn check(&self, client: IpAddr) -> Result<(), AppError> {
        let wait = match self {
            Self::Local(local) => local.check(client).err(),
            Self::Shared(shared) => shared.take(client).await?,
        };
        match wait {
            None => Ok(()),
            Some(wait) => Err(AppError::RateLimited {
                message: "too many messages from this client; slow down".to_owned(),
                retry_after: retry_after(wait),
            }),
        }
    }
}

/// Whole seconds to wait, at least one: what `Retry-After` says.
fn retry_after(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// A rate above zero and a burst of at least one.
fn sane_rate(rate: f64, burst: u32) -> (f64, u32) {
    (rate.max(0.001), burst.max(1))
}

/// A token bucket per client (or per other key): `rate` tokens a second, at most `burst`
/// saved up.
pub struct RateLimiter<K = IpAddr> {
    rate: f64,
    burst: f64,
    /// A std mutex: one map update per request, never held across an `.await`.
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: std::hash::Hash + Eq> RateLimiter<K> {
    pub fn new(rate: f64, burst: u32) -> Self {
        let (rate, burst) = sane_rate(rate, burst);
        Self { rate, burst: f64::from(burst), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `client`, or says how long until one is there.
    pub fn check(&self, client: K) -> Result<(), Duration> {
        self.take(client, 1.0)
    }

    /// Whether `client` has a token, without taking it; else how long until it has one.
    pub fn peek(&self, client: K) -> Result<(), Duration> {
        self.take(client, 0.0)
    }

    /// Takes `cost` tokens if one is there (a cost of 0 only looks).
    fn take(&self, client: K, cost: f64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock poisoned");
        if buckets.len() > 100_000 {
            // Full buckets carry no information: forget them so the map stays bounded.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// The least time between two typing signals from one author in one room.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(1);

/// Typing signals: a token bucket per client (`--typing-rate`, `--typing-burst`), whatever
/// the author and room it claims, and one per author and room per second.
pub struct TypingLimiter {
    clients: RateLimiter,
    /// When each (room, author) last signalled. A std mutex: held for one map update, never
    /// across an `.await`.
    last: Mutex<HashMap<(RoomName, String), Instant>>,
}

impl TypingLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { clients: RateLimiter::new(rate, burst), last: Mutex::default() }
    }

    /// Takes a token for `client`: checked before the body is read, so a flood costs no reads.
    pub fn admit(&self, client: IpAddr) -> Result<(), AppError> {
        self.clients.check(client).map_err(|wait| AppError::RateLimited {
            message: "too many typing signals from this client; slow down".to_owned(),
            retry_after: retry_after(wait),
        })
    }

    /// Notes a signal, or refuses one that comes too soon after the last.
    pub fn check(&self, room: &RoomName, author: &Author) -> Result<(), AppError> {
        let mut last = self.last.lock().expect("typing limiter lock poisoned");
        let now = Instant::now();
        // Keep the map small: forget signals older than the interval.
        last.retain(|_, at| now.duration_since(*at) < TYPING_INTERVAL);
        let key = (room.clone(), author.as_str().to_owned());
        if let Some(at) = last.get(&key) {
            return Err(AppError::RateLimited {
                message: "typing signals are limited to one per second".to_owned(),
                retry_after: retry_after(TYPING_INTERVAL.saturating_sub(now.duration_since(*at))),
            });
        }
        last.insert(key, now);
        Ok(())
    }
}

/// Caps on open things (streams, connections): all together (kept under the open-file
/// limit) and per client.
pub struct Caps {
    /// What is counted, in the singular (`stream`), for the refusal's message.
    what: &'static str,
    max_total: usize,
    max_per_client: usize,
    open: AtomicUsize,
    /// A std mutex: one count per open or close, never held across an `.await`.
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Caps {
    pub fn new(what: &'static str, max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            what,
            max_total,
            max_per_client,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one for `client` until the permit is dropped; refuses one over a cap. Without
    /// a client (a trusted proxy, which speaks for many), only the total counts.
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Permit, AppError> {
        let mut per_client = self.per_client.lock().expect("caps lock poisoned");
        if self.open.load(Ordering::Relaxed) >= self.max_total {
            let open = count(self.max_total, &format!("open {}", self.what));
            return Err(AppError::Unavailable(format!(
                "the server is at its limit of {open}; retry shortly"
            )));
        }
        if let Some(client) = client {
            let mine = per_client.entry(client).or_insert(0);
            if *mine >= self.max_per_client {
                let open = count(self.max_per_client, &format!("open {}", self.what));
                return Err(AppError::TooManyRequests(format!(
                    "this client already has {open}, the most allowed; close one first"
                )));
            }
            *mine += 1;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Permit { caps: Arc::clone(self), client })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One admitted stream or connection, counted until dropped.
pub struct Permit {
    caps: Arc<Caps>,
    client: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(client) = self.client {
            let mut per_client = self.caps.per_client.lock().expect("caps lock poisoned");
            if let Some(count) = per_client.get_mut(&client) {
                *count -= 1;
                if *count == 0 {
                    per_client.remove(&client);
                }
            }
        }
        self.caps.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `n` things, in the singular for one: `1 open stream`, `2 open streams`.
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// The process's soft limit on open files, if it can be read.
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff::1"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), "2001:db8:1:2::");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn typing_is_limited_per_author_and_room() {
        let typing = TypingLimiter::new(1000.0, 1000);
        let (general, other) = (RoomName::general(), RoomName::parse("other").unwrap());
        let (ana, bob) = (Author::parse("ana").unwrap(), Author::parse("bob").unwrap());
        assert!(typing.check(&general, &ana).is_ok());
        let refused = typing.check(&general, &ana).unwrap_err();
        assert!(matches!(refused, AppError::RateLimited { retry_after: 1, .. }), "{refused:?}");
        assert!(refused.to_string().contains("one per second"), "{refused}");
        assert!(typing.check(&general, &bob).is_ok() && typing.check(&other, &ana).is_ok());
    }

    #[test]
    fn typing_is_limited_per_client_whatever_the_author() {
        let typing = TypingLimiter::new(0.5, 2);
        let (me, other): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert!(typing.admit(me).is_ok() && typing.admit(me).is_ok());
        let refused = typing.admit(me).unwrap_err();
        assert!(matches!(refused, AppError::RateLimited { retry_after: 2, .. }), "{refused:?}");
        assert!(refused.to_string().contains("typing signals from this client"), "{refused}");
        assert!(typing.admit(other).is_ok());
    }

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(1.0, 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(ip).is_ok());
        }
        let wait = limiter.check(ip).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("127.0.0.2".parse().unwrap()).is_ok(), "another client has its own bucket");
    }

    #[test]
    fn stream_caps_hold_and_release() {
        let limits = Caps::new("stream", 3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = limits.admit(Some(a)).unwrap();
        let _a2 = limits.admit(Some(a)).unwrap();
        assert_eq!(limits.admit(Some(a)).err().unwrap().status(), 429);
        let _b1 = limits.admit(Some(b)).unwrap();
        assert_eq!(limits.admit(Some(b)).err().unwrap().status(), 503);
        drop(a1);
        assert!(limits.admit(Some(b)).is_ok());
        assert!(open_file_limit().is_some());
    }

    #[test]
    fn refusals_count_in_the_singular_for_one() {
        let limits = Caps::new("stream", 2, 1);
        let _a = limits.admit(Some("127.0.0.1".parse().unwrap())).unwrap();
        let one = limits.admit(Some("127.0.0.1".parse().unwrap())).err().unwrap().to_string();
        assert!(one.contains("already has 1 open stream, the most allowed"), "{one}");
        let _b = limits.admit(Some("127.0.0.2".parse().unwrap())).unwrap();
        let all = limits.admit(Some("127.0.0.3".parse().unwrap())).err().unwrap().to_string();
        assert!(all.contains("at its limit of 2 open streams;"), "{all}");
        assert_eq!(count(1, "room"), "1 room");
        assert_eq!(count(0, "room"), "0 rooms");
    }
}
