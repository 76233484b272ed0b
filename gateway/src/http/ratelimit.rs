//! Rate limits of the unauthenticated routes (DESIGN §10): a token bucket per client IP and a
//! sliding hour per email address, both on the injected clock, both bounded in memory.
//!
//! The client IP is the TCP peer, unless the peer is one of `trusted_proxies`: then it is the
//! right-most address of `X-Forwarded-For` that is not itself a trusted proxy (addresses a
//! client wrote further left are never believed).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::config::IpNet;

/// Requests a client IP may burst.
pub const IP_BURST: f64 = 60.0;
/// Sustained requests per second per client IP.
pub const IP_PER_SECOND: f64 = 1.0;
/// Magic links per email address per hour.
pub const EMAIL_PER_HOUR: usize = 5;
/// Clients tracked at most (idle ones are forgotten first).
pub const MAX_TRACKED: usize = 100_000;

/// Path prefixes of the routes that take no session.
const UNAUTHENTICATED: [&str; 4] = ["/v1/auth/", "/auth/", "/v1/link/", "/v1/pairing/"];

/// Whether `path` is one of the rate-limited routes that take no session.
pub fn is_unauthenticated(path: &str) -> bool {
    UNAUTHENTICATED
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// The limiter's state.
#[derive(Debug, Default)]
pub struct RateLimits {
    ips: Mutex<HashMap<IpAddr, Bucket>>,
    emails: Mutex<HashMap<String, VecDeque<u64>>>,
}

impl RateLimits {
    /// Takes one token for `ip` at `now_ms`; `Err(wait)` when the bucket is empty.
    pub fn take_ip(&self, ip: IpAddr, now_ms: u64) -> Result<(), Duration> {
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        if ips.len() >= MAX_TRACKED && !ips.contains_key(&ip) {
            // Full buckets carry no information: forget them first.
            ips.retain(|_, b| refill(*b, now_ms).tokens < IP_BURST);
        }
        let bucket = ips.entry(ip).or_insert(Bucket {
            tokens: IP_BURST,
            at_ms: now_ms,
        });
        let mut refilled = refill(*bucket, now_ms);
        if refilled.tokens < 1.0 {
            let wait = (1.0 - refilled.tokens) / IP_PER_SECOND;
            return Err(Duration::from_secs_f64(wait.max(1.0)));
        }
        refilled.tokens -= 1.0;
        *bucket = refilled;
        Ok(())
    }

    /// Records one magic link for `email`; `Err(wait)` after [`EMAIL_PER_HOUR`] in an hour.
    pub fn take_email(&self, email: &str, now_ms: u64) -> Result<(), Duration> {
        const HOUR_MS: u64 = 3_600_000;
        let mut emails = self.emails.lock().unwrap_or_else(|p| p.into_inner());
        if emails.len() >= MAX_TRACKED && !emails.contains_key(email) {
            emails.retain(|_, sent| sent.back().is_some_and(|t| now_ms < t + HOUR_MS));
        }
        let sent = emails.entry(email.to_string()).or_default();
        while sent.front().is_some_and(|t| now_ms >= t + HOUR_MS) {
            sent.pop_front();
        }
        if sent.len() >= EMAIL_PER_HOUR {
            let oldest = sent.front().copied().unwrap_or(now_ms);
            return Err(Duration::from_millis(oldest + HOUR_MS - now_ms));
        }
        sent.push_back(now_ms);
        Ok(())
    }
}

fn refill(bucket: Bucket, now_ms: u64) -> Bucket {
    let elapsed = now_ms.saturating_sub(bucket.at_ms) as f64 / 1000.0;
    Bucket {
        tokens: (bucket.tokens + elapsed * IP_PER_SECOND).min(IP_BURST),
        at_ms: now_ms.max(bucket.at_ms),
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

/// Middleware: resolves [`ClientIp`] for every request and limits the unauthenticated routes.
pub async fn limit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let ip = client_ip(peer(&request), request.headers(), &state.trusted_proxies);
    request.extensions_mut().insert(ClientIp(ip));
    let path = request.uri().path();
    if is_unauthenticated(path) {
        let now = state.clock.now().as_millis();
        if let Err(wait) = state.rate_limits.take_ip(ip, now) {
            return ApiError::new(
                ErrorCode::RateLimited,
                "too many requests from your address; wait and retry",
            )
            .retry_after(wait)
            .into_response();
        }
    }
    next.run(request).await
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
    fn five_links_per_address_per_hour() {
        let limits = RateLimits::default();
        for i in 0..5 {
            assert!(limits.take_email("a@example.com", i * 1000).is_ok());
        }
        let wait = limits
            .take_email("a@example.com", 10_000)
            .expect_err("sixth");
        assert_eq!(wait, Duration::from_millis(3_600_000 - 10_000));
        assert!(limits.take_email("b@example.com", 10_000).is_ok());
        assert!(limits.take_email("a@example.com", 3_600_000).is_ok());
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
