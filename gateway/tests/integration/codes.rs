//! Every error code listed in `docs/api.md`, provoked through a real request with its status —
//! or named here as not reachable yet, with the reason. The list of the unreachable shrinks as
//! the routes that answer them land; a code in the document that is in neither list fails.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use agentkeys_actors::crypto::omni::master_omni;
use agentkeys_actors::crypto::wallet::derive_wallet;
use agentkeys_actors::signer::keys::load_k3;
use agentkeys_gateway::admin::{AdminRequest, AllowAction, call};
use common::{PUBLIC_URL, Stack, device, down_provider, start_configured, wallet};
use serde_json::{Value, json};

/// Codes no request can provoke yet, and why.
const NOT_REACHABLE: [(&str, &str); 5] = [
    (
        "invalid_id_token",
        "needs an OpenID provider that signs bad ID tokens: tests/interop/oauth2.test.mjs provokes it against oidc-provider, and the validation is unit-tested",
    ),
    (
        "actor_unavailable",
        "a quarantine needs an actor crashing 5 times; runtime tests cover it",
    ),
    (
        "signer_unavailable",
        "needs a signer thread to panic mid-request; actors tests cover it",
    ),
    (
        "internal",
        "no request may cause it; the mapping is unit-tested",
    ),
    (
        "busy",
        "needs a full mailbox or replay cache; runtime and DPoP tests cover both",
    ),
];

fn documented_codes() -> BTreeMap<String, u16> {
    let doc = include_str!("../../../docs/api.md");
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let status = cells.get(2)?.parse().ok()?;
            Some((code.to_string(), status))
        })
        .collect()
}

async fn observe(seen: &mut BTreeMap<String, u16>, (status, body): (u16, Value)) {
    let code = body["error"].as_str().expect("an envelope").to_string();
    seen.entry(code).or_insert(status);
}

#[actix::test]
async fn every_documented_code_is_provoked_or_named_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_configured(
        dir.path(),
        down_provider(dir.path(), "down"),
        agentkeys_gateway::config::Layer::default().with("registration", "allowlist"),
    )
    .await;
    let mut seen = BTreeMap::new();
    let key = device();
    let alice = wallet(21);
    let allowed = call(
        dir.path(),
        &AdminRequest::Allow {
            action: AllowAction::Add,
            entry: Some(alice.address().to_string()),
        },
    )
    .await
    .expect("admin");
    assert_eq!(allowed["ok"], true);
    let (status, session) = stack.login(&key, &alice).await;
    assert_eq!(status, 200, "{session}");
    let token = session["session_jwt"].as_str().expect("token").to_string();

    provoke_request_errors(&stack, &mut seen).await;
    provoke_login_errors(&stack, dir.path(), &alice, &mut seen).await;
    provoke_email_errors(&stack, dir.path(), &mut seen).await;
    provoke_policy_errors(&stack, &key, &token, &mut seen).await;
    provoke_identity_errors(&stack, dir.path(), &key, &token, &mut seen).await;
    provoke_agent_errors(&stack, &key, &token, &session, &mut seen).await;
    provoke_session_errors(&stack, &key, &token, &session, &mut seen).await;

    let documented = documented_codes();
    assert_eq!(documented.len(), 35, "the table of docs/api.md");
    // Every mismatch is reported at once: one wrong code does not hide the others.
    let mut problems = Vec::new();
    for (code, status) in &documented {
        match (
            seen.get(code),
            NOT_REACHABLE.iter().find(|(c, _)| c == code),
        ) {
            (Some(got), None) if got != status => {
                problems.push(format!("{code}: documented {status}, answered {got}"));
            }
            (Some(_), None) | (None, Some(_)) => {}
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{code} is reachable now: take it off NOT_REACHABLE"
                ));
            }
            (None, None) => {
                problems.push(format!("{code} was neither provoked nor named unreachable"))
            }
        }
    }
    for code in seen.keys() {
        if !documented.contains_key(code) {
            problems.push(format!("{code} is not in docs/api.md"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}

async fn provoke_request_errors(stack: &Stack, seen: &mut BTreeMap<String, u16>) {
    let key = device();
    let raw = |method: reqwest::Method, path: &str| {
        stack.http.request(method, format!("{}{path}", stack.base))
    };
    for request in [
        raw(reqwest::Method::GET, "/nope"),
        raw(reqwest::Method::GET, "/v1/auth/wallet/verify"),
    ] {
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        observe(seen, (status, response.json().await.expect("json"))).await;
    }
    let path = "/v1/auth/wallet/start";
    let proof = |k: &agentkeys_gateway::client::DeviceKey| {
        k.proof(
            "POST",
            &format!("{PUBLIC_URL}{path}"),
            stack.now(),
            None,
            None,
        )
        .expect("proof")
    };
    let response = raw(reqwest::Method::POST, path)
        .header("dpop", proof(&key))
        .body("{}")
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    observe(seen, (status, response.json().await.expect("json"))).await;
    let response = raw(reqwest::Method::POST, path)
        .header("dpop", proof(&key))
        .header("content-type", "application/json")
        .body(vec![b' '; (1 << 20) + 1])
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    observe(seen, (status, response.json().await.expect("json"))).await;
    let both = json!({"message": "x", "request_id": "y", "signature": "0x00"});
    observe(
        seen,
        stack
            .call(&key, "POST", "/v1/auth/wallet/verify", Some(&both), None)
            .await,
    )
    .await;
}

/// identity_taken, last_identity, identity_unlinked, provider_unavailable.
async fn provoke_identity_errors(
    stack: &Stack,
    dir: &std::path::Path,
    key: &agentkeys_gateway::client::DeviceKey,
    token: &str,
    seen: &mut BTreeMap<String, u16>,
) {
    // The master's only identity (wallet 21) cannot go.
    let own = format!("/v1/identities/evm/{}", wallet(21).address());
    observe(
        seen,
        stack.call(key, "DELETE", &own, None, Some(token)).await,
    )
    .await;
    // Linked, unlinked: a login with it is refused.
    let (status, linked) = stack.link_wallet(key, token, &wallet(23)).await;
    assert_eq!(status, 200, "{linked}");
    let path = format!("/v1/identities/evm/{}", wallet(23).address());
    let (status, _) = stack.call(key, "DELETE", &path, None, Some(token)).await;
    assert_eq!(status, 200);
    observe(seen, stack.login(&device(), &wallet(23)).await).await;
    // Another master's identity cannot be linked here.
    let other = wallet(25);
    let allowed = call(
        dir,
        &AdminRequest::Allow {
            action: AllowAction::Add,
            entry: Some(other.address().to_string()),
        },
    )
    .await
    .expect("admin");
    assert_eq!(allowed["ok"], true);
    let (status, _) = stack.login(&device(), &other).await;
    assert_eq!(status, 200);
    observe(seen, stack.link_wallet(key, token, &other).await).await;
    observe(
        seen,
        stack
            .call(
                &device(),
                "POST",
                "/v1/auth/oauth2/start",
                Some(&json!({"provider": "down"})),
                None,
            )
            .await,
    )
    .await;
}

async fn provoke_login_errors(
    stack: &Stack,
    dir: &std::path::Path,
    alice: &agentkeys_actors::crypto::wallet::WalletKey,
    seen: &mut BTreeMap<String, u16>,
) {
    let key = device();
    let bad = json!({"request_id": "nope", "signature": "0x1234"});
    observe(
        seen,
        stack
            .call(&key, "POST", "/v1/auth/wallet/verify", Some(&bad), None)
            .await,
    )
    .await;
    observe(seen, stack.login(&key, &wallet(22)).await).await;
    let master = master_omni("agentkeys", &alice.address().to_string()).expect("omni");
    let k3 = load_k3(&dir.join("keys/k3.key")).expect("k3");
    let managed = derive_wallet(&k3, &master).expect("wallet");
    observe(seen, stack.login(&key, &managed).await).await;
}

async fn provoke_session_errors(
    stack: &Stack,
    key: &agentkeys_gateway::client::DeviceKey,
    token: &str,
    session: &Value,
    seen: &mut BTreeMap<String, u16>,
) {
    observe(seen, stack.call(key, "GET", "/v1/whoami", None, None).await).await;
    let stolen = device();
    observe(
        seen,
        stack
            .call(&stolen, "GET", "/v1/whoami", None, Some(token))
            .await,
    )
    .await;
    observe(
        seen,
        stack
            .call(
                key,
                "POST",
                "/v1/session/refresh",
                Some(&json!({})),
                Some(token),
            )
            .await,
    )
    .await;
    let omni = session["omni"].as_str().expect("omni");
    let bid = session["binding_id"].as_u64().expect("bid");
    let path = format!("/v1/actors/{omni}/devices/{bid}");
    let (status, _) = stack.call(key, "DELETE", &path, None, Some(token)).await;
    assert_eq!(status, 200);
    observe(
        seen,
        stack
            .call(key, "GET", "/v1/whoami", None, Some(token))
            .await,
    )
    .await;
    // A second binding, then the master is revoked by the host admin.
    let other = device();
    let (status, second) = stack.login(&other, &wallet(21)).await;
    assert_eq!(status, 200, "{second}");
    let second = second["session_jwt"].as_str().expect("token");
    stack
        .server
        .runtime()
        .revoke(omni.parse().expect("omni"))
        .await
        .expect("revoked");
    observe(
        seen,
        stack
            .call(&other, "GET", "/v1/whoami", None, Some(second))
            .await,
    )
    .await;
}

async fn provoke_email_errors(
    stack: &Stack,
    dir: &std::path::Path,
    seen: &mut BTreeMap<String, u16>,
) {
    let key = device();
    let ask = || async {
        stack
            .call(
                &key,
                "POST",
                "/v1/auth/email/request",
                Some(&json!({"email": "codes@example.com"})),
                None,
            )
            .await
    };
    let (status, started) = ask().await;
    assert_eq!(status, 200, "{started}");
    let id = started["request_id"].as_str().expect("id");
    let mail = std::fs::read_to_string(dir.join(format!("outbox/{id}.eml"))).expect("mail");
    let token = mail
        .split("#t=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("token")
        .to_string();
    let verify = |code: &str| {
        let body = json!({"token": token, "confirm_code": code});
        async move {
            let response = stack
                .http
                .post(format!("{}/v1/auth/email/verify", stack.base))
                .json(&body)
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    observe(seen, verify("ZZZ-ZZZ").await).await;
    let code = started["confirm_code"].as_str().expect("code");
    // Registration is an allow-list here: the verification is refused, and the link is spent.
    observe(seen, verify(code).await).await;
    observe(seen, verify(code).await).await;
    for _ in 0..5 {
        let answer = ask().await;
        if answer.0 == 429 {
            observe(seen, answer).await;
            return;
        }
    }
    panic!("the sixth link for one address within the hour was not limited");
}

async fn provoke_agent_errors(
    stack: &Stack,
    key: &agentkeys_gateway::client::DeviceKey,
    token: &str,
    session: &Value,
    seen: &mut BTreeMap<String, u16>,
) {
    let call = |method: &'static str, path: String, body: Value| async move {
        stack
            .call(key, method, &path, Some(&body), Some(token))
            .await
    };
    let create = |label: &'static str, scopes: Value| {
        call(
            "POST",
            "/v1/actors".into(),
            json!({"label": label, "scopes": scopes}),
        )
    };
    observe(seen, create("Not_A_Label", json!([])).await).await;
    let (status, ops) = create("ops", json!(["sign:eip191"])).await;
    assert_eq!(status, 201, "{ops}");
    observe(seen, create("ops", json!([])).await).await;
    let bad_typed =
        json!({"typed_data": {"types": {}, "primaryType": "Missing", "domain": {}, "message": {}}});
    observe(
        seen,
        call("POST", "/v1/sign/eip712".into(), bad_typed).await,
    )
    .await;
    let master = session["omni"].as_str().expect("omni");
    observe(
        seen,
        call("POST", format!("/v1/actors/{master}/revoke"), json!({})).await,
    )
    .await;
    let ops_omni = ops["omni"].as_str().expect("omni");
    let (_, code) = call(
        "POST",
        format!("/v1/actors/{ops_omni}/link-codes"),
        json!({}),
    )
    .await;
    let redeem = json!({"code": code["code"]});
    let first = stack
        .call(&device(), "POST", "/v1/link/redeem", Some(&redeem), None)
        .await;
    assert_eq!(first.0, 200, "{}", first.1);
    observe(
        seen,
        stack
            .call(&device(), "POST", "/v1/link/redeem", Some(&redeem), None)
            .await,
    )
    .await;
    let (status, _) = call("POST", format!("/v1/actors/{ops_omni}/revoke"), json!({})).await;
    assert_eq!(status, 200);
    observe(seen, create("ops", json!(["sign:eip191"])).await).await;
}

async fn provoke_policy_errors(
    stack: &Stack,
    key: &agentkeys_gateway::client::DeviceKey,
    token: &str,
    seen: &mut BTreeMap<String, u16>,
) {
    let call = |method: &'static str, path: String, body: Value| async move {
        stack
            .call(key, method, &path, Some(&body), Some(token))
            .await
    };
    let (status, pol) = call(
        "POST",
        "/v1/actors".into(),
        json!({"label": "pol", "scopes": ["sign:eip191", "sign:tx:1"]}),
    )
    .await;
    assert_eq!(status, 201, "{pol}");
    let omni = pol["omni"].as_str().expect("omni").to_owned();
    let policy_path = format!("/v1/actors/{omni}/policy");
    observe(
        seen,
        call("PUT", policy_path.clone(), json!({"tx": {"too": "any"}})).await,
    )
    .await;
    let policy = json!({"tx": {"to": "any"},
        "budgets": [{"asset": "native", "chain": 1, "window_seconds": 60, "max": "1000"}],
        "approval": {"above": [{"asset": "native", "chain": 1, "amount": "500"}]}});
    let (status, _) = call("PUT", policy_path, policy).await;
    assert_eq!(status, 200);
    let (_, code) = call("POST", format!("/v1/actors/{omni}/link-codes"), json!({})).await;
    let agent_key = device();
    let (status, session) = stack
        .call(
            &agent_key,
            "POST",
            "/v1/link/redeem",
            Some(&json!({"code": code["code"]})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let agent_token = session["session_jwt"].as_str().expect("token").to_owned();
    let agent = |path: &'static str, body: Value| {
        let (agent_key, agent_token) = (&agent_key, &agent_token);
        async move {
            stack
                .call(agent_key, "POST", path, Some(&body), Some(agent_token))
                .await
        }
    };
    observe(
        seen,
        agent("/v1/sign/eip191", json!({"message": "hi"})).await,
    )
    .await;
    let tx = |value: &str| {
        json!({"tx": {"chain_id": 1, "nonce": 0, "to": "0x1111111111111111111111111111111111111111",
            "value": value, "gas_limit": 21000, "max_fee_per_gas": 0, "max_priority_fee_per_gas": 0}})
    };
    observe(seen, agent("/v1/sign/transaction", tx("2000")).await).await;
    let (status, pending) = agent("/v1/sign/transaction", tx("600")).await;
    assert_eq!(status, 202, "{pending}");
    let id = pending["approval_id"].as_str().expect("id").to_owned();
    let (status, _) = call("POST", format!("/v1/approvals/{id}/deny"), json!({})).await;
    assert_eq!(status, 200);
    observe(
        seen,
        call("POST", format!("/v1/approvals/{id}/deny"), json!({})).await,
    )
    .await;
}
