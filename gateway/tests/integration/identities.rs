//! Several login identities per master, end to end over HTTP: link a wallet and an email
//! address, log in with them into the same master and tree, unlink (a later login refused),
//! never the last one, `identity_taken`, managed wallets, and a challenge used for the wrong
//! purpose. Also an OpenID provider that is down: a clear error, nothing kept, still ready.

use crate::common;

use agentkeys_actors::crypto::omni::master_omni;
use agentkeys_actors::crypto::wallet::derive_wallet;
use agentkeys_actors::signer::keys::load_k3;
use agentkeys_gateway::config::Layer;
use common::{
    Stack, answer, device, down_provider, link, start, start_configured, token_from_outbox, wallet,
};
use serde_json::{Value, json};

fn token(session: &Value) -> String {
    session["session_jwt"]
        .as_str()
        .expect("a session")
        .to_string()
}

async fn identities(
    stack: &Stack,
    key: &agentkeys_gateway::client::DeviceKey,
    token: &str,
) -> Vec<Value> {
    let (status, body) = stack
        .call(key, "GET", "/v1/identities", None, Some(token))
        .await;
    assert_eq!(status, 200, "{body}");
    body["identities"].as_array().expect("a list").clone()
}

#[actix::test]
async fn a_linked_wallet_logs_into_the_same_master_until_unlinked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let key = device();
    let alice = wallet(31);
    let bob = wallet(32);
    let (status, session) = stack.login(&key, &alice).await;
    assert_eq!(status, 200, "{session}");
    let master = session["master_omni"].clone();
    let tok = token(&session);
    // An agent under the master, to see the tree is the same after logging in as bob.
    let (status, agent) = stack
        .call(
            &key,
            "POST",
            "/v1/actors",
            Some(&json!({"label": "hermes"})),
            Some(&tok),
        )
        .await;
    assert_eq!(status, 201, "{agent}");

    let (status, linked) = stack.link_wallet(&key, &tok, &bob).await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["status"], "linked");
    assert_eq!(linked["value"], bob.address().to_string());
    // Idempotent.
    let (status, again) = stack.link_wallet(&key, &tok, &bob).await;
    assert_eq!(
        (status, &again["status"]),
        (200, &json!("linked")),
        "{again}"
    );
    let list = identities(&stack, &key, &tok).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["type"], "evm");
    assert_eq!(list[0]["value"], alice.address().to_string());
    assert_eq!(list[0]["created_with"], true);
    assert_eq!(list[1]["value"], bob.address().to_string());
    assert_eq!(list[1]["created_with"], false);

    // Bob's wallet, from another device, logs into alice's master — not into its own.
    let other = device();
    let (status, as_bob) = stack.login(&other, &bob).await;
    assert_eq!(status, 200, "{as_bob}");
    assert_eq!(as_bob["master_omni"], master);
    let own = master_omni("agentkeys", &bob.address().to_string()).expect("omni");
    assert_ne!(as_bob["master_omni"], json!(own.to_string()));
    let (status, tree) = stack
        .call(
            &other,
            "GET",
            &format!("/v1/actors/{}/tree", master.as_str().expect("omni")),
            None,
            Some(&token(&as_bob)),
        )
        .await;
    assert_eq!(status, 200, "{tree}");
    assert!(tree["entries"].to_string().contains("hermes"), "{tree}");

    // The audit chain has the link; the event stream's vocabulary names it.
    let (status, audit) = stack.call(&key, "GET", "/v1/audit", None, Some(&tok)).await;
    assert_eq!(status, 200);
    assert!(
        audit["rows"].to_string().contains("identity_link"),
        "{audit}"
    );

    // Unlink bob: a later login with bob is refused, not turned into a new master.
    let path = format!("/v1/identities/evm/{}", bob.address());
    let (status, gone) = stack.call(&key, "DELETE", &path, None, Some(&tok)).await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["status"], "unlinked");
    let (status, refused) = stack.login(&device(), &bob).await;
    assert_eq!(
        (status, &refused["error"]),
        (403, &json!("identity_unlinked")),
        "{refused}"
    );
    let (status, body) = stack.call(&key, "DELETE", &path, None, Some(&tok)).await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("not_found")),
        "{body}"
    );
    // Alice is now the only one: never the last.
    let path = format!(
        "/v1/identities/evm/{}",
        alice
            .address()
            .to_string()
            .to_uppercase()
            .replace("0X", "0x")
    );
    let (status, body) = stack.call(&key, "DELETE", &path, None, Some(&tok)).await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("last_identity")),
        "{body}"
    );
    // Proven again by the master, bob may be linked anew.
    let (status, relinked) = stack.link_wallet(&key, &tok, &bob).await;
    assert_eq!(status, 200, "{relinked}");
    let (status, as_bob) = stack.login(&device(), &bob).await;
    assert_eq!((status, &as_bob["master_omni"]), (200, &master), "{as_bob}");
    stack.stop().await;
}

#[actix::test]
async fn taken_managed_and_misused_identities_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let key = device();
    let alice = wallet(41);
    let carol = wallet(42);
    let (_, session) = stack.login(&key, &alice).await;
    let tok = token(&session);
    let (status, _) = stack.login(&device(), &carol).await;
    assert_eq!(status, 200);
    // Carol's wallet has its own master: it cannot join alice's.
    let (status, body) = stack.link_wallet(&key, &tok, &carol).await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("identity_taken")),
        "{body}"
    );
    // Alice's own managed wallet is never an identity.
    let master = master_omni("agentkeys", &alice.address().to_string()).expect("omni");
    let k3 = load_k3(&dir.path().join("keys/k3.key")).expect("k3");
    let managed = derive_wallet(&k3, &master).expect("wallet");
    let (status, body) = stack.link_wallet(&key, &tok, &managed).await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("managed_wallet")),
        "{body}"
    );
    // A login challenge cannot link, and a link challenge cannot log in.
    let dave = wallet(43);
    let login_challenge = stack.challenge(&key, &dave).await;
    let (status, body) = stack
        .call(
            &key,
            "POST",
            "/v1/identities/wallet/verify",
            Some(&answer(&login_challenge, &dave)),
            Some(&tok),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_siwe")),
        "{body}"
    );
    let link_challenge = stack
        .challenge_at(&key, &dave, "/v1/identities/wallet/start", Some(&tok))
        .await;
    let (status, body) = stack
        .call(
            &key,
            "POST",
            "/v1/auth/wallet/verify",
            Some(&answer(&link_challenge, &dave)),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_siwe")),
        "{body}"
    );
    // Only masters manage identities.
    let owner = common::master(&stack, 44).await;
    let (status, agent) = owner
        .call(&stack, "POST", "/v1/actors", Some(json!({"label": "bot"})))
        .await;
    assert_eq!(status, 201, "{agent}");
    let bot = link(&stack, &owner, agent["omni"].as_str().expect("omni")).await;
    let (status, body) = bot.call(&stack, "GET", "/v1/identities", None).await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("scope_denied")),
        "{body}"
    );
    stack.stop().await;
}

#[actix::test]
async fn a_linked_email_logs_into_the_wallet_master() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path(), None).await;
    let key = device();
    let (_, session) = stack.login(&key, &wallet(51)).await;
    let master = session["master_omni"].clone();
    let tok = token(&session);
    let (status, started) = stack
        .call(
            &key,
            "POST",
            "/v1/identities/email/request",
            Some(&json!({"email": "Dave@Example.com"})),
            Some(&tok),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let id = started["request_id"].as_str().expect("id");
    let link = token_from_outbox(dir.path(), id);
    let verify = |body: Value| {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/auth/email/verify", stack.base);
        async move {
            let r = http.post(url).json(&body).send().await.expect("sent");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let (status, described) = verify(json!({"token": link})).await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["mode"], "link");
    assert_eq!(described["email"], "dave@example.com");
    let (status, done) =
        verify(json!({"token": link, "confirm_code": started["confirm_code"]})).await;
    assert_eq!((status, &done["status"]), (200, &json!("linked")), "{done}");
    let poll = format!("/v1/auth/email/status/{id}");
    let (status, polled) = stack.call(&key, "GET", &poll, None, None).await;
    assert_eq!(
        (status, &polled["status"]),
        (200, &json!("linked")),
        "{polled}"
    );
    assert!(
        polled.get("session_jwt").is_none(),
        "a link issues no session"
    );
    let list = identities(&stack, &key, &tok).await;
    assert!(
        list.iter()
            .any(|i| i["type"] == "email" && i["value"] == "dave@example.com")
    );

    // Dave's address now logs into the wallet master (not a master of its own).
    let other = device();
    let (status, login) = stack
        .call(
            &other,
            "POST",
            "/v1/auth/email/request",
            Some(&json!({"email": "dave@example.com"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let id = login["request_id"].as_str().expect("id");
    let link = token_from_outbox(dir.path(), id);
    let (status, _) = verify(json!({"token": link, "confirm_code": login["confirm_code"]})).await;
    assert_eq!(status, 200);
    let (status, polled) = stack
        .call(
            &other,
            "GET",
            &format!("/v1/auth/email/status/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "verified");
    assert_eq!(polled["master_omni"], master);
    stack.stop().await;
}

#[actix::test]
async fn a_provider_that_is_down_is_a_clear_error_and_the_gateway_stays_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = down_provider(dir.path(), "corp");
    let stack = start_configured(dir.path(), file, Layer::default()).await;
    let key = device();
    let (status, body) = stack
        .call(
            &key,
            "POST",
            "/v1/auth/oauth2/start",
            Some(&json!({"provider": "corp"})),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (502, &json!("provider_unavailable")),
        "{body}"
    );
    assert!(body["message"].as_str().expect("message").contains("corp"));
    let (status, body) = stack
        .call(
            &key,
            "POST",
            "/v1/auth/oauth2/start",
            Some(&json!({"provider": "nope"})),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_request")),
        "{body}"
    );
    assert!(body["message"].as_str().expect("message").contains("corp"));
    let ready = reqwest::get(format!("{}/readyz", stack.base))
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["providers"][0]["name"], "corp");
    assert_ne!(ready["providers"][0]["discovery"], "ok", "{ready}");
    // Nothing was kept: a state nobody was given finds nothing.
    let confirm = reqwest::Client::new()
        .post(format!("{}/v1/auth/oauth2/confirm", stack.base))
        .json(&json!({"state": "anything"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(confirm.status().as_u16(), 404);
    stack.stop().await;
}
