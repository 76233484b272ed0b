//! The signer's messages: one per operation, each run by a signer thread ([`SignerOp`]).

use agentkeys_runtime::{LiveProof, Omni};
use serde_json::Value;

use super::{SignerError, SignerOp, SignerState};
use crate::crypto::account::{self, Account};
use crate::crypto::eip191::{self, Signature};
use crate::crypto::eip712::TypedData;
use crate::crypto::omni::{Identity, identity_omni, master_omni, path_omni};
use crate::crypto::siwe::is_login_for;
use crate::crypto::sr25519;
use crate::crypto::tx::{SignedTx, TxRequest};
use crate::crypto::vault;
use crate::crypto::wallet::Address;
use crate::ledger::audit::HEAD_LABEL;

/// Which P-256 key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySetName {
    /// K1: session tokens.
    Session,
    /// K2: OIDC tokens (published in JWKS).
    Oidc,
    /// The audit key: signs audit chain heads.
    Audit,
}

impl KeySetName {
    /// Every set.
    pub const ALL: [KeySetName; 3] = [KeySetName::Session, KeySetName::Oidc, KeySetName::Audit];

    /// The set's directory under `<data>/keys/` (and its name in a shared store).
    pub fn dir_name(self) -> &'static str {
        match self {
            KeySetName::Session => "session",
            KeySetName::Oidc => "oidc",
            KeySetName::Audit => "audit",
        }
    }
}

/// An EIP-712 signature with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTypedData {
    /// The signature.
    pub signature: Signature,
    /// What was signed.
    pub digest: [u8; 32],
    /// The signer's address.
    pub address: Address,
}

/// Derive the public identifiers of the actor at `path` under `master`.
#[derive(Debug)]
pub struct DeriveAccount {
    /// The master's omni.
    pub master: Omni,
    /// `""` or `//a//b`.
    pub path: String,
}

/// An EIP-191 signature and the address that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMessage {
    /// 65 bytes `r || s || v`, `v ∈ {27, 28}`.
    pub signature: Signature,
    /// The signer's address.
    pub address: Address,
}

/// An sr25519 signature and the public key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSr25519 {
    /// 64 bytes (schnorrkel, Substrate context).
    pub signature: [u8; 64],
    /// The actor's sr25519 public key.
    pub public: [u8; 32],
}

/// EIP-191 personal_sign.
#[derive(Debug)]
pub struct SignEip191 {
    /// The message bytes.
    pub message: Vec<u8>,
    /// The lineage check's proof; its actor's wallet signs.
    pub proof: LiveProof,
}

/// EIP-191 personal_sign with the anchor wallet `W(identity omni)` of an email-login master.
/// Authorized here, by derivation: the proof must be for the master whose omni derives from
/// that anchor wallet.
#[derive(Debug)]
pub struct SignEip191AsAnchor {
    /// The identity (`type`, `value`) the master was created with (email or OpenID).
    pub identity: (String, String),
    /// The message bytes.
    pub message: Vec<u8>,
    /// The master's lineage proof.
    pub proof: LiveProof,
}

/// EIP-712 v4.
#[derive(Debug)]
pub struct SignTypedData {
    /// The `eth_signTypedData_v4` document.
    pub typed: Value,
    /// The lineage check's proof; its actor's wallet signs.
    pub proof: LiveProof,
}

/// An EIP-1559 or legacy transaction.
#[derive(Debug)]
pub struct SignTransaction {
    /// The transaction request.
    pub tx: Value,
    /// The lineage check's proof; its actor's wallet signs.
    pub proof: LiveProof,
}

/// sr25519 (Substrate context).
#[derive(Debug)]
pub struct SignSr25519 {
    /// The proof's actor's path under its master (`""` or `//a//b`); it must derive to the
    /// proof's omni.
    pub path: String,
    /// The message bytes.
    pub message: Vec<u8>,
    /// The lineage check's proof.
    pub proof: LiveProof,
}

/// A compact ES256 JWS with the current key of a set.
#[derive(Debug)]
pub struct SignJwt {
    /// The key set.
    pub set: KeySetName,
    /// JOSE header (`alg` and `kid` are set by the signer).
    pub header: Value,
    /// Claims.
    pub claims: Value,
}

impl SignerOp for DeriveAccount {
    type Ok = Account;

    fn run(self, state: &SignerState) -> Result<Account, SignerError> {
        let msg = self;

        Ok(account::derive(&state.k3, &msg.master, &msg.path)?)
    }
}

fn personal_sign(
    state: &super::SignerState,
    wallet: &Omni,
    message: &[u8],
) -> Result<SignedMessage, SignerError> {
    if is_login_for(message, &state.siwe_domain) {
        return Err(SignerError::ManagedWalletLogin);
    }
    let wallet = state.wallet(wallet)?;
    Ok(SignedMessage {
        signature: eip191::sign_message(&wallet, message),
        address: wallet.address(),
    })
}

impl SignerOp for SignEip191 {
    type Ok = SignedMessage;

    fn run(self, state: &SignerState) -> Result<SignedMessage, SignerError> {
        let msg = self;

        personal_sign(state, &msg.proof.omni(), &msg.message)
    }
}

impl SignerOp for SignEip191AsAnchor {
    type Ok = SignedMessage;

    fn run(self, state: &SignerState) -> Result<SignedMessage, SignerError> {
        let msg = self;

        let (kind, value) = &msg.identity;
        let refused = || {
            SignerError::NotAuthorized(
                "only a master created by an email or OpenID login signs with its anchor wallet",
            )
        };
        let parsed = Identity::of(kind, value).map_err(|_| refused())?;
        if matches!(parsed, Identity::Evm(_)) {
            return Err(refused());
        }
        let identity = identity_omni(&state.client_id, parsed)?;
        let anchor = state.wallet(&identity)?.address();
        let master = master_omni(&state.client_id, &anchor.to_string())?;
        if msg.proof.omni() != msg.proof.master() || master != msg.proof.omni() {
            return Err(refused());
        }
        personal_sign(state, &identity, &msg.message)
    }
}

impl SignerOp for SignTypedData {
    type Ok = SignedTypedData;

    fn run(self, state: &SignerState) -> Result<SignedTypedData, SignerError> {
        let msg = self;

        let digest = TypedData::from_json(msg.typed)?.hash()?.digest;
        let wallet = state.wallet(&msg.proof.omni())?;
        Ok(SignedTypedData {
            signature: eip191::sign_hash(&wallet, &digest),
            digest,
            address: wallet.address(),
        })
    }
}

impl SignerOp for SignTransaction {
    type Ok = SignedTx;

    fn run(self, state: &SignerState) -> Result<SignedTx, SignerError> {
        let msg = self;

        let wallet = state.wallet(&msg.proof.omni())?;
        Ok(TxRequest::from_json(msg.tx)?.sign(&wallet)?)
    }
}

impl SignerOp for SignSr25519 {
    type Ok = SignedSr25519;

    fn run(self, state: &SignerState) -> Result<SignedSr25519, SignerError> {
        let msg = self;

        let master = msg.proof.master();
        let omni = match msg.path.as_str() {
            "" => master,
            path => path_omni(&master, path)?,
        };
        if omni != msg.proof.omni() {
            return Err(SignerError::NotAuthorized(
                "the path is not the path of the proof's actor",
            ));
        }
        let key = sr25519::derive_actor(&state.k3, &master, &msg.path)?;
        Ok(SignedSr25519 {
            signature: key.sign(&msg.message),
            public: key.public(),
        })
    }
}

impl SignerOp for SignJwt {
    type Ok = String;

    fn run(self, state: &SignerState) -> Result<String, SignerError> {
        let msg = self;

        state
            .set(msg.set)
            .current()
            .sign_jwt(msg.header, &msg.claims)
    }
}

/// Signs one audit chain head with the audit key (the store's writer thread waits for it).
/// Only messages carrying the audit-head label are signed.
#[derive(Debug)]
pub struct SignAuditHead {
    /// The head message (starts with the audit-head label).
    pub message: Vec<u8>,
}

impl SignerOp for SignAuditHead {
    type Ok = (String, Vec<u8>);

    fn run(self, state: &SignerState) -> Result<(String, Vec<u8>), SignerError> {
        if !self.message.starts_with(HEAD_LABEL) {
            return Err(SignerError::NotAuthorized(
                "the audit key signs only audit chain heads",
            ));
        }
        let set = state.set(KeySetName::Audit);
        let key = set.current();
        let signature = key.sign(&self.message)?;
        Ok((key.kid().to_string(), signature))
    }
}

/// Signs several audit chain heads, each as [`SignAuditHead`] would (the store's writer does
/// not wait for these: they are stored by a later batch).
#[derive(Debug)]
pub struct SignAuditHeads {
    /// The head messages.
    pub messages: Vec<Vec<u8>>,
}

impl SignerOp for SignAuditHeads {
    type Ok = Vec<Result<(String, Vec<u8>), SignerError>>;

    fn run(self, state: &SignerState) -> Result<Self::Ok, SignerError> {
        Ok(self
            .messages
            .into_iter()
            .map(|message| SignAuditHead { message }.run(state))
            .collect())
    }
}

/// Adds a new key to a set (published, not yet signing).
#[derive(Debug)]
pub struct AddKey {
    /// The set.
    pub set: KeySetName,
}

impl SignerOp for AddKey {
    type Ok = String;

    fn run(self, state: &SignerState) -> Result<String, SignerError> {
        let msg = self;

        let key = state.new_key(msg.set)?;
        let kid = key.kid().to_string();
        state.set_mut(msg.set).keys.push(key);
        Ok(kid)
    }
}

/// Adds a key another node created and stored (a shared store's wrapped form) to its set,
/// unless the set holds it already; answers whether it was added.
#[derive(Debug)]
pub struct ImportKey {
    /// The stored key.
    pub key: super::StoredKey,
}

impl SignerOp for ImportKey {
    type Ok = bool;

    fn run(self, state: &SignerState) -> Result<bool, SignerError> {
        let super::Placement::Stored { kek, .. } = &state.placement else {
            return Err(SignerError::KeyFile(
                "keys are files on this node; nothing to import".into(),
            ));
        };
        if state.set(self.key.set).position(&self.key.kid).is_some() {
            return Ok(false);
        }
        let key = self.key.unwrap(kek)?;
        let mut set = state.set_mut(self.key.set);
        if set.position(&self.key.kid).is_some() {
            return Ok(false);
        }
        set.keys.push(key);
        Ok(true)
    }
}

/// Makes a key of a set the signing key.
#[derive(Debug)]
pub struct UseKey {
    /// The set.
    pub set: KeySetName,
    /// The key.
    pub kid: String,
}

impl SignerOp for UseKey {
    type Ok = ();

    fn run(self, state: &SignerState) -> Result<(), SignerError> {
        let msg = self;

        let mut keys = state.set_mut(msg.set);
        keys.current = keys
            .position(&msg.kid)
            .ok_or_else(|| SignerError::KeyFile(format!("no key {} in the set", msg.kid)))?;
        Ok(())
    }
}

/// Removes a key from a set and moves its file to `retired/` (not the signing key).
#[derive(Debug)]
pub struct RetireKey {
    /// The set.
    pub set: KeySetName,
    /// The key.
    pub kid: String,
}

impl SignerOp for RetireKey {
    type Ok = ();

    fn run(self, state: &SignerState) -> Result<(), SignerError> {
        let msg = self;

        let mut keys = state.set_mut(msg.set);
        let position = keys
            .position(&msg.kid)
            .ok_or_else(|| SignerError::KeyFile(format!("no key {} in the set", msg.kid)))?;
        if position == keys.current {
            return Err(SignerError::KeyFile(format!(
                "{} is the signing key",
                msg.kid
            )));
        }
        if let Some(dir) = state.dir(msg.set) {
            super::keys::retire_key_file(&dir, &msg.kid)?;
        }
        keys.keys.remove(position);
        if keys.current > position {
            keys.current -= 1;
        }
        Ok(())
    }
}

/// Panics inside the handler, to exercise the pool's replacement path in tests. Only Rust code
/// holding a `SignerHandle` can send it; no route does.
#[derive(Debug)]
pub struct InjectPanic;

impl SignerOp for InjectPanic {
    type Ok = ();

    fn run(self, _state: &SignerState) -> Result<(), SignerError> {
        panic!("injected signer panic")
    }
}

/// The HMAC key of a master's approval webhook (shown to the master once, when set).
#[derive(Debug)]
pub struct WebhookSecret {
    /// The master.
    pub master: Omni,
    /// The webhook's version.
    pub version: u64,
}

impl SignerOp for WebhookSecret {
    type Ok = zeroize::Zeroizing<[u8; 32]>;

    fn run(self, state: &SignerState) -> Result<zeroize::Zeroizing<[u8; 32]>, SignerError> {
        let msg = self;

        Ok(state.k3.webhook_key(&msg.master, msg.version))
    }
}

/// HMAC-SHA256 of a webhook delivery with the master's webhook key (the key stays here).
#[derive(Debug)]
pub struct WebhookMac {
    /// The master.
    pub master: Omni,
    /// The webhook's version.
    pub version: u64,
    /// What is authenticated.
    pub message: Vec<u8>,
}

impl SignerOp for WebhookMac {
    type Ok = [u8; 32];

    fn run(self, state: &SignerState) -> Result<[u8; 32], SignerError> {
        let msg = self;

        let key = state.k3.webhook_key(&msg.master, msg.version);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_ref());
        let tag = aws_lc_rs::hmac::sign(&key, &msg.message);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }
}

/// Encrypts a credential value for the vault of the proof's master (a master's proof only):
/// with the master's stored data key, or a fresh one (returned wrapped) when it has none.
#[derive(Debug)]
pub struct VaultSeal {
    /// The master's lineage proof.
    pub proof: LiveProof,
    /// The service.
    pub service: String,
    /// The version being written.
    pub version: u64,
    /// The value.
    pub value: zeroize::Zeroizing<Vec<u8>>,
    /// The master's data key as stored, if it has one.
    pub key: Option<vault::WrappedKey>,
}

/// A sealed credential value.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// `nonce ‖ ciphertext ‖ tag`.
    pub ciphertext: Vec<u8>,
    /// A data key made for this master now (store it with the value).
    pub new_key: Option<vault::WrappedKey>,
}

impl SignerOp for VaultSeal {
    type Ok = Sealed;

    fn run(self, state: &SignerState) -> Result<Sealed, SignerError> {
        let msg = self;

        let master = msg.proof.master();
        if msg.proof.omni() != master {
            return Err(SignerError::NotAuthorized("only a master writes its vault"));
        }
        let (wrapped, new_key) = match msg.key {
            Some(key) => (key, None),
            None => {
                let kek = state.k3.vault_kek(&master, vault::CURRENT_KEK_VERSION);
                let key = vault::new_data_key(&kek, &master, vault::CURRENT_KEK_VERSION)
                    .map_err(|_| SignerError::Internal("vault key"))?;
                (key.clone(), Some(key))
            }
        };
        let kek = state.k3.vault_kek(&master, wrapped.kek_version);
        let dek = vault::unwrap_data_key(&kek, &master, &wrapped)
            .map_err(|_| SignerError::Internal("the vault key does not authenticate"))?;
        let aad = vault::value_aad(&master, &msg.service, msg.version);
        let ciphertext = vault::seal_value(&dek, &aad, &msg.value)
            .map_err(|_| SignerError::Internal("vault value"))?;
        Ok(Sealed {
            ciphertext,
            new_key,
        })
    }
}

/// Decrypts a credential of the proof's master for the proof's actor (the caller checked the
/// actor's scope; the proof says its lineage was live).
#[derive(Debug)]
pub struct VaultOpen {
    /// The reader's lineage proof.
    pub proof: LiveProof,
    /// The service.
    pub service: String,
    /// The version.
    pub version: u64,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub ciphertext: Vec<u8>,
    /// The master's data key as stored.
    pub key: vault::WrappedKey,
}

impl SignerOp for VaultOpen {
    type Ok = zeroize::Zeroizing<Vec<u8>>;

    fn run(self, state: &SignerState) -> Result<zeroize::Zeroizing<Vec<u8>>, SignerError> {
        let msg = self;

        let master = msg.proof.master();
        let kek = state.k3.vault_kek(&master, msg.key.kek_version);
        let dek =
            vault::unwrap_data_key(&kek, &master, &msg.key).map_err(|_| SignerError::Tampered)?;
        let aad = vault::value_aad(&master, &msg.service, msg.version);
        vault::open_value(&dek, &aad, &msg.ciphertext).map_err(|_| SignerError::Tampered)
    }
}
