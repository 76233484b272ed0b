//! Every domain-separation label of AgentKeys, in one place.

/// The default `client_id`; byte-compatibility with upstream is promised for this value.
pub const DEFAULT_CLIENT_ID: &str = "agentkeys";

/// Identity type of an EVM address (`0x` + 40 lowercase hex).
pub const IDENTITY_EVM: &str = "evm";

/// Identity type of an email address (trimmed, lowercased).
pub const IDENTITY_EMAIL: &str = "email";

/// Prefix of the HDKD child-omni hash.
pub const HDKD_CHILD: &[u8] = b"agentkeys-hdkd-v1";

/// Separator between a parent omni and a child label (also the path separator).
pub const HDKD_JUNCTION: &str = "//";
