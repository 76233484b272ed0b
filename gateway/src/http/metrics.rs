//! Prometheus text metrics, served on `metrics_listen` (not on the public listener): request
//! counts by route, method and status, latency histograms by route and method, active actors,
//! revocations, store commits and signer replacements. Every label comes from a fixed set
//! (routes of the router, standard methods, status codes), so no client can grow them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::AppState;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// Request metrics, shared by the middleware and the exporter: atomic counters and histograms
/// per label set (one map lookup under a read lock per request, no global mutex).
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        }
    }
}

impl HttpMetrics {
    pub(super) fn record(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        let labels = RouteLabels { method, route };
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: labels.route,
                status,
            })
            .inc();
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

/// The route label of a request (the router's front layer measures every request). Labels are
/// bounded by construction: the route is the
/// matched route pattern (never the raw path, so omnis do not explode the label set) or
/// `unmatched`, the method one of nine standard names or `other`, the status a `u16`.
pub fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string())
}

/// What the runtime, the store, the signer and the process report at scrape time.
#[derive(Debug)]
struct Snapshot {
    state: AppState,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runtime = &self.state.runtime;
        let writer = runtime.store().writer_counts();
        let active = i64::try_from(runtime.active_actors()).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "agentkeys_active_actors",
            "Actors active in memory",
            active,
        )?;
        let counters = [
            (
                "agentkeys_revocations",
                "Revocations committed by this process",
                runtime.revocations(),
            ),
            (
                "agentkeys_store_commits",
                "Group commits of the store",
                writer.commits,
            ),
            (
                "agentkeys_store_writes",
                "Writes answered by the store writer",
                writer.writes,
            ),
            (
                "agentkeys_store_checkpoints",
                "Checkpoints of the store's commit log (durable redb commits)",
                writer.checkpoints,
            ),
            (
                "agentkeys_store_log_bytes",
                "Bytes appended to the store's commit log",
                writer.log_bytes,
            ),
            (
                "agentkeys_signer_replaced",
                "Signer instances replaced after a panic",
                self.state.signer.health().replaced,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        super::process::encode(&mut encoder)
    }
}

/// One gauge read at scrape time.
pub(super) fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Every metric of this process, in one registry.
fn registry(state: AppState, metrics: &Arc<HttpMetrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "agentkeys_http_requests",
        "HTTP requests by route, method and status",
        metrics.requests.clone(),
    );
    registry.register(
        "agentkeys_http_request_duration_seconds",
        "HTTP request latency by route and method",
        metrics.latency.clone(),
    );
    registry.register(
        "agentkeys_build",
        "The running build",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(Snapshot { state }));
    registry
}

/// The metrics listener's router: `GET /metrics`.
pub fn router(state: AppState, metrics: Arc<HttpMetrics>) -> Router {
    let registry = Arc::new(registry(state, &metrics));
    Router::new().route(
        "/metrics",
        get(move || async move {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &registry) {
                Ok(()) => Ok((
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )),
                Err(_) => Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
            }
        }),
    )
}
