//! The HTTP foundation over real loopback HTTP: the error envelope on every failure (axum's
//! own rejections included), request ids, limits, DPoP on token-less routes, and the SIWE
//! challenge of `POST /v1/auth/wallet/start`.

use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use agentkeys_actors::crypto::siwe::{SiweExpectations, SiweMessage};
use agentkeys_gateway::config::{Config, Layer};
use agentkeys_gateway::serve;
use common::Client;
use serde_json::{Value, json};

const PUBLIC_URL: &str = "http://127.0.0.1:8090";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

async fn start(dir: &std::path::Path) -> (serve::Server, String) {
    let flags = Layer::default()
        .with("listen", "127.0.0.1:0")
        .with("metrics_listen", "127.0.0.1:0")
        .with("data_dir", dir.display().to_string());
    let config = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("config");
    let server = serve::start(config).await.expect("server starts");
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

async fn envelope(response: reqwest::Response) -> (u16, Value, Option<String>) {
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body: Value = response.json().await.expect("a JSON envelope");
    (status, body, header)
}

#[actix::test]
async fn failures_answer_with_the_envelope_and_the_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, base) = start(dir.path()).await;
    let http = reqwest::Client::new();
    let start_url = format!("{base}/v1/auth/wallet/start");
    let client = Client::new();
    let proof = || client.proof_for("POST", &format!("{PUBLIC_URL}/v1/auth/wallet/start"), now());

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "unknown route",
            http.get(format!("{base}/nope")),
            404,
            "not_found",
        ),
        (
            "wrong method",
            http.get(&start_url),
            405,
            "method_not_allowed",
        ),
        (
            "no DPoP",
            http.post(&start_url)
                .json(&json!({"address": "0x".to_string() + &"11".repeat(20), "chain_id": 1})),
            401,
            "invalid_dpop_proof",
        ),
        (
            "DPoP for another URL",
            http.post(&start_url)
                .header(
                    "dpop",
                    client.proof_for("POST", &format!("{PUBLIC_URL}/v1/other"), now()),
                )
                .json(&json!({})),
            401,
            "invalid_dpop_proof",
        ),
        (
            "not JSON",
            http.post(&start_url)
                .header("dpop", proof())
                .body("address=1"),
            415,
            "unsupported_media_type",
        ),
        (
            "broken JSON",
            http.post(&start_url)
                .header("dpop", proof())
                .header("content-type", "application/json")
                .body("{"),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            http.post(&start_url).header("dpop", proof()).json(
                &json!({"address": "0x".to_string() + &"11".repeat(20), "chain_id": 1, "extra": 1}),
            ),
            400,
            "invalid_request",
        ),
        (
            "bad address",
            http.post(&start_url)
                .header("dpop", proof())
                .json(&json!({"address": "0x12", "chain_id": 1})),
            400,
            "invalid_request",
        ),
        (
            "chain not allowed",
            http.post(&start_url)
                .header("dpop", proof())
                .json(&json!({"address": "0x".to_string() + &"11".repeat(20), "chain_id": 5})),
            400,
            "invalid_siwe",
        ),
        (
            "over 1 MiB",
            http.post(&start_url)
                .header("dpop", proof())
                .header("content-type", "application/json")
                .body(format!("{{\"address\": \"{}\"}}", "a".repeat(1 << 20))),
            413,
            "payload_too_large",
        ),
    ];
    for (name, request, status, code) in cases {
        let (got, body, header) = envelope(request.send().await.expect("sent")).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert_eq!(
            body["request_id"].as_str(),
            header.as_deref(),
            "{name}: envelope and header agree"
        );
    }
    // A DPoP refusal tells the client how to authenticate.
    let response = http
        .post(&start_url)
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    let www = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(www.starts_with("DPoP "), "{www}");
    server
        .stop(std::time::Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn wallet_start_issues_a_siwe_challenge_bound_to_this_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, base) = start(dir.path()).await;
    let http = reqwest::Client::new();
    let client = Client::new();
    let url = format!("{base}/v1/auth/wallet/start");
    let proof = client.proof_for("POST", &format!("{PUBLIC_URL}/v1/auth/wallet/start"), now());
    let address = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    let response = http
        .post(&url)
        .header("dpop", &proof)
        .json(&json!({"address": address, "chain_id": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let message = body["message"].as_str().expect("message");
    let parsed = SiweMessage::parse(message).expect("our message is valid EIP-4361");
    assert_eq!(
        parsed.to_checksum_address(),
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    );
    assert_eq!(parsed.nonce, body["nonce"].as_str().expect("nonce"));
    assert_eq!(parsed.request_id.as_deref(), body["request_id"].as_str());
    assert_eq!(
        parsed.expiration_time.as_deref(),
        body["expires_at"].as_str()
    );
    let expect = SiweExpectations {
        domain: "127.0.0.1:8090",
        uri: PUBLIC_URL,
        chains: &[1],
        now_ms: now() * 1000,
        skew_ms: 60_000,
    };
    assert_eq!(parsed.validate(&expect), Ok(()));
    assert!(parsed.nonce.len() >= 16, "a nonce of ~100 bits");

    // The same proof again is a replay.
    let replay = http
        .post(&url)
        .header("dpop", &proof)
        .json(&json!({"address": address, "chain_id": 1}))
        .send()
        .await
        .expect("sent");
    let (status, body, _) = envelope(replay).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_dpop_proof"))
    );
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("already used")
    );
    server
        .stop(std::time::Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn metrics_are_served_on_their_own_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, base) = start(dir.path()).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
    }
    http.get(format!("{base}/v1/actors/raw-path-marker"))
        .send()
        .await
        .expect("404");
    // Not on the public listener.
    let public = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(public.status(), 404);
    let metrics_addr = server.metrics_addr().expect("metrics enabled");
    let metrics = || async {
        http.get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let text = metrics().await;
    assert!(
        text.contains(
            "agentkeys_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "agentkeys_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "agentkeys_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains("agentkeys_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/healthz\"} 3"), "{text}");
    for name in [
        "agentkeys_active_actors 0",
        "agentkeys_revocations_total 0",
        "agentkeys_signer_replaced_total 0",
        "agentkeys_store_commits_total",
        "agentkeys_store_checkpoints_total ",
        "agentkeys_store_log_bytes_total ",
        "agentkeys_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "# EOF",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert!(
        !text.contains("raw-path-marker"),
        "raw paths never become labels"
    );

    // Invented methods (any token is a valid HTTP method) become one label, `other`.
    for i in 0..50 {
        let method = format!("INVENTED{i}{}", "X".repeat(2000));
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a token");
        http.request(method, format!("{base}/v1/whoami"))
            .send()
            .await
            .expect("sent");
    }
    let grown = metrics().await;
    assert!(!grown.contains("INVENTED"), "methods are not labels");
    assert!(
        grown.contains(
            "agentkeys_http_requests_total{method=\"other\",route=\"/v1/whoami\",status=\"405\"} 50"
        ),
        "{grown}"
    );
    assert!(
        grown.len() < text.len() + 4096,
        "bounded: {} bytes",
        grown.len()
    );
    server
        .stop(std::time::Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn the_typed_client_signs_with_a_persistent_device_key() {
    use agentkeys_gateway::client::{self, ClientError, DeviceKey};
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, base) = start(&dir.path().join("data")).await;
    let home = dir.path().join("home");
    let profile = client::profile_dir(&home, "work").expect("plain name");
    assert!(client::profile_dir(&home, "../evil").is_err());
    assert!(client::profile_dir(&home, "a/b").is_err());

    let key = DeviceKey::load_or_create(&profile).expect("created");
    let jkt = key.thumbprint();
    let c = client::Client::new(PUBLIC_URL, key).connecting_to(&base);
    let challenge = c
        .wallet_start("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", 1)
        .await
        .expect("challenge");
    assert!(SiweMessage::parse(&challenge.message).is_ok());
    let err = c.wallet_start("0x12", 1).await.expect_err("refused");
    assert!(
        matches!(&err, ClientError::Api { code, .. } if code == "invalid_request"),
        "{err}"
    );

    // The key survives: same file, same thumbprint, 0600.
    use std::os::unix::fs::PermissionsExt;
    let file = profile.join("device.jwk");
    assert_eq!(
        std::fs::metadata(&file).expect("file").permissions().mode() & 0o777,
        0o600
    );
    let again = DeviceKey::load_or_create(&profile).expect("loaded");
    assert_eq!(again.thumbprint(), jkt);
    assert!(
        !format!("{again:?}").contains("\"d\""),
        "Debug prints no private part"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(
        DeviceKey::load_or_create(&profile).is_err(),
        "an open key file is refused"
    );
    server
        .stop(std::time::Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn openapi_describes_every_route_and_its_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, base) = start(dir.path()).await;
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    assert!(doc["components"]["schemas"]["ErrorEnvelope"]["properties"]["request_id"].is_object());
    let expected: [(&str, &str, &[&str]); 53] = [
        ("/healthz", "get", &["200"]),
        ("/readyz", "get", &["200", "503"]),
        // Every status the envelope test provokes on this route (405 is the router's, for other methods).
        (
            "/v1/auth/wallet/start",
            "post",
            &["200", "400", "401", "413", "415", "503", "500"],
        ),
        (
            "/v1/auth/wallet/verify",
            "post",
            &["200", "400", "401", "403", "413", "415", "503", "500"],
        ),
        ("/v1/session/refresh", "post", &["200", "401", "503", "500"]),
        ("/v1/whoami", "get", &["200", "401", "503", "500"]),
        (
            "/v1/actors/{omni}/devices/{binding_id}",
            "delete",
            &["200", "401", "404", "503", "500"],
        ),
        (
            "/v1/auth/email/request",
            "post",
            &["200", "400", "401", "413", "415", "429", "503", "500"],
        ),
        (
            "/v1/auth/email/verify",
            "post",
            &[
                "200", "400", "401", "403", "404", "410", "429", "503", "500",
            ],
        ),
        (
            "/v1/auth/email/status/{request_id}",
            "get",
            &["200", "401", "403", "404", "410", "429", "503", "500"],
        ),
        ("/auth/email/landing", "get", &["200", "429"]),
        (
            "/v1/actors",
            "post",
            &["201", "200", "400", "401", "403", "404", "409"],
        ),
        ("/v1/actors/{omni}", "get", &["200", "401", "404"]),
        (
            "/v1/actors/{omni}/tree",
            "get",
            &["200", "400", "401", "404"],
        ),
        (
            "/v1/actors/{omni}/scopes",
            "put",
            &["200", "400", "401", "403", "404"],
        ),
        (
            "/v1/actors/{omni}/revoke",
            "post",
            &["200", "401", "403", "404"],
        ),
        ("/v1/actors/{omni}/devices", "get", &["200", "401", "404"]),
        (
            "/v1/actors/{omni}/link-codes",
            "post",
            &["200", "400", "401", "404", "503"],
        ),
        (
            "/v1/link/redeem",
            "post",
            &["200", "400", "401", "404", "409", "410", "429"],
        ),
        (
            "/v1/sign/eip191",
            "post",
            &["200", "202", "400", "401", "403", "429", "503"],
        ),
        (
            "/v1/sign/eip712",
            "post",
            &["200", "202", "400", "401", "403", "429", "503"],
        ),
        (
            "/v1/sign/transaction",
            "post",
            &["200", "202", "400", "401", "403", "429", "503"],
        ),
        (
            "/v1/sign/sr25519",
            "post",
            &["200", "202", "400", "401", "403", "429", "503"],
        ),
        (
            "/v1/actors/{omni}/policy",
            "put",
            &["200", "400", "401", "403", "404"],
        ),
        ("/v1/policy/check", "post", &["200", "400", "401"]),
        ("/v1/approvals", "get", &["200", "400", "401"]),
        (
            "/v1/approvals/webhook",
            "put",
            &["200", "400", "401", "403"],
        ),
        ("/v1/approvals/{id}", "get", &["200", "401", "404"]),
        (
            "/v1/approvals/{id}/approve",
            "post",
            &["200", "401", "403", "404", "409", "429"],
        ),
        (
            "/v1/approvals/{id}/deny",
            "post",
            &["200", "401", "403", "404", "409"],
        ),
        ("/v1/audit", "get", &["200", "401", "404"]),
        ("/v1/audit/head", "get", &["200", "401", "503"]),
        (
            "/v1/actors/{omni}/search",
            "get",
            &["200", "400", "401", "404"],
        ),
        ("/v1/actors/{omni}/count", "get", &["200", "401", "404"]),
        ("/v1/events", "get", &["200", "400", "401", "429"]),
        ("/v1/pairing/request", "post", &["200", "401", "429"]),
        (
            "/v1/pairing/claim",
            "post",
            &["200", "400", "401", "403", "404", "409", "410"],
        ),
        ("/v1/pairing/poll", "post", &["200", "401", "404", "410"]),
        ("/.well-known/openid-configuration", "get", &["200"]),
        ("/.well-known/jwks.json", "get", &["200"]),
        (
            "/v1/oidc/token",
            "post",
            &["200", "400", "401", "403", "503"],
        ),
        (
            "/v1/auth/oauth2/start",
            "post",
            &["200", "400", "401", "429", "502"],
        ),
        ("/auth/oauth2/callback", "get", &["200", "429"]),
        (
            "/v1/auth/oauth2/confirm",
            "post",
            &["200", "400", "403", "404", "409", "410", "502"],
        ),
        (
            "/v1/auth/oauth2/status/{request_id}",
            "get",
            &["200", "401", "403", "404", "410", "502"],
        ),
        ("/v1/identities", "get", &["200", "401", "403"]),
        (
            "/v1/identities/{type}/{value}",
            "delete",
            &["200", "400", "401", "403", "404", "409"],
        ),
        (
            "/v1/identities/wallet/start",
            "post",
            &["200", "400", "401", "403"],
        ),
        (
            "/v1/identities/wallet/verify",
            "post",
            &["200", "400", "401", "403", "409"],
        ),
        (
            "/v1/identities/email/request",
            "post",
            &["200", "400", "401", "403", "503"],
        ),
        (
            "/v1/identities/oauth2/start",
            "post",
            &["200", "400", "401", "403", "502"],
        ),
        ("/v1/credentials", "get", &["200", "401"]),
        (
            "/v1/credentials/{service}",
            "get",
            &["200", "400", "401", "403", "404", "500"],
        ),
    ];
    for (path, method, statuses) in expected {
        let responses = &doc["paths"][path][method]["responses"];
        for status in statuses {
            assert!(
                responses[*status].is_object(),
                "{method} {path} documents {status}: {responses}"
            );
        }
    }
    let documented = doc["paths"].as_object().expect("paths").len();
    assert_eq!(
        documented,
        expected.len(),
        "every public route is documented, nothing else"
    );
    server
        .stop(std::time::Duration::from_secs(5))
        .await
        .expect("stops");
}
