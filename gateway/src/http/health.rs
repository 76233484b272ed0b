//! Liveness and readiness. Both are cheap: no store scan, no crypto.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use serde::Serialize;

use super::AppState;

/// Liveness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    status: &'static str,
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "the process answers", body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// One readiness check.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Readiness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    status: &'static str,
    checks: Vec<Check>,
    /// Each OpenID provider's discovery and keys as last fetched: information only (one
    /// provider being down never takes the gateway out of rotation).
    providers: Vec<crate::openid::Reachability>,
}

/// Readiness: one entry per check (store readable, writer alive, arbiters alive, signer pool,
/// mailer: for SES, the sender identity as last checked, at most a minute ago).
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "every check passes", body = Readiness),
    (status = 503, description = "a check fails (see its entry)", body = Readiness)))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let runtime = &state.runtime;
    let store = runtime.store();
    let checks = vec![
        match store.check() {
            Ok(()) => check("store", true, "readable".into()),
            Err(e) => check("store", false, e.to_string()),
        },
        check("store_writer", store.writer_running(), {
            let counts = store.writer_counts();
            format!(
                "{} commits of {} writes, {} checkpoints, {} KiB logged",
                counts.commits,
                counts.writes,
                counts.checkpoints,
                counts.log_bytes >> 10
            )
        }),
        check(
            "arbiters",
            runtime.arbiters_alive(),
            format!(
                "{} arbiters, {} active actors",
                runtime.config().arbiters,
                runtime.active_actors()
            ),
        ),
        {
            let health = state.signer.health();
            check(
                "signer",
                health.threads > 0,
                format!(
                    "{} threads, {} replaced after a panic",
                    health.threads, health.replaced
                ),
            )
        },
        match state.mailer.readiness() {
            Ok(detail) => check("mailer", true, detail),
            Err(problem) => check("mailer", false, problem),
        },
    ];
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks,
        providers: state.providers.iter().map(|p| p.reachability()).collect(),
    };
    (status, Json(body))
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check { name, ok, detail }
}
