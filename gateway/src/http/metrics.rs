//! Prometheus text metrics, served on `metrics_listen` (not on the public listener): request
//! counts by route, method and status, latency histograms by route and method, active actors,
//! revocations, store commits and signer replacements. Every label comes from a fixed set
//! (routes of the router, standard methods, status codes), so no client can grow them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;

use super::AppState;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request metrics, shared by the middleware and the exporter.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests
                .entry((method.to_string(), route.to_string(), status))
                .or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let h = latency
                .entry((method.to_string(), route.to_string()))
                .or_default();
            h.count += 1;
            h.sum += seconds;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.buckets[i] += 1;
                }
            }
        }
    }
}

/// The method label: one of the standard methods, or `other` (a client may send any token as
/// a method; it must not become a label).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, label)| label)
}

/// Middleware: measures every request. Labels are bounded by construction: the route is the
/// matched route pattern (never the raw path, so omnis do not explode the label set) or
/// `unmatched`, the method one of nine standard names or `other`, the status a `u16`.
pub async fn track(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method()).to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

fn render(state: &AppState, metrics: &HttpMetrics) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP agentkeys_http_requests_total HTTP requests by route, method and status.\n",
    );
    out.push_str("# TYPE agentkeys_http_requests_total counter\n");
    if let Ok(requests) = metrics.requests.lock() {
        for ((method, route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "agentkeys_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP agentkeys_http_request_duration_seconds HTTP request latency by route and method.\n");
    out.push_str("# TYPE agentkeys_http_request_duration_seconds histogram\n");
    if let Ok(latency) = metrics.latency.lock() {
        for ((method, route), h) in latency.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "agentkeys_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "agentkeys_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "agentkeys_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "agentkeys_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
    let runtime = &state.runtime;
    let gauges: [(&str, &str, &str, u64); 5] = [
        (
            "agentkeys_active_actors",
            "gauge",
            "Actors active in memory.",
            runtime.active_actors() as u64,
        ),
        (
            "agentkeys_revocations_total",
            "counter",
            "Revocations committed by this process.",
            runtime.revocations(),
        ),
        (
            "agentkeys_store_commits_total",
            "counter",
            "Group commits of the store.",
            runtime.store().writer_counts().commits,
        ),
        (
            "agentkeys_store_writes_total",
            "counter",
            "Writes answered by the store writer.",
            runtime.store().writer_counts().writes,
        ),
        (
            "agentkeys_signer_replaced_total",
            "counter",
            "Signer instances replaced after a panic.",
            state.signer.health().replaced,
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}

/// The metrics listener's router: `GET /metrics`.
pub fn router(state: AppState, metrics: Arc<HttpMetrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = render(&state, &metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    )
}
