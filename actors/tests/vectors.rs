//! Known-answer tests against vectors produced by independent implementations:
//! `vectors/derivations.json` by a JavaScript implementation of DESIGN §3 (node:crypto, ethers,
//! @polkadot/keyring), `vectors/eip712.json` by ethers. Regenerate with the scripts in
//! `tests/interop/` (see their headers).

use agentkeys_actors::crypto::eip191::{Signature, recover, sign_hash};
use agentkeys_actors::crypto::eip712::TypedData;
use agentkeys_actors::crypto::omni::{Identity, identity_omni, master_omni, path_omni};
use agentkeys_actors::crypto::secret::MasterSecret;
use agentkeys_actors::crypto::sr25519::{derive_actor, ss58};
use agentkeys_actors::crypto::wallet::{Address, WalletKey, derive_wallet};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("json")
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} missing"))
}

#[test]
fn openid_masters_match_the_independent_implementation() {
    let v = load("derivations.json");
    let k3 = MasterSecret::from_hex(text(&v, "k3")).expect("k3");
    let client_id = text(&v, "client_id");
    let vectors = v["openid"].as_array().expect("openid vectors");
    assert_eq!(vectors.len(), 2);
    for vector in vectors {
        let identity = Identity::of(text(vector, "type"), text(vector, "value")).expect("identity");
        let id = identity_omni(client_id, identity).expect("omni");
        assert_eq!(id.to_string(), text(vector, "identity_omni"));
        let anchor = derive_wallet(&k3, &id).expect("anchor").address();
        assert_eq!(anchor.to_string(), text(vector, "anchor_wallet"));
        let master = master_omni(client_id, &anchor.to_string()).expect("master");
        assert_eq!(master.to_string(), text(vector, "master_omni"));
        let wallet = derive_wallet(&k3, &master).expect("wallet").address();
        assert_eq!(wallet.to_string(), text(vector, "master_wallet"));
    }
    // Upstream's layout: SHA256(client_id || "oauth2_google" || sub), no separators.
    use sha2::Digest as _;
    let direct: [u8; 32] =
        sha2::Sha256::digest(b"agentkeysoauth2_google110169484474386276334").into();
    let google =
        identity_omni("agentkeys", Identity::OAuth2Google("110169484474386276334")).expect("omni");
    assert_eq!(google.as_bytes(), &direct);
}

#[test]
fn end_to_end_derivations_match_the_independent_implementation() {
    let v = load("derivations.json");
    let k3 = MasterSecret::from_hex(text(&v, "k3")).expect("k3");
    let client_id = text(&v, "client_id");
    let identity = identity_omni(client_id, Identity::Email(text(&v, "email"))).expect("identity");
    assert_eq!(identity.to_string(), text(&v, "identity_omni"));
    let anchor = derive_wallet(&k3, &identity).expect("anchor").address();
    assert_eq!(anchor.to_string(), text(&v, "anchor_wallet"));
    let master = master_omni(client_id, &anchor.to_string()).expect("master");
    assert_eq!(master.to_string(), text(&v, "master_omni"));
    let actors = v["actors"].as_array().expect("actors");
    assert_eq!(actors.len(), 5);
    for actor in actors {
        let path = text(actor, "path");
        let omni = if path.is_empty() {
            master
        } else {
            path_omni(&master, path).expect("path")
        };
        assert_eq!(omni.to_string(), text(actor, "omni"), "omni of {path:?}");
        let wallet = derive_wallet(&k3, &omni).expect("wallet").address();
        assert_eq!(
            wallet.to_string(),
            text(actor, "wallet"),
            "wallet of {path:?}"
        );
        let sr = derive_actor(&k3, &master, path).expect("sr25519");
        assert_eq!(
            hex::encode(sr.public()),
            text(actor, "sr25519_public"),
            "sr25519 of {path:?}"
        );
        assert_eq!(
            ss58(&sr.public(), 42),
            text(actor, "ss58"),
            "ss58 of {path:?}"
        );
    }
}

#[test]
fn eip712_digests_and_signatures_match_ethers() {
    let v = load("eip712.json");
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&text(&v, "key")[2..], &mut secret).expect("key hex");
    let key = WalletKey::from_secret(&secret).expect("valid key");
    let address: Address = text(&v, "address").parse().expect("address");
    assert_eq!(key.address(), address);
    let vectors = v["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 6);
    for vector in vectors {
        let name = text(vector, "name");
        let td = TypedData::from_json(vector["typed_data"].clone()).expect("parses");
        let hash = td.hash().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            format!("0x{}", hex::encode(hash.digest)),
            text(vector, "digest"),
            "{name}"
        );
        let sig = sign_hash(&key, &hash.digest);
        assert_eq!(
            sig.to_hex(),
            text(vector, "signature"),
            "{name}: RFC 6979 signatures agree"
        );
        let theirs: Signature = text(vector, "signature").parse().expect("signature");
        assert_eq!(recover(&hash.digest, &theirs), Ok(address), "{name}");
    }
}

#[test]
fn siwe_messages_built_by_npm_siwe_parse_round_trip_and_verify() {
    use agentkeys_actors::crypto::siwe::{SiweError, SiweMessage};
    let v = load("siwe.json");
    let address: Address = text(&v, "address").parse().expect("address");
    let vectors = v["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 4);
    for vector in vectors {
        let name = text(vector, "name");
        let message = text(vector, "text");
        let fields = &vector["fields"];
        let parsed = SiweMessage::parse(message).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.address, address, "{name}");
        assert_eq!(parsed.domain, text(fields, "domain"), "{name}");
        assert_eq!(
            parsed.scheme.as_deref(),
            fields["scheme"].as_str(),
            "{name}"
        );
        assert_eq!(parsed.uri, text(fields, "uri"), "{name}");
        assert_eq!(Some(parsed.chain_id), fields["chainId"].as_u64(), "{name}");
        assert_eq!(parsed.nonce, text(fields, "nonce"), "{name}");
        assert_eq!(parsed.issued_at, text(fields, "issuedAt"), "{name}");
        assert_eq!(
            parsed.statement.as_deref(),
            fields["statement"].as_str(),
            "{name}"
        );
        assert_eq!(
            parsed.expiration_time.as_deref(),
            fields["expirationTime"].as_str(),
            "{name}"
        );
        assert_eq!(
            parsed.not_before.as_deref(),
            fields["notBefore"].as_str(),
            "{name}"
        );
        assert_eq!(
            parsed.request_id.as_deref(),
            fields["requestId"].as_str(),
            "{name}"
        );
        let resources: Vec<&str> = fields["resources"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(parsed.resources, resources, "{name}");
        assert_eq!(
            parsed.to_text(),
            message,
            "{name}: serializes to the same bytes"
        );
        let signature: Signature = text(vector, "signature").parse().expect("signature");
        assert_eq!(
            parsed.verify_signature(message, &signature),
            Ok(()),
            "{name}"
        );
        let tampered = message.replace("Nonce: ", "Nonce: x");
        assert_eq!(
            parsed.verify_signature(&tampered, &signature),
            Err(SiweError::Signature),
            "{name}"
        );
    }
}
