//! Configuration: embedded defaults, then a TOML file, then `AGENTKEYS_*` environment
//! variables, then command-line flags — merged here in code (never through `set_var`),
//! validated once into [`Config`], passed down by value.
//!
//! One table, [`KEYS`], names every key with its environment variable, its type and its
//! default; the TOML file, the environment and the flags (`--set KEY=VALUE`, plus a named flag
//! for the common keys) all go through it. Values are typed: a boolean is a TOML boolean, a
//! number a TOML integer, a duration an integer of seconds or a string with a unit (`90s`,
//! `15m`, `1h`, `30d`), a list a TOML array (or a comma-separated string in the environment
//! and on the command line). An unknown key in the file, an unknown `AGENTKEYS_*` variable
//! that neither the server nor the CLI reads, or a bad value is an error that names the key
//! and its source.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentkeys_actors::ledger::Registration;
use anyhow::{Context as _, bail};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The embedded default.
    Default,
    /// The TOML file.
    File,
    /// An `AGENTKEYS_*` variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
        })
    }
}

/// The type of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// `true` or `false`.
    Bool,
    /// A non-negative integer.
    Integer,
    /// Seconds: an integer, or a string with a unit (`s`, `m`, `h`, `d`).
    Seconds,
    /// A list: a TOML array, or comma-separated text.
    List,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Bool => "a boolean (true or false)",
            Kind::Integer => "a non-negative integer",
            Kind::Seconds => "a duration (seconds, or a string such as \"90s\", \"15m\", \"1h\")",
            Kind::List => "a list",
        }
    }
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The TOML name (also the name after `--set`).
    pub name: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The value's type.
    pub kind: Kind,
    /// The embedded default, as text (`None`: computed or absent).
    pub default: Option<&'static str>,
}

const fn key(
    name: &'static str,
    env: &'static str,
    kind: Kind,
    default: Option<&'static str>,
) -> Key {
    Key {
        name,
        env,
        kind,
        default,
    }
}

/// Every key the server reads (docs/configuration.md has the meanings).
pub const KEYS: [Key; 34] = [
    key(
        "listen",
        "AGENTKEYS_LISTEN",
        Kind::Text,
        Some("127.0.0.1:8090"),
    ),
    key(
        "data_dir",
        "AGENTKEYS_DATA_DIR",
        Kind::Text,
        Some("./agentkeys-data"),
    ),
    key(
        "public_url",
        "AGENTKEYS_PUBLIC_URL",
        Kind::Text,
        Some("http://127.0.0.1:8090"),
    ),
    key(
        "client_id",
        "AGENTKEYS_CLIENT_ID",
        Kind::Text,
        Some("agentkeys"),
    ),
    key("k3_file", "AGENTKEYS_K3_FILE", Kind::Text, None),
    key("store", "AGENTKEYS_STORE", Kind::Text, Some("redb")),
    key(
        "store_password_file",
        "AGENTKEYS_STORE_PASSWORD_FILE",
        Kind::Text,
        None,
    ),
    key("store_ca_file", "AGENTKEYS_STORE_CA_FILE", Kind::Text, None),
    key("node_name", "AGENTKEYS_NODE_NAME", Kind::Text, None),
    key("active_nodes", "AGENTKEYS_ACTIVE_NODES", Kind::Text, None),
    key(
        "metrics_listen",
        "AGENTKEYS_METRICS_LISTEN",
        Kind::Text,
        Some("127.0.0.1:9464"),
    ),
    key("registration", "AGENTKEYS_REGISTRATION", Kind::Text, None),
    key("mailer", "AGENTKEYS_MAILER", Kind::Text, Some("log")),
    key(
        "mail_from",
        "AGENTKEYS_MAIL_FROM",
        Kind::Text,
        Some("agentkeys@localhost"),
    ),
    key(
        "ses_region",
        "AGENTKEYS_SES_REGION",
        Kind::Text,
        Some("us-east-1"),
    ),
    key("ses_endpoint", "AGENTKEYS_SES_ENDPOINT", Kind::Text, None),
    key(
        "trusted_proxies",
        "AGENTKEYS_TRUSTED_PROXIES",
        Kind::List,
        Some(""),
    ),
    key(
        "oidc_legacy_claims",
        "AGENTKEYS_OIDC_LEGACY_CLAIMS",
        Kind::Bool,
        Some("false"),
    ),
    key(
        "oidc_switch_delay_seconds",
        "AGENTKEYS_OIDC_SWITCH_DELAY_SECONDS",
        Kind::Seconds,
        Some("86400"),
    ),
    key(
        "siwe_chains",
        "AGENTKEYS_SIWE_CHAINS",
        Kind::List,
        Some("1"),
    ),
    key(
        "session_ttl_seconds",
        "AGENTKEYS_SESSION_TTL_SECONDS",
        Kind::Seconds,
        Some("900"),
    ),
    key(
        "refresh_max_age_seconds",
        "AGENTKEYS_REFRESH_MAX_AGE_SECONDS",
        Kind::Seconds,
        Some("2592000"),
    ),
    key(
        "dpop_skew_seconds",
        "AGENTKEYS_DPOP_SKEW_SECONDS",
        Kind::Seconds,
        Some("60"),
    ),
    key(
        "binding_rate_per_second",
        "AGENTKEYS_BINDING_RATE_PER_SECOND",
        Kind::Integer,
        Some("10000"),
    ),
    key(
        "binding_burst",
        "AGENTKEYS_BINDING_BURST",
        Kind::Integer,
        Some("10000"),
    ),
    key(
        "ip_rate_per_second",
        "AGENTKEYS_IP_RATE_PER_SECOND",
        Kind::Integer,
        Some("1"),
    ),
    key("ip_burst", "AGENTKEYS_IP_BURST", Kind::Integer, Some("60")),
    key(
        "email_links_per_hour",
        "AGENTKEYS_EMAIL_LINKS_PER_HOUR",
        Kind::Integer,
        Some("5"),
    ),
    key(
        "email_links_per_hour_ceiling",
        "AGENTKEYS_EMAIL_LINKS_PER_HOUR_CEILING",
        Kind::Integer,
        Some("20"),
    ),
    key(
        "pending_per_client",
        "AGENTKEYS_PENDING_PER_CLIENT",
        Kind::Integer,
        Some("16"),
    ),
    key(
        "pending_cap",
        "AGENTKEYS_PENDING_CAP",
        Kind::Integer,
        Some("10000"),
    ),
    key(
        "store_cache_mib",
        "AGENTKEYS_STORE_CACHE_MIB",
        Kind::Integer,
        Some("64"),
    ),
    key(
        "request_timeout_seconds",
        "AGENTKEYS_REQUEST_TIMEOUT_SECONDS",
        Kind::Seconds,
        Some("30"),
    ),
    key(
        "webhook_backoff_ms",
        "AGENTKEYS_WEBHOOK_BACKOFF_MS",
        Kind::Integer,
        Some("1000"),
    ),
];

/// Variables read by the client commands (the CLI), not by the server configuration.
pub const CLIENT_VARS: [&str; 6] = [
    "AGENTKEYS_CONFIG",
    "AGENTKEYS_PROFILE",
    "AGENTKEYS_GATEWAY",
    "AGENTKEYS_CONNECT",
    "AGENTKEYS_LOG",
    "AGENTKEYS_STS_ENDPOINT",
];

fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn known_names() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The raw values of one source, as canonical text by key name (every key optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    values: BTreeMap<&'static str, String>,
    /// `[[oidc_providers]]` (only a file sets them).
    oidc_providers: Option<Vec<crate::openid::ProviderConfig>>,
}

impl Layer {
    /// `self` with `name` set to `value` (text as on the command line). Unknown names are a
    /// programming error in the caller; they are refused by [`Layer::set`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        if let Err(e) = self.set(name, value.into()) {
            debug_assert!(false, "{e}");
        }
        self
    }

    /// Sets `name` from text (environment and flags).
    pub fn set(&mut self, name: &str, value: String) -> anyhow::Result<()> {
        let key = find_key(name).with_context(|| {
            format!(
                "unknown configuration key {name:?}; the keys are {}",
                known_names()
            )
        })?;
        self.values.insert(key.name, value);
        Ok(())
    }

    /// The text of `name`, if this layer sets it.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.values.get(name)
    }

    /// Parses a TOML file.
    pub fn from_toml(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses TOML text: unknown keys and values of the wrong type are errors.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        let table: toml::Table = toml::from_str(text)?;
        let mut layer = Layer::default();
        for (name, value) in table {
            if name == "oidc_providers" {
                layer.oidc_providers = Some(crate::openid::parse_file_tables(&value)?);
                continue;
            }
            let key = find_key(&name)
                .with_context(|| format!("unknown key {name:?}; the keys are {}", known_names()))?;
            let text = toml_text(key, &value)
                .with_context(|| format!("{name} (file) must be {}", key.kind.expected()))?;
            layer.values.insert(key.name, text);
        }
        Ok(layer)
    }

    /// The `AGENTKEYS_*` variables of `vars`; one that neither the server nor the CLI reads is
    /// an error.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut layer = Layer::default();
        for (name, value) in vars {
            if !name.starts_with("AGENTKEYS_") || CLIENT_VARS.contains(&name.as_str()) {
                continue;
            }
            let Some(key) = KEYS.iter().find(|k| k.env == name) else {
                let known: Vec<_> = KEYS.iter().map(|k| k.env).chain(CLIENT_VARS).collect();
                bail!(
                    "unknown environment variable {name}; AgentKeys reads {}",
                    known.join(", ")
                );
            };
            layer.values.insert(key.name, value);
        }
        Ok(layer)
    }
}

/// A TOML value as the canonical text of its key's type, or `None` if the type is wrong.
fn toml_text(key: &Key, value: &toml::Value) -> Option<String> {
    use toml::Value as V;
    match (key.kind, value) {
        (Kind::Text, V::String(s)) => Some(s.clone()),
        (Kind::Bool, V::Boolean(b)) => Some(b.to_string()),
        (Kind::Integer | Kind::Seconds, V::Integer(n)) if *n >= 0 => Some(n.to_string()),
        (Kind::Seconds, V::String(s)) => Some(s.clone()),
        (Kind::List, V::Array(items)) => items
            .iter()
            .map(|item| match item {
                V::String(s) if !s.contains(',') => Some(s.clone()),
                V::Integer(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        (Kind::List, V::String(s)) => Some(s.clone()),
        _ => None,
    }
}
/// Where the state lives.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// `<data_dir>/agentkeys.redb` (embedded; the default).
    Redb,
    /// A PostgreSQL database (docs/multi-node.md).
    Postgres {
        /// Connection settings (the password, if any, read from its file).
        settings: Box<agentkeys_pg::PgSettings>,
        /// This node's name in the database's node list (`node_name`; default the host name).
        node_name: String,
        /// Whether every node serves at once (`active_nodes = "all"`) or one at a time with
        /// standbys (`"one"`).
        all_active: bool,
    },
}

/// How magic links are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailerConfig {
    /// Writes each message to `outbox` (0600 files) and logs where.
    Log {
        /// `<data_dir>/outbox`.
        outbox: PathBuf,
        /// The sender.
        from: String,
    },
    /// Amazon SES v2 `SendEmail`.
    Ses {
        /// The sender identity.
        from: String,
        /// The region.
        region: String,
        /// An endpoint override.
        endpoint: Option<String>,
    },
}

/// An IP network (`10.0.0.0/8`; a bare address is its own /32 or /128), on `ipnet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl std::str::FromStr for IpNet {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => ipnet::IpNet::from(s.parse::<std::net::IpAddr>()?),
        };
        Ok(Self(net))
    }
}

impl IpNet {
    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// The limits that keep one client from taking what others need (docs/security.md, "Denial of
/// service"), and the lifetimes of sessions and proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Session token lifetime.
    pub session_ttl_seconds: i64,
    /// How old (by `iat`) a session may be and still be refreshed.
    pub refresh_max_age_seconds: i64,
    /// Allowed clock difference of DPoP proofs and tokens.
    pub dpop_skew_seconds: i64,
    /// Sustained authenticated requests per second per device binding.
    pub binding_rate_per_second: u64,
    /// Authenticated requests a binding may burst.
    pub binding_burst: u64,
    /// Sustained requests per second per client address on the routes without a session.
    pub ip_rate_per_second: u64,
    /// Requests a client address may burst on those routes.
    pub ip_burst: u64,
    /// Magic links per hour for one address asked by one client.
    pub email_links_per_hour: u64,
    /// Magic links per hour for one address, all clients together.
    pub email_links_per_hour_ceiling: u64,
    /// Outstanding logins and pairings per client (address or DPoP key) and kind.
    pub pending_per_client: u64,
    /// Outstanding logins and pairings of one kind, all clients together.
    pub pending_cap: u64,
    /// Longest a request may run.
    pub request_timeout_seconds: u64,
    /// The store's page cache, MiB (bounds the memory the store uses).
    pub store_cache_mib: u64,
    /// First wait before an approval webhook delivery is retried (doubles each time).
    pub webhook_backoff_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_defaults()
    }
}

impl Limits {
    /// The embedded defaults.
    pub fn from_defaults() -> Self {
        Config::resolve(&Layer::default(), &Layer::default(), &Layer::default())
            .map(|c| c.limits)
            .expect("the embedded defaults are valid (checked by the defaults test)")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Public URL without a trailing slash.
    pub public_url: String,
    /// host[:port] of the public URL (the SIWE domain).
    pub domain: String,
    /// A loopback public URL: dev mode (K3 may be generated for a new store).
    pub dev_mode: bool,
    /// The deployment's client id.
    pub client_id: String,
    /// Where the state lives (`store`).
    pub store: StoreBackend,
    /// The K3 file.
    pub k3_file: PathBuf,
    /// The Prometheus listener, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Who may create a master (default: `open` in dev mode, else `allowlist`).
    pub registration: Registration,
    /// How magic links are sent.
    pub mailer: MailerConfig,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<IpNet>,
    /// OIDC tokens in upstream's claim shape.
    pub oidc_legacy_claims: bool,
    /// Seconds between publishing the next OIDC key and signing with it.
    pub oidc_switch_delay_seconds: u64,
    /// Chain ids accepted in SIWE messages.
    pub siwe_chains: Vec<u64>,
    /// Lifetimes and per-client limits.
    pub limits: Limits,
    /// OpenID providers users may log in with (`[[oidc_providers]]` in the file).
    pub oidc_providers: Vec<crate::openid::ProviderConfig>,
    /// Each key's effective value and source, for `config show`.
    pub sources: BTreeMap<&'static str, (String, Source)>,
}

/// Reads typed values of the merged layers; errors name the key and its source.
struct Values {
    sources: BTreeMap<&'static str, (String, Source)>,
}

impl Values {
    fn text(&self, key: &str) -> &str {
        self.sources
            .get(key)
            .map(|(v, _)| v.as_str())
            .unwrap_or_default()
    }

    fn origin(&self, key: &str) -> Source {
        self.sources.get(key).map_or(Source::Default, |(_, s)| *s)
    }

    fn bool(&self, key: &str) -> anyhow::Result<bool> {
        match self.text(key) {
            "true" => Ok(true),
            "false" => Ok(false),
            other => bail!(
                "{key} ({}) must be true or false, not {other:?}",
                self.origin(key)
            ),
        }
    }

    fn integer(&self, key: &str, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<u64> {
        let n: u64 = self.text(key).trim().parse().with_context(|| {
            format!(
                "{key} ({}) must be a non-negative integer",
                self.origin(key)
            )
        })?;
        if !range.contains(&n) {
            bail!(
                "{key} ({}) must be between {} and {}, not {n}",
                self.origin(key),
                range.start(),
                range.end()
            );
        }
        Ok(n)
    }

    fn seconds(&self, key: &str, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<u64> {
        let n = parse_seconds(self.text(key)).with_context(|| {
            format!(
                "{key} ({}) must be {}",
                self.origin(key),
                Kind::Seconds.expected()
            )
        })?;
        if !range.contains(&n) {
            bail!(
                "{key} ({}) must be between {} and {} seconds, not {n}",
                self.origin(key),
                range.start(),
                range.end()
            );
        }
        Ok(n)
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.text(key)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

/// `90`, `90s`, `15m`, `1h`, `30d` → seconds.
pub fn parse_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

fn parse_store(v: &Values) -> anyhow::Result<StoreBackend> {
    let url = v.text("store");
    let optional = |name: &str| v.sources.get(name).map(|(s, _)| s.as_str());
    if url == "redb" {
        for name in ["store_password_file", "store_ca_file", "active_nodes"] {
            if optional(name).is_some() {
                bail!(
                    "{name} ({}) is only used with store = \"postgres://…\"",
                    v.origin(name)
                );
            }
        }
        return Ok(StoreBackend::Redb);
    }
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        bail!(
            "store ({}) must be redb or a postgres:// URL",
            v.origin("store")
        );
    }
    let mut settings = agentkeys_pg::PgSettings::parse(url)
        .with_context(|| format!("store ({})", v.origin("store")))?;
    if let Some(path) = optional("store_password_file") {
        settings = settings
            .with_password_file(Path::new(path))
            .with_context(|| {
                format!("store_password_file ({})", v.origin("store_password_file"))
            })?;
    }
    if let Some(path) = optional("store_ca_file") {
        settings = settings.with_ca_file(Path::new(path));
    }
    let node_name = optional("node_name")
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "agentkeys".into());
    let all_active = match optional("active_nodes").unwrap_or("all") {
        "one" => false,
        "all" => true,
        _ => bail!(
            "active_nodes ({}) must be \"one\" or \"all\"",
            v.origin("active_nodes")
        ),
    };
    Ok(StoreBackend::Postgres {
        settings: Box::new(settings),
        node_name,
        all_active,
    })
}

fn secs(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Config {
    /// Merges the layers (later wins) and validates every value once.
    pub fn resolve(file: &Layer, env: &Layer, flags: &Layer) -> anyhow::Result<Self> {
        let mut sources = BTreeMap::new();
        for key in KEYS {
            let chosen = [
                (flags, Source::Flag),
                (env, Source::Env),
                (file, Source::File),
            ]
            .into_iter()
            .find_map(|(layer, source)| layer.get(key.name).map(|v| (v.clone(), source)))
            .or(key.default.map(|v| (v.to_string(), Source::Default)));
            if let Some(value) = chosen {
                sources.insert(key.name, value);
            }
        }
        let v = Values { sources };
        let listen: SocketAddr = v.text("listen").parse().with_context(|| {
            format!(
                "listen ({}) must be an address like 127.0.0.1:8090",
                v.origin("listen")
            )
        })?;
        let data_dir = PathBuf::from(v.text("data_dir"));
        let (public_url, domain, dev_mode) = parse_public_url(v.text("public_url"))
            .with_context(|| format!("public_url ({})", v.origin("public_url")))?;
        let client_id = v.text("client_id").to_string();
        if client_id.is_empty()
            || !client_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!(
                "client_id ({}) must be letters, digits, '-', '_' or '.'; it is part of every omni (default agentkeys)",
                v.origin("client_id")
            );
        }
        let metrics_listen = match v.text("metrics_listen") {
            "off" => None,
            addr => Some(addr.parse::<SocketAddr>().with_context(|| {
                format!(
                    "metrics_listen ({}) must be an address like 127.0.0.1:9464, or off",
                    v.origin("metrics_listen")
                )
            })?),
        };
        let registration = match v.sources.get("registration").map(|(s, _)| s.as_str()) {
            None if dev_mode => Registration::Open,
            None => Registration::Allowlist,
            Some("open") => Registration::Open,
            Some("allowlist") => Registration::Allowlist,
            Some("closed") => Registration::Closed,
            Some(other) => bail!(
                "registration ({}) must be open, allowlist or closed, not {other:?}",
                v.origin("registration")
            ),
        };
        let mailer = match v.text("mailer") {
            "log" => MailerConfig::Log {
                outbox: data_dir.join("outbox"),
                from: v.text("mail_from").to_string(),
            },
            "ses" => MailerConfig::Ses {
                from: v.text("mail_from").to_string(),
                region: v.text("ses_region").to_string(),
                endpoint: v.sources.get("ses_endpoint").map(|(s, _)| s.clone()),
            },
            other => bail!(
                "mailer ({}) must be log or ses, not {other:?}",
                v.origin("mailer")
            ),
        };
        if !v.text("mail_from").contains('@') {
            bail!(
                "mail_from ({}) must be an email address",
                v.origin("mail_from")
            );
        }
        let trusted_proxies = v
            .list("trusted_proxies")
            .iter()
            .map(|s| {
                s.parse::<IpNet>().with_context(|| {
                    format!(
                        "trusted_proxies ({}): {s:?} is not an IP address or CIDR",
                        v.origin("trusted_proxies")
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let siwe_chains = v
            .list("siwe_chains")
            .iter()
            .map(|s| s.parse::<u64>().ok().filter(|n| *n > 0))
            .collect::<Option<Vec<_>>>()
            .filter(|chains| !chains.is_empty())
            .with_context(|| {
                format!(
                    "siwe_chains ({}) must be a non-empty list of EIP-155 chain ids, e.g. [1, 84532]",
                    v.origin("siwe_chains")
                )
            })?;
        let limits = Limits {
            session_ttl_seconds: secs(v.seconds("session_ttl_seconds", 60..=86_400)?),
            refresh_max_age_seconds: secs(v.seconds("refresh_max_age_seconds", 0..=366 * 86_400)?),
            dpop_skew_seconds: secs(v.seconds("dpop_skew_seconds", 1..=600)?),
            binding_rate_per_second: v.integer("binding_rate_per_second", 1..=1_000_000)?,
            binding_burst: v.integer("binding_burst", 1..=10_000_000)?,
            ip_rate_per_second: v.integer("ip_rate_per_second", 1..=1_000_000)?,
            ip_burst: v.integer("ip_burst", 1..=10_000_000)?,
            email_links_per_hour: v.integer("email_links_per_hour", 1..=1000)?,
            email_links_per_hour_ceiling: v.integer("email_links_per_hour_ceiling", 1..=10_000)?,
            pending_per_client: v.integer("pending_per_client", 1..=10_000)?,
            pending_cap: v.integer("pending_cap", 1..=10_000_000)?,
            request_timeout_seconds: v.seconds("request_timeout_seconds", 1..=3600)?,
            store_cache_mib: v.integer("store_cache_mib", 1..=65_536)?,
            webhook_backoff_ms: v.integer("webhook_backoff_ms", 1..=600_000)?,
        };
        if limits.email_links_per_hour > limits.email_links_per_hour_ceiling {
            bail!(
                "email_links_per_hour ({}) must not exceed email_links_per_hour_ceiling ({})",
                v.origin("email_links_per_hour"),
                v.origin("email_links_per_hour_ceiling")
            );
        }
        let oidc_legacy_claims = v.bool("oidc_legacy_claims")?;
        let oidc_switch_delay_seconds = v.seconds("oidc_switch_delay_seconds", 0..=365 * 86_400)?;
        let k3_file = match v.sources.get("k3_file") {
            Some((path, _)) => PathBuf::from(path),
            None => data_dir.join("keys").join("k3.key"),
        };
        let store = parse_store(&v)?;
        let oidc_providers = file.oidc_providers.clone().unwrap_or_default();
        let Values { mut sources } = v;
        let k3_origin = sources.get("k3_file").map_or(Source::Default, |(_, s)| *s);
        sources.insert("k3_file", (k3_file.display().to_string(), k3_origin));
        let registration_origin = sources
            .get("registration")
            .map_or(Source::Default, |(_, s)| *s);
        sources.insert(
            "registration",
            (
                format!("{registration:?}").to_lowercase(),
                registration_origin,
            ),
        );
        Ok(Self {
            listen,
            data_dir,
            public_url,
            domain,
            dev_mode,
            client_id,
            store,
            k3_file,
            metrics_listen,
            registration,
            mailer,
            trusted_proxies,
            oidc_legacy_claims,
            oidc_switch_delay_seconds,
            siwe_chains,
            limits,
            oidc_providers,
            sources,
        })
    }

    /// What is valid but probably not meant (printed by `config check`).
    pub fn warnings(&self) -> Vec<String> {
        self.oidc_providers
            .iter()
            .flat_map(crate::openid::ProviderConfig::warnings)
            .collect()
    }

    /// `key = value  (source)` lines.
    pub fn show(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            if let Some((value, source)) = self.sources.get(key.name) {
                out.push_str(&format!("{} = {value:?}  # {source}\n", key.name));
            }
        }
        for p in &self.oidc_providers {
            out.push_str(&format!(
                "oidc_providers.{} = {{ issuer = {:?}, client_id = {:?}, identity_type = {:?} }}  # file\n",
                p.name,
                p.issuer,
                p.client_id,
                p.identity_type.as_str()
            ));
        }
        out
    }

    /// The same as JSON: `{key: {value, source}}`.
    pub fn show_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for key in KEYS {
            if let Some((value, source)) = self.sources.get(key.name) {
                map.insert(
                    key.name.to_string(),
                    serde_json::json!({"value": value, "source": source.to_string()}),
                );
            }
        }
        let providers: Vec<_> = self
            .oidc_providers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name, "issuer": p.issuer, "client_id": p.client_id,
                    "identity_type": p.identity_type.as_str(),
                    "client_secret_file": p.client_secret_file.display().to_string(),
                })
            })
            .collect();
        map.insert(
            "oidc_providers".into(),
            serde_json::json!({"value": providers, "source": "file"}),
        );
        serde_json::Value::Object(map)
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.request_timeout_seconds)
    }
}

/// Validates a public URL: `scheme://host[:port]`, no path. Returns (url, domain, dev mode).
fn parse_public_url(raw: &str) -> anyhow::Result<(String, String, bool)> {
    let url = raw.trim_end_matches('/').to_string();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("{url:?} must start with http:// or https://"))?;
    anyhow::ensure!(
        !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '@']),
        "{url:?} must be scheme://host[:port] with no path, query, fragment or credentials"
    );
    let domain = rest.to_string();
    let host = domain
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(domain.as_str(), |(host, _)| host);
    let dev_mode = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    Ok((url, domain, dev_mode))
}

/// The flags of a command as a layer: the named flags, then every `--set KEY=VALUE`.
pub fn flag_layer(args: &crate::cli::ConfigArgs) -> anyhow::Result<Layer> {
    let mut flags = Layer::default();
    let named = [
        ("listen", &args.listen),
        ("data_dir", &args.data_dir),
        ("public_url", &args.public_url),
        ("client_id", &args.client_id),
        ("k3_file", &args.k3_file),
        ("metrics_listen", &args.metrics_listen),
        ("registration", &args.registration),
        ("mailer", &args.mailer),
        ("mail_from", &args.mail_from),
        ("ses_region", &args.ses_region),
        ("ses_endpoint", &args.ses_endpoint),
        ("trusted_proxies", &args.trusted_proxies),
        ("oidc_legacy_claims", &args.oidc_legacy_claims),
        ("oidc_switch_delay_seconds", &args.oidc_switch_delay_seconds),
    ];
    for (name, value) in named {
        if let Some(value) = value {
            flags.set(name, value.clone())?;
        }
    }
    for pair in &args.set {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--set {pair:?}: write KEY=VALUE"))?;
        flags
            .set(name.trim(), value.to_string())
            .with_context(|| format!("--set {pair:?}"))?;
    }
    Ok(flags)
}

/// Resolves the configuration of a command: `--config` (or `AGENTKEYS_CONFIG`), the process
/// environment, then the flags.
pub fn load(args: &crate::cli::ConfigArgs) -> anyhow::Result<Config> {
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("AGENTKEYS_CONFIG").map(PathBuf::from));
    let file = match &path {
        Some(path) => Layer::from_toml(path)?,
        None => Layer::default(),
    };
    let env = Layer::from_env(std::env::vars())?;
    Config::resolve(&file, &env, &flag_layer(args)?)
}

#[cfg(test)]
mod tests;
