//! Every domain-separation label of AgentKeys, in one place. Changing any of these changes
//! every derived identifier or key: they are pinned by the known-answer tests.

/// The default `client_id`; byte-compatibility with upstream is promised for this value.
pub const DEFAULT_CLIENT_ID: &str = "agentkeys";

/// Identity type of an EVM address (`0x` + 40 lowercase hex).
pub const IDENTITY_EVM: &str = "evm";

/// Identity type of an email address (trimmed, lowercased).
pub const IDENTITY_EMAIL: &str = "email";

/// Identity type of a Google account (upstream's): the value is the ID token's `sub`.
pub const IDENTITY_OAUTH2_GOOGLE: &str = "oauth2_google";

/// Identity type of an account at any other OpenID provider: the value is `<issuer>#<sub>`.
pub const IDENTITY_OIDC: &str = "oidc";

/// Prefix of the HDKD child-omni hash.
pub const HDKD_CHILD: &[u8] = b"agentkeys-hdkd-v1";

/// Separator between a parent omni and a child label (also the path separator).
pub const HDKD_JUNCTION: &str = "//";

/// HKDF salt of managed wallets `W(omni)`.
pub const WALLET_SALT: &[u8] = b"agentkeys-signer-v0";

/// Version byte that starts the HKDF info of managed wallets.
pub const WALLET_INFO_VERSION: u8 = 0x01;

/// HKDF info label of managed wallets (after the version byte, before the omni).
pub const WALLET_INFO: &[u8] = b"agentkeys-evm-wallet";

/// Retry bytes appended to the wallet info when the output is not a valid scalar: 1..=15.
pub const WALLET_MAX_RETRY: u8 = 15;

/// HKDF salt of a master's sr25519 root mini secret.
pub const SR25519_ROOT_SALT: &[u8] = b"agentkeys-sr25519-v1";

/// HKDF salt of the K3 fingerprint.
pub const K3_FINGERPRINT_SALT: &[u8] = b"agentkeys-k3-fingerprint-v1";
/// HKDF salt of a master's approval-webhook HMAC key (info: master omni ‖ u64 BE version).
pub const WEBHOOK_SALT: &[u8] = b"agentkeys-approval-webhook-v1";
/// HKDF salt of a master's vault key-encryption key (info: master omni ‖ u32 BE KEK version).
pub const VAULT_KEK_SALT: &[u8] = b"agentkeys-vault-kek-v1";
/// AAD prefix of a wrapped vault data key (then master omni ‖ u32 BE KEK version).
pub const VAULT_DEK_AAD: &[u8] = b"agentkeys-vault-dek-v1";
/// AAD prefix of a credential's ciphertext (then master omni ‖ u8 length ‖ service ‖ u64 BE
/// version).
pub const VAULT_VALUE_AAD: &[u8] = b"agentkeys-vault-value-v1";

/// HKDF salt of the key that wraps the P-256 signing keys kept in a shared store (no info).
pub const SIGNING_KEY_KEK_SALT: &[u8] = b"agentkeys-signing-key-kek-v1";
/// HKDF salt of the `DPoP-Nonce` key of a deployment whose nodes share a store (no info): a
/// nonce one node issues is accepted by every other.
pub const DPOP_NONCE_SALT: &[u8] = b"agentkeys-dpop-nonce-v1";
/// HKDF salt of the key that seals logins in progress kept in a shared store (no info).
pub const PENDING_SALT: &[u8] = b"agentkeys-pending-v1";
/// AAD prefix of a sealed login in progress (then its kind, a zero byte, its id).
pub const PENDING_AAD: &[u8] = b"agentkeys-pending-v1";
/// AAD prefix of a wrapped P-256 signing key (then the set's name, `/`, the kid).
pub const SIGNING_KEY_AAD: &[u8] = b"agentkeys-signing-key-v1";

/// EIP-191 version 0x45 prefix (`personal_sign`).
pub const EIP191_PREFIX: &str = "\x19Ethereum Signed Message:\n";

/// EIP-712 prefix of the signing digest.
pub const EIP712_PREFIX: [u8; 2] = [0x19, 0x01];

/// The signing context of Substrate's sr25519 signatures.
pub const SUBSTRATE_CONTEXT: &[u8] = b"substrate";

/// Prefix of the SS58 checksum preimage.
pub const SS58_CHECKSUM_PREFIX: &[u8] = b"SS58PRE";

/// The EIP-4361 first-line suffix after the domain.
pub const SIWE_HEADER_SUFFIX: &str = " wants you to sign in with your Ethereum account:";
