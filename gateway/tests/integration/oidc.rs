//! OIDC for AWS: discovery and JWKS (K2 only, cache headers), tokens with the AWS session-tags
//! claim for the caller, scope and limits enforced, the legacy claim shape.

use crate::common;

use std::time::Duration;

use agentkeys_actors::signer::KeySetName;
use agentkeys_actors::signer::keys::verify_es256;
use agentkeys_gateway::config::Layer;
use common::{Stack, device, start, start_with, wallet};
use serde_json::{Value, json};

fn part(token: &str, i: usize) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(i).expect("part"))
        .expect("b64");
    serde_json::from_slice(&bytes).expect("json")
}

async fn get(stack: &Stack, path: &str) -> (reqwest::header::HeaderMap, Value) {
    let response = reqwest::get(format!("{}{path}", stack.base))
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (headers, response.json().await.expect("json"))
}

#[actix::test]
async fn discovery_keys_and_tokens_for_aws() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let (headers, config) = get(&stack, "/.well-known/openid-configuration").await;
    assert_eq!(config["issuer"], common::PUBLIC_URL);
    assert_eq!(
        config["jwks_uri"],
        format!("{}/.well-known/jwks.json", common::PUBLIC_URL)
    );
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert!(
        headers["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("max-age=300")
    );
    let (_, jwks) = get(&stack, "/.well-known/jwks.json").await;
    let k2 = common::key_set(&stack, dir.path(), KeySetName::Oidc);
    let k1 = common::key_set(&stack, dir.path(), KeySetName::Session);
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [k2[0].kid()]);
    assert!(!kids.contains(&k1[0].kid()), "session keys never appear");

    // An agent with the scope mints; one without is refused.
    let key = device();
    let (_, session) = stack.login(&key, &wallet(81)).await;
    let token = session["session_jwt"].as_str().expect("token");
    let (status, agent) = stack
        .call(
            &key,
            "POST",
            "/v1/actors",
            Some(&json!({"label": "s3-writer", "scopes": ["oidc:sts.amazonaws.com"]})),
            Some(token),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let omni = agent["omni"].as_str().expect("omni");
    let (_, code) = stack
        .call(
            &key,
            "POST",
            &format!("/v1/actors/{omni}/link-codes"),
            Some(&json!({})),
            Some(token),
        )
        .await;
    let agent_key = device();
    let (_, agent_session) = stack
        .call(
            &agent_key,
            "POST",
            "/v1/link/redeem",
            Some(&json!({"code": code["code"]})),
            None,
        )
        .await;
    let agent_token = agent_session["session_jwt"].as_str().expect("token");
    let (status, minted) = stack
        .call(
            &agent_key,
            "POST",
            "/v1/oidc/token",
            Some(&json!({})),
            Some(agent_token),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    let jwt = minted["jwt"].as_str().expect("jwt");
    let header = part(jwt, 0);
    assert_eq!(
        (
            header["alg"].as_str(),
            header["typ"].as_str(),
            header["kid"].as_str()
        ),
        (Some("ES256"), Some("JWT"), Some(k2[0].kid()))
    );
    let claims = part(jwt, 1);
    assert_eq!(claims["iss"], common::PUBLIC_URL);
    assert_eq!(claims["aud"], "sts.amazonaws.com");
    assert_eq!(claims["sub"], format!("agentkeys:actor:{omni}"));
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        300
    );
    let tags = &claims["https://aws.amazon.com/tags"];
    assert_eq!(
        tags["principal_tags"]["agentkeys_actor_omni"],
        json!([omni])
    );
    assert_eq!(
        tags["principal_tags"]["agentkeys_master_omni"],
        json!([session["omni"]])
    );
    assert_eq!(
        tags["principal_tags"]["agentkeys_user_wallet"],
        json!([agent["wallet"].as_str().expect("w").to_lowercase()])
    );
    assert_eq!(
        tags["transitive_tag_keys"].as_array().expect("keys").len(),
        3
    );
    let (signing_input, signature) = jwt.rsplit_once('.').expect("jws");
    use base64::Engine;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("b64");
    assert!(verify_es256(
        &k2[0].public_jwk(),
        signing_input.as_bytes(),
        &signature
    ));

    let refused = |body: Value| {
        let (k, t) = (&agent_key, agent_token.to_string());
        let stack = &stack;
        async move {
            stack
                .call(k, "POST", "/v1/oidc/token", Some(&body), Some(&t))
                .await
        }
    };
    let (status, body) = refused(json!({"audience": "other.example"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("scope_denied"))
    );
    let (status, body) = refused(json!({"audience": "agentkeys"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = refused(json!({"ttl_seconds": 30})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = refused(json!({"ttl_seconds": 3601})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // An OIDC token is never a session.
    let (status, body) = stack
        .call(&agent_key, "GET", "/v1/whoami", None, Some(jwt))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[actix::test]
async fn legacy_claims_keep_upstream_trust_policies_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_with(
        dir.path(),
        Layer::default().with("oidc_legacy_claims", "true"),
    )
    .await;
    let key = device();
    let (_, session) = stack.login(&key, &wallet(82)).await;
    let token = session["session_jwt"].as_str().expect("token");
    let (status, minted) = stack
        .call(
            &key,
            "POST",
            "/v1/oidc/token",
            Some(&json!({"ttl_seconds": 900})),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    let claims = part(minted["jwt"].as_str().expect("jwt"), 1);
    let (_, me) = stack
        .call(&key, "GET", "/v1/whoami", None, Some(token))
        .await;
    let wallet = me["wallet"].as_str().expect("wallet").to_lowercase();
    assert_eq!(claims["sub"], format!("agentkeys:agent:{wallet}"));
    assert_eq!(claims["agentkeys_user_wallet"], wallet);
    assert_eq!(claims["agentkeys_actor_omni"], session["omni"]);
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}
