//! Rate limits (DESIGN §10; docs/security.md, "Denial of service"): a token bucket per client
//! address on the routes without a session, a token bucket per device binding on the others,
//! and magic links per email address (a share per requesting client under a ceiling, over a
//! sliding hour). All on the injected clock, all bounded in memory.
//!
//! The client IP is the TCP peer, unless the peer is one of `trusted_proxies`: then it is the
//! right-most address of `X-Forwarded-For` that is not itself a trusted proxy (addresses a
//! client wrote further left are never believed).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::config::{IpNet, Limits};

/// Clients tracked at most per table (idle ones are forgotten first).
pub const MAX_TRACKED: usize = 100_000;

/// Path prefixes of the routes that take no session.
const UNAUTHENTICATED: [&str; 4] = ["/v1/auth/", "/auth/", "/v1/link/", "/v1/pairing/"];

/// Whether `path` is one of the rate-limited routes that take no session.
pub fn is_unauthenticated(path: &str) -> bool {
    UNAUTHENTICATED
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// The unit a per-client quota counts: an IPv4 address, or the /64 of an IPv6 address (one
/// host usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
        },
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Token buckets by client: `burst` requests at once, `rate` per second sustained, on the
/// injected clock; at most [`MAX_TRACKED`] clients (full buckets carry no information and are
/// forgotten first).
#[derive(Debug)]
pub struct TokenBuckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> TokenBuckets<K> {
    /// Buckets of `burst` tokens refilled at `rate` per second.
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate: rate as f64,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: Bucket, now_ms: u64) -> Bucket {
        let elapsed = now_ms.saturating_sub(bucket.at_ms) as f64 / 1000.0;
        Bucket {
            tokens: (bucket.tokens + elapsed * self.rate).min(self.burst),
            at_ms: now_ms.max(bucket.at_ms),
        }
    }

    /// Takes one token for `client` at `now_ms`; `Err(wait)` when its bucket is empty.
    pub fn take(&self, client: K, now_ms: u64) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            buckets.retain(|_, b| self.refill(*b, now_ms).tokens < self.burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at_ms: now_ms,
        });
        let mut refilled = self.refill(*bucket, now_ms);
        if refilled.tokens < 1.0 {
            let wait = (1.0 - refilled.tokens) / self.rate;
            return Err(Duration::from_secs_f64(wait.max(1.0)));
        }
        refilled.tokens -= 1.0;
        *bucket = refilled;
        Ok(())
    }
}

/// Magic links per address: a share per requesting client under a ceiling per address, both
/// over a sliding hour.
#[derive(Debug)]
pub struct EmailQuota {
    per_client: usize,
    ceiling: usize,
    sent: Mutex<HashMap<String, VecDeque<(u64, IpAddr)>>>,
}

const HOUR_MS: u64 = 3_600_000;

impl EmailQuota {
    /// `per_client` links per hour per (address, client), `ceiling` per address.
    pub fn new(per_client: u64, ceiling: u64) -> Self {
        Self {
            per_client: usize::try_from(per_client).unwrap_or(usize::MAX),
            ceiling: usize::try_from(ceiling).unwrap_or(usize::MAX),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Records one link for `email` asked by `client`; `Err(wait)` when the client's share or
    /// the address's ceiling is spent.
    pub fn take(&self, email: &str, client: IpAddr, now_ms: u64) -> Result<(), Duration> {
        let client = client_key(client);
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.len() >= MAX_TRACKED && !sent.contains_key(email) {
            sent.retain(|_, links| links.back().is_some_and(|(t, _)| now_ms < t + HOUR_MS));
        }
        let links = sent.entry(email.to_string()).or_default();
        while links.front().is_some_and(|(t, _)| now_ms >= t + HOUR_MS) {
            links.pop_front();
        }
        let wait_for = |t: u64| Duration::from_millis(t + HOUR_MS - now_ms);
        let mine: Vec<u64> = links
            .iter()
            .filter(|(_, c)| *c == client)
            .map(|(t, _)| *t)
            .collect();
        if mine.len() >= self.per_client {
            return Err(wait_for(mine[mine.len() - self.per_client]));
        }
        if links.len() >= self.ceiling {
            return Err(wait_for(links[links.len() - self.ceiling].0));
        }
        links.push_back((now_ms, client));
        Ok(())
    }
}

/// The limiter's state.
#[derive(Debug)]
pub struct RateLimits {
    /// Requests of the routes without a session, per client address.
    pub ips: TokenBuckets<IpAddr>,
    /// Authenticated requests per device binding.
    pub bindings: TokenBuckets<u64>,
    /// Magic links.
    pub emails: EmailQuota,
}

impl RateLimits {
    /// The limits of the configuration.
    pub fn new(limits: &Limits) -> Self {
        Self {
            ips: TokenBuckets::new(limits.ip_rate_per_second, limits.ip_burst),
            bindings: TokenBuckets::new(limits.binding_rate_per_second, limits.binding_burst),
            emails: EmailQuota::new(
                limits.email_links_per_hour,
                limits.email_links_per_hour_ceiling,
            ),
        }
    }

    /// Takes one token for the client address `ip` (IPv6 by /64).
    pub fn take_ip(&self, ip: IpAddr, now_ms: u64) -> Result<(), Duration> {
        self.ips.take(client_key(ip), now_ms)
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(&Limits::default())
    }
}

/// The client's address: the peer, or what trusted proxies say it is.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer)
}

/// The peer address of a request (unknown in router tests without a socket).
pub fn peer(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip())
}

/// The client of a request, as the handlers see it (also shown on the email landing page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Resolves [`ClientIp`] for every request and limits the unauthenticated routes (the refusal
/// is the `Err`); run by the router's front layer.
pub fn admit(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let ip = client_ip(peer(request), request.headers(), &state.trusted_proxies);
    request.extensions_mut().insert(ClientIp(ip));
    let path = request.uri().path();
    if is_unauthenticated(path) {
        let now = state.clock.now().as_millis();
        if let Err(wait) = state.rate_limits.take_ip(ip, now) {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many requests from your address; wait and retry",
            )
            .retry_after(wait));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ip_bucket_bursts_then_refills_on_the_clock() {
        let limits = RateLimits::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..60 {
            assert!(limits.take_ip(ip, 0).is_ok());
        }
        let wait = limits.take_ip(ip, 0).expect_err("empty");
        assert_eq!(wait, Duration::from_secs(1));
        assert!(limits.take_ip(ip, 999).is_err());
        assert!(limits.take_ip(ip, 1_000).is_ok(), "one token after 1 s");
        assert!(limits.take_ip("192.0.2.2".parse().expect("ip"), 0).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("ip")
        );
        let limits = RateLimits::default();
        for _ in 0..60 {
            assert!(limits.take_ip(a, 0).is_ok());
        }
        assert!(limits.take_ip(b, 0).is_err(), "same /64, same bucket");
        assert!(limits.take_ip(other, 0).is_ok());
    }

    #[test]
    fn each_client_spends_its_own_share_of_an_address_under_a_ceiling() {
        let quota = EmailQuota::new(5, 20);
        let client = |n: u8| IpAddr::from([198, 51, 100, n]);
        for i in 0..5 {
            assert!(quota.take("a@example.com", client(1), i * 1000).is_ok());
        }
        let wait = quota
            .take("a@example.com", client(1), 10_000)
            .expect_err("sixth by the same client");
        assert_eq!(wait, Duration::from_millis(3_600_000 - 10_000));
        // Another client still has its own share for that address.
        assert!(quota.take("a@example.com", client(2), 10_000).is_ok());
        assert!(quota.take("b@example.com", client(1), 10_000).is_ok());
        // The ceiling: 20 per address per hour, whoever asks.
        for n in 2..5 {
            for _ in 0..5 {
                let _ = quota.take("a@example.com", client(n), 20_000);
            }
        }
        assert!(
            quota.take("a@example.com", client(9), 20_000).is_err(),
            "ceiling"
        );
        assert!(
            quota.take("a@example.com", client(1), 3_600_000).is_ok(),
            "an hour later"
        );
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.1.1.1".parse().expect("value"),
        );
        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let direct: IpAddr = "198.51.100.7".parse().expect("ip");
        // Behind the proxy: the right-most address that is not a proxy.
        assert_eq!(
            client_ip(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        // A client talking directly cannot choose its address.
        assert_eq!(client_ip(direct, &headers, &trusted), direct);
        assert_eq!(client_ip(proxy, &headers, &[]), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
