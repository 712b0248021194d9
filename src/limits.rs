//! Limits that keep one client (or a flood) from taking the server: who a client is, a token
//! bucket per client for sends, and caps on open streams overall and per client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::error::AppError;

/// The client a request comes from: its peer address, or, behind a trusted proxy
/// (`--trust-proxy`), the address that proxy reports. The last `X-Forwarded-For` entry is
/// the one the proxy itself added; `Forwarded: for=` is read the same way.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trust_proxy: bool) -> IpAddr {
    if !trust_proxy {
        return peer.ip();
    }
    let forwarded_for = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .next_back();
    let forwarded = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|part| part.trim().strip_prefix("for=").or_else(|| part.trim().strip_prefix("For=")))
        .filter_map(|value| {
            let value = value.trim_matches('"');
            let host = value.strip_prefix('[').and_then(|v| v.split(']').next()).unwrap_or(value);
            host.parse::<IpAddr>().ok().or_else(|| host.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .next_back();
    forwarded_for.or(forwarded).unwrap_or(peer.ip())
}

/// A token bucket per client: `rate` tokens a second, at most `burst` saved up.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// A std mutex: one map update per request, never held across an `.await`.
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate: rate.max(0.001), burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `client`, or says how long until one is there.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
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
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// Caps on open streams: all together (kept under the open-file limit) and per client.
pub struct StreamLimits {
    max_total: usize,
    max_per_client: usize,
    open: AtomicUsize,
    /// A std mutex: one count per stream open or close, never held across an `.await`.
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl StreamLimits {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_client,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a stream for `client` until the permit is dropped; refuses one over a cap.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<StreamPermit, AppError> {
        let mut per_client = self.per_client.lock().expect("stream limits lock poisoned");
        if self.open.load(Ordering::Relaxed) >= self.max_total {
            return Err(AppError::Unavailable(format!(
                "the server is at its limit of {} open streams; retry shortly",
                self.max_total
            )));
        }
        let mine = per_client.entry(client).or_insert(0);
        if *mine >= self.max_per_client {
            return Err(AppError::TooManyRequests(format!(
                "this client already has {} open streams, the most allowed; close one first",
                self.max_per_client
            )));
        }
        *mine += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(StreamPermit { limits: Arc::clone(self), client })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One admitted stream.
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    client: IpAddr,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut per_client = self.limits.per_client.lock().expect("stream limits lock poisoned");
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
    }
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 5.6.7.8")]);
        assert_eq!(client_ip(peer, &h, false), peer.ip());
        assert_eq!(client_ip(peer, &h, true), "5.6.7.8".parse::<IpAddr>().unwrap());
        let h = headers(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(client_ip(peer, &h, true), "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &headers(&[("x-forwarded-for", "garbage")]), true), peer.ip());
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
        let limits = StreamLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err().unwrap().status(), 429);
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err().unwrap().status(), 503);
        drop(a1);
        assert!(limits.admit(b).is_ok());
        assert!(open_file_limit().is_some());
    }
}
