//! OIDC key rotation step by step on the injected clock: publish the next key first, switch
//! signing after the delay, retire the old key after the longest token plus the verifiers'
//! cache; the state survives a restart.

use crate::common;

use std::time::Duration;

use agentkeys_actors::signer::keys::verify_es256;
use agentkeys_gateway::admin::{AdminRequest, KeysAction, call};
use agentkeys_gateway::config::Layer;
use common::{Stack, device, start_with, wallet};
use serde_json::{Value, json};

pub(crate) fn kid_of(jwt: &str) -> String {
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').next().expect("header"))
        .expect("b64");
    let header: Value = serde_json::from_slice(&header).expect("json");
    header["kid"].as_str().expect("kid").to_string()
}

pub(crate) async fn published(stack: &Stack) -> Vec<Value> {
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", stack.base))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    jwks["keys"].as_array().expect("keys").clone()
}

pub(crate) fn kids(keys: &[Value]) -> Vec<String> {
    let mut kids: Vec<String> = keys
        .iter()
        .filter_map(|k| k["kid"].as_str().map(String::from))
        .collect();
    kids.sort();
    kids
}

/// Verifies `jwt` with the published keys, as a relying party would.
fn verifies(jwt: &str, keys: &[Value]) -> bool {
    use base64::Engine;
    let (input, signature) = jwt.rsplit_once('.').expect("jws");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("b64");
    let kid = kid_of(jwt);
    keys.iter()
        .filter(|k| k["kid"] == kid.as_str())
        .any(|k| verify_es256(k, input.as_bytes(), &signature))
}

fn layer() -> Layer {
    Layer::default().with("oidc_switch_delay_seconds", "3600")
}

#[actix::test]
async fn publish_then_switch_then_retire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_with(dir.path(), layer()).await;
    let key = device();
    let mint = || async {
        // Sessions last 15 minutes; the clock moves by hours here, so log in each time.
        let (_, session) = stack.login(&key, &wallet(91)).await;
        let token = session["session_jwt"].as_str().expect("token").to_string();
        let (status, minted) = stack
            .call(
                &key,
                "POST",
                "/v1/oidc/token",
                Some(&json!({"ttl_seconds": 3600})),
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{minted}");
        minted["jwt"].as_str().expect("jwt").to_string()
    };
    let first = mint().await;
    let old = kid_of(&first);
    assert_eq!(kids(&published(&stack).await), [old.as_str()]);

    // 1. Publish: two keys in the JWKS, the old one still signs.
    let answer = call(
        dir.path(),
        &AdminRequest::Keys {
            action: KeysAction::RotateOidc,
        },
    )
    .await
    .expect("admin");
    assert_eq!(answer["ok"], true, "{answer}");
    let new = answer["next"]["kid"].as_str().expect("next").to_string();
    assert_eq!(kids(&published(&stack).await).len(), 2);
    assert_eq!(kid_of(&mint().await), old);
    let again = call(
        dir.path(),
        &AdminRequest::Keys {
            action: KeysAction::RotateOidc,
        },
    )
    .await
    .expect("admin");
    assert_eq!(again["ok"], false, "one rotation at a time");

    // 2. Switch after the delay: the new key signs; the old one is still published.
    stack.clock.advance(Duration::from_secs(3599));
    assert_eq!(kid_of(&mint().await), old);
    stack.clock.advance(Duration::from_secs(1));
    // Many requests apply the due step at once: the steps are serialized, so none of them
    // loses the old key's retirement (it must still leave the JWKS below).
    let concurrent = futures_util::future::join_all((0..16).map(|_| published(&stack))).await;
    assert!(concurrent.iter().all(|keys| keys.len() == 2));
    let switched = mint().await;
    assert_eq!(kid_of(&switched), new);
    let keys = published(&stack).await;
    assert!(verifies(&first, &keys) && verifies(&switched, &keys));

    // 3. Retire after the longest token plus the verifiers' cache.
    stack.clock.advance(Duration::from_secs(3600 + 299));
    assert_eq!(kids(&published(&stack).await).len(), 2);
    stack.clock.advance(Duration::from_secs(1));
    let keys = published(&stack).await;
    assert_eq!(kids(&keys), [new.as_str()]);
    assert!(
        !verifies(&first, &keys),
        "a token of the retired key no longer verifies"
    );
    assert!(verifies(&switched, &keys));
    if agentkeys_tests::engine::on_postgres() {
        // Keys live in the shared store; the retired one is marked there.
        let stored = stack
            .server
            .runtime()
            .store()
            .meta_prefixed("keys.stored.oidc.")
            .expect("read");
        let retired: Vec<_> = stored.iter().filter(|(_, v)| v.is_empty()).collect();
        assert_eq!(retired.len(), 1, "{stored:?}");
        assert!(retired[0].0.ends_with(&old));
    } else {
        assert!(
            dir.path()
                .join("keys/oidc/retired")
                .read_dir()
                .expect("retired dir")
                .count()
                == 1
        );
    }
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");

    // The state survives a restart: the new key signs, the old one stays retired.
    let stack = start_with(dir.path(), layer()).await;
    assert_eq!(kids(&published(&stack).await), [new.as_str()]);
    let status = call(
        dir.path(),
        &AdminRequest::Keys {
            action: KeysAction::Status,
        },
    )
    .await
    .expect("admin");
    assert_eq!(status["signing"], new);
    assert!(status["next"].is_null());
    stack
        .server
        .stop(Duration::from_secs(5))
        .await
        .expect("stops");
}
