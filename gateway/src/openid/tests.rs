use super::*;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const ISSUER: &str = "https://id.example.com";
const CLIENT: &str = "gateway-client";
const NOW: i64 = 1_800_000_000;

struct Signer {
    key: EncodingKey,
    jwk: Jwk,
}

fn signer(kid: &str) -> Signer {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    let der = pair.to_pkcs8v1().expect("pkcs8");
    let point = pair.public_key().as_ref();
    let jwk = serde_json::from_value(json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }))
    .expect("jwk");
    Signer {
        key: EncodingKey::from_ec_der(der.as_ref()),
        jwk,
    }
}

fn claims() -> serde_json::Value {
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "110169484474386276334",
        "iat": NOW - 5, "exp": NOW + 300, "nonce": "n-0S6_WzA2Mj",
    })
}

fn token(signer: &Signer, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, &signer.key).expect("encode")
}

fn expect(algorithms: &[Algorithm]) -> Expect<'_> {
    Expect {
        issuer: ISSUER,
        client_id: CLIENT,
        nonce: "n-0S6_WzA2Mj",
        algorithms,
        now: NOW,
    }
}

const DEFAULT_ALGS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

fn check(claims: &serde_json::Value) -> Result<Verified, Invalid> {
    let s = signer("k1");
    validate_id_token(
        &token(&s, Some("k1"), claims),
        std::slice::from_ref(&s.jwk),
        &expect(&DEFAULT_ALGS),
    )
}

fn refused_with(result: Result<Verified, Invalid>, text: &str) {
    match result {
        Err(Invalid::Refused(why)) => assert!(why.contains(text), "{why:?} should say {text:?}"),
        other => panic!("expected a refusal naming {text:?}, got {other:?}"),
    }
}

fn with(change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> serde_json::Value {
    let mut c = claims();
    change(c.as_object_mut().expect("object"));
    c
}

#[test]
fn a_valid_token_yields_its_subject() {
    let verified = check(&claims()).expect("valid");
    assert_eq!(verified.sub, "110169484474386276334");
    // An audience list holding the client, with azp naming it, is fine too.
    let many = with(|c| {
        c.insert("aud".into(), json!([CLIENT, "other"]));
        c.insert("azp".into(), json!(CLIENT));
    });
    check(&many).expect("valid with azp");
}

#[test]
fn audience_issuer_and_authorized_party_must_match() {
    refused_with(
        check(&with(|c| {
            c.insert("aud".into(), json!("the-deployment-client-id"));
        })),
        "audience",
    );
    refused_with(
        check(&with(|c| {
            c.insert("iss".into(), json!("https://evil.example.com"));
        })),
        "issuer",
    );
    refused_with(
        check(&with(|c| {
            c.insert("iss".into(), json!(format!("{ISSUER}/")));
        })),
        "issuer",
    );
    refused_with(
        check(&with(|c| {
            c.insert("azp".into(), json!("someone-else"));
        })),
        "authorized party",
    );
    refused_with(
        check(&with(|c| {
            c.insert("aud".into(), json!([CLIENT, "other"]));
        })),
        "authorized party",
    );
}

#[test]
fn nonce_times_and_subject_are_checked() {
    refused_with(
        check(&with(|c| {
            c.remove("nonce");
        })),
        "nonce",
    );
    refused_with(
        check(&with(|c| {
            c.insert("nonce".into(), json!("another-login"));
        })),
        "nonce",
    );
    refused_with(
        check(&with(|c| {
            c.insert("exp".into(), json!(NOW - CLOCK_SKEW_SECONDS));
        })),
        "expired",
    );
    check(&with(|c| {
        c.insert("exp".into(), json!(NOW - CLOCK_SKEW_SECONDS + 1));
    }))
    .expect("within the skew");
    refused_with(
        check(&with(|c| {
            c.insert("iat".into(), json!(NOW + CLOCK_SKEW_SECONDS + 1));
        })),
        "future",
    );
    refused_with(
        check(&with(|c| {
            c.remove("iat");
        })),
        "missing",
    );
    refused_with(
        check(&with(|c| {
            c.insert("sub".into(), json!(""));
        })),
        "subject",
    );
}

#[test]
fn algorithms_outside_the_allow_list_are_refused() {
    // alg none: no signature at all.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    let s = signer("k1");
    let unsigned = format!("{header}.{body}.");
    refused_with(
        validate_id_token(
            &unsigned,
            std::slice::from_ref(&s.jwk),
            &expect(&DEFAULT_ALGS),
        ),
        "algorithm",
    );
    // HS256 with the client secret as the key: never allowed.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"the-client-secret").expect("key"),
    )
    .expect("encode");
    refused_with(
        validate_id_token(&hs, std::slice::from_ref(&s.jwk), &expect(&DEFAULT_ALGS)),
        "not allowed",
    );
    // ES256 where the provider is configured for RS256 only.
    let es = token(&s, Some("k1"), &claims());
    refused_with(
        validate_id_token(
            &es,
            std::slice::from_ref(&s.jwk),
            &expect(&[Algorithm::RS256]),
        ),
        "not allowed",
    );
}

#[test]
fn keys_are_chosen_by_kid_and_signatures_checked() {
    let published = signer("k1");
    let rogue = signer("k1");
    // Same kid, another key: the signature fails.
    let forged = token(&rogue, Some("k1"), &claims());
    refused_with(
        validate_id_token(
            &forged,
            std::slice::from_ref(&published.jwk),
            &expect(&DEFAULT_ALGS),
        ),
        "signature",
    );
    // A kid the set does not hold: the caller refreshes the set once.
    let unknown = token(&published, Some("k2"), &claims());
    assert_eq!(
        validate_id_token(
            &unknown,
            std::slice::from_ref(&published.jwk),
            &expect(&DEFAULT_ALGS)
        ),
        Err(Invalid::UnknownKey)
    );
    // No kid: fine with one key, refused with several.
    let bare = token(&published, None, &claims());
    validate_id_token(
        &bare,
        std::slice::from_ref(&published.jwk),
        &expect(&DEFAULT_ALGS),
    )
    .expect("one key");
    let other = signer("k3");
    refused_with(
        validate_id_token(
            &bare,
            &[published.jwk.clone(), other.jwk],
            &expect(&DEFAULT_ALGS),
        ),
        "several",
    );
}

fn file(text: &str) -> anyhow::Result<Vec<ProviderConfig>> {
    let table: toml::Table = toml::from_str(text).expect("toml");
    parse_file_tables(&table["oidc_providers"])
}

#[test]
fn provider_tables_are_validated() {
    let ok = file(
        r#"
        [[oidc_providers]]
        name = "google"
        issuer = "https://accounts.google.com"
        client_id = "123.apps.googleusercontent.com"
        client_secret_file = "/etc/agentkeys/google.secret"
        identity_type = "oauth2_google"
        "#,
    )
    .expect("valid");
    assert_eq!(ok[0].algorithms, DEFAULT_ALGS);
    assert_eq!(ok[0].scopes, ["openid"]);
    assert_eq!(ok[0].token_auth, TokenAuth::Basic);
    assert!(ok[0].warnings().is_empty());
    assert_eq!(
        ok[0].identity("1234"),
        ("oauth2_google".into(), "1234".into())
    );
    let generic = file(
        r#"
        [[oidc_providers]]
        name = "okta"
        issuer = "https://example.okta.com/"
        client_id = "0oa1"
        client_secret_file = "okta.secret"
        token_endpoint_auth = "client_secret_post"
        "#,
    )
    .expect("valid");
    assert_eq!(generic[0].issuer, "https://example.okta.com");
    assert_eq!(
        generic[0].identity("00u1"),
        ("oidc".into(), "https://example.okta.com#00u1".into())
    );
    let refusals = [
        ("algorithms = [\"HS256\"]", "not allowed"),
        ("identity_type = \"email\"", "identity_type"),
        ("scopes = [\"email\"]", "openid"),
        ("colour = \"blue\"", "unknown field"),
    ];
    for (line, text) in refusals {
        let e = file(&format!(
            "[[oidc_providers]]\nname = \"x\"\nissuer = \"https://id.example.com\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n{line}\n"
        ))
        .expect_err(line);
        assert!(format!("{e:#}").contains(text), "{line}: {e:#}");
    }
    let plain = file(
        "[[oidc_providers]]\nname = \"x\"\nissuer = \"http://id.example.com\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n",
    )
    .expect_err("plain http off loopback");
    assert!(format!("{plain:#}").contains("https"));
    let google_elsewhere = file(
        "[[oidc_providers]]\nname = \"g\"\nissuer = \"https://id.example.com\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\nidentity_type = \"oauth2_google\"\n",
    )
    .expect("valid");
    assert_eq!(google_elsewhere[0].warnings().len(), 1);
}

#[test]
fn secrets_must_be_private_files() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "s3cret\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = read_secret(&path).expect_err("world-readable");
    assert!(e.to_string().contains("chmod 600"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(read_secret(&path).expect("private").as_str(), "s3cret");
}

/// A provider on loopback whose key set the test changes, counting JWKS fetches.
struct KeyServer {
    issuer: String,
    keys: Arc<std::sync::Mutex<Vec<Jwk>>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

async fn key_server() -> KeyServer {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let keys = Arc::new(std::sync::Mutex::new(Vec::<Jwk>::new()));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    });
    let (served, counted) = (keys.clone(), fetches.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            get(move || async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let keys = served.lock().expect("keys").clone();
                axum::Json(json!({ "keys": keys }))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    KeyServer {
        issuer,
        keys,
        fetches,
    }
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_keys_at_most_once_a_minute() {
    let server = key_server().await;
    let k1 = signer("k1");
    let k2 = signer("k2");
    *server.keys.lock().expect("keys") = vec![k1.jwk.clone()];
    let config = ProviderFile {
        name: "test".into(),
        issuer: server.issuer.clone(),
        client_id: CLIENT.into(),
        client_secret_file: "unused".into(),
        scopes: None,
        algorithms: None,
        identity_type: None,
        token_endpoint_auth: None,
    }
    .validate()
    .expect("config");
    let provider = Provider::new(config, Zeroizing::new("s".into())).expect("provider");
    let claims = |now: i64| {
        with(|c| {
            c.insert("iss".into(), json!(server.issuer));
            c.insert("iat".into(), json!(now));
            c.insert("exp".into(), json!(now + 300));
        })
    };
    let nonce = "n-0S6_WzA2Mj";
    let fetched = || server.fetches.load(std::sync::atomic::Ordering::SeqCst);
    provider
        .validate(&token(&k1, Some("k1"), &claims(NOW)), nonce, NOW)
        .await
        .expect("k1 is published");
    assert_eq!(fetched(), 1);
    // The provider rotates to k2. Within the minute, an unknown kid fetches nothing.
    *server.keys.lock().expect("keys") = vec![k2.jwk.clone()];
    let early = provider
        .validate(&token(&k2, Some("k2"), &claims(NOW + 10)), nonce, NOW + 10)
        .await
        .expect_err("not fetched again yet");
    assert!(matches!(early, OpenIdError::InvalidToken(_)));
    assert_eq!(fetched(), 1);
    // A minute after the last fetch, an unknown kid fetches the set again, once.
    provider
        .validate(&token(&k2, Some("k2"), &claims(NOW + 61)), nonce, NOW + 61)
        .await
        .expect("k2 after the refresh");
    assert_eq!(fetched(), 2);
    let rogue = signer("k9");
    provider
        .validate(
            &token(&rogue, Some("k9"), &claims(NOW + 70)),
            nonce,
            NOW + 70,
        )
        .await
        .expect_err("unknown");
    assert_eq!(fetched(), 2, "at most once a minute");
    assert_eq!(provider.reachability().jwks, "ok");
}

#[test]
fn debug_output_never_shows_the_pkce_verifier() {
    let a = Authorization {
        url: "https://id.example.com/auth?x=1".into(),
        verifier: Zeroizing::new("the-verifier-value".into()),
    };
    let shown = format!("{a:?}");
    assert!(!shown.contains("the-verifier-value") && shown.contains("redacted"));
}
