//! Configuration: embedded defaults, then a TOML file, then `AGENTKEYS_*` environment
//! variables, then command-line flags — merged here in code (never through `set_var`),
//! validated once into [`Config`], passed down by value.
//!
//! Only keys whose feature exists are accepted; an unknown key in the file, an unknown
//! `AGENTKEYS_*` variable or a bad value is an error that names the key and its source.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use agentkeys_runtime::store::Registration;
use anyhow::{Context as _, bail};
use serde::Deserialize;

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

/// The raw values of one source (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Public listener address.
    pub listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<String>,
    /// The URL clients use.
    pub public_url: Option<String>,
    /// The deployment's client id (part of every omni).
    pub client_id: Option<String>,
    /// The K3 file.
    pub k3_file: Option<String>,
    /// The Prometheus listener (`off` disables it).
    pub metrics_listen: Option<String>,
    /// Who may create a master: `open`, `allowlist` or `closed`.
    pub registration: Option<String>,
    /// How magic links are sent: `log` (outbox files) or `ses`.
    pub mailer: Option<String>,
    /// The sender address of magic links.
    pub mail_from: Option<String>,
    /// The SES region.
    pub ses_region: Option<String>,
    /// An SES endpoint URL (tests, VPC endpoints).
    pub ses_endpoint: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (comma-separated IPs or CIDRs).
    pub trusted_proxies: Option<String>,
    /// OIDC tokens in upstream's claim shape (`true` | `false`).
    pub oidc_legacy_claims: Option<String>,
    /// Seconds between publishing the next OIDC key and signing with it.
    pub oidc_switch_delay_seconds: Option<String>,
}

/// The accepted keys, their environment variables, and whether a value is secret.
const KEYS: [(&str, &str, bool); 14] = [
    ("listen", "AGENTKEYS_LISTEN", false),
    ("data_dir", "AGENTKEYS_DATA_DIR", false),
    ("public_url", "AGENTKEYS_PUBLIC_URL", false),
    ("client_id", "AGENTKEYS_CLIENT_ID", false),
    ("k3_file", "AGENTKEYS_K3_FILE", false),
    ("metrics_listen", "AGENTKEYS_METRICS_LISTEN", false),
    ("registration", "AGENTKEYS_REGISTRATION", false),
    ("mailer", "AGENTKEYS_MAILER", false),
    ("mail_from", "AGENTKEYS_MAIL_FROM", false),
    ("ses_region", "AGENTKEYS_SES_REGION", false),
    ("ses_endpoint", "AGENTKEYS_SES_ENDPOINT", false),
    ("trusted_proxies", "AGENTKEYS_TRUSTED_PROXIES", false),
    ("oidc_legacy_claims", "AGENTKEYS_OIDC_LEGACY_CLAIMS", false),
    (
        "oidc_switch_delay_seconds",
        "AGENTKEYS_OIDC_SWITCH_DELAY_SECONDS",
        false,
    ),
];

/// Variables read by the client commands, not by the server configuration.
const CLIENT_VARS: [&str; 5] = [
    "AGENTKEYS_CONFIG",
    "AGENTKEYS_PROFILE",
    "AGENTKEYS_GATEWAY",
    "AGENTKEYS_CONNECT",
    "AGENTKEYS_LOG",
];

impl Layer {
    fn get(&self, key: &str) -> Option<&String> {
        match key {
            "listen" => self.listen.as_ref(),
            "data_dir" => self.data_dir.as_ref(),
            "public_url" => self.public_url.as_ref(),
            "client_id" => self.client_id.as_ref(),
            "k3_file" => self.k3_file.as_ref(),
            "metrics_listen" => self.metrics_listen.as_ref(),
            "registration" => self.registration.as_ref(),
            "mailer" => self.mailer.as_ref(),
            "mail_from" => self.mail_from.as_ref(),
            "ses_region" => self.ses_region.as_ref(),
            "ses_endpoint" => self.ses_endpoint.as_ref(),
            "trusted_proxies" => self.trusted_proxies.as_ref(),
            "oidc_legacy_claims" => self.oidc_legacy_claims.as_ref(),
            "oidc_switch_delay_seconds" => self.oidc_switch_delay_seconds.as_ref(),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: String) {
        let slot = match key {
            "listen" => &mut self.listen,
            "data_dir" => &mut self.data_dir,
            "public_url" => &mut self.public_url,
            "client_id" => &mut self.client_id,
            "metrics_listen" => &mut self.metrics_listen,
            "registration" => &mut self.registration,
            "mailer" => &mut self.mailer,
            "mail_from" => &mut self.mail_from,
            "ses_region" => &mut self.ses_region,
            "ses_endpoint" => &mut self.ses_endpoint,
            "trusted_proxies" => &mut self.trusted_proxies,
            "oidc_legacy_claims" => &mut self.oidc_legacy_claims,
            "oidc_switch_delay_seconds" => &mut self.oidc_switch_delay_seconds,
            _ => &mut self.k3_file,
        };
        *slot = Some(value);
    }

    /// Parses a TOML file.
    pub fn from_toml(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses TOML text (unknown keys are errors).
    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The `AGENTKEYS_*` variables of `vars`; an unknown one is an error.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut layer = Layer::default();
        for (name, value) in vars {
            if !name.starts_with("AGENTKEYS_") || CLIENT_VARS.contains(&name.as_str()) {
                continue;
            }
            let Some((key, _, _)) = KEYS.iter().find(|(_, var, _)| *var == name) else {
                let known: Vec<_> = KEYS.iter().map(|(_, v, _)| *v).collect();
                bail!(
                    "unknown environment variable {name}; the server reads {}",
                    known.join(", ")
                );
            };
            layer.set(key, value);
        }
        Ok(layer)
    }
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

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `127.0.0.1` = /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<std::net::IpAddr>()?, Some(p.parse::<u8>()?)),
            None => (s.parse::<std::net::IpAddr>()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        anyhow::ensure!(prefix <= max, "prefix /{prefix} is too long");
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
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
    /// Each key's effective value and source, for `config show`.
    pub sources: BTreeMap<&'static str, (String, Source)>,
}

const DEFAULTS: [(&str, &str); 10] = [
    ("listen", "127.0.0.1:8090"),
    ("data_dir", "./agentkeys-data"),
    ("public_url", "http://127.0.0.1:8090"),
    ("client_id", "agentkeys"),
    ("metrics_listen", "127.0.0.1:9464"),
    ("mailer", "log"),
    ("mail_from", "agentkeys@localhost"),
    ("ses_region", "us-east-1"),
    ("oidc_legacy_claims", "false"),
    ("oidc_switch_delay_seconds", "86400"),
];

impl Config {
    /// Merges the layers (later wins) and validates every value once.
    pub fn resolve(file: &Layer, env: &Layer, flags: &Layer) -> anyhow::Result<Self> {
        let mut sources = BTreeMap::new();
        for (key, _, _) in KEYS {
            let default = DEFAULTS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| ((*v).to_string(), Source::Default));
            let chosen = [
                (flags, Source::Flag),
                (env, Source::Env),
                (file, Source::File),
            ]
            .into_iter()
            .find_map(|(layer, source)| layer.get(key).map(|v| (v.clone(), source)))
            .or(default);
            if let Some(value) = chosen {
                sources.insert(key, value);
            }
        }
        let value = |key: &str| {
            sources
                .get(key)
                .map(|(v, _)| v.as_str())
                .unwrap_or_default()
        };
        let origin = |key: &str| sources.get(key).map_or(Source::Default, |(_, s)| *s);
        let listen: SocketAddr = value("listen").parse().with_context(|| {
            format!(
                "listen ({}) must be an address like 127.0.0.1:8090",
                origin("listen")
            )
        })?;
        let data_dir = PathBuf::from(value("data_dir"));
        let (public_url, domain, dev_mode) = parse_public_url(value("public_url"))
            .with_context(|| format!("public_url ({})", origin("public_url")))?;
        let client_id = value("client_id").to_string();
        if client_id.is_empty()
            || !client_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!(
                "client_id ({}) must be letters, digits, '-', '_' or '.'; it is part of every omni (default agentkeys)",
                origin("client_id")
            );
        }
        let metrics_listen = match value("metrics_listen") {
            "off" => None,
            addr => Some(addr.parse::<SocketAddr>().with_context(|| {
                format!(
                    "metrics_listen ({}) must be an address like 127.0.0.1:9464, or off",
                    origin("metrics_listen")
                )
            })?),
        };
        let registration = match sources.get("registration").map(|(v, _)| v.as_str()) {
            None if dev_mode => Registration::Open,
            None => Registration::Allowlist,
            Some("open") => Registration::Open,
            Some("allowlist") => Registration::Allowlist,
            Some("closed") => Registration::Closed,
            Some(other) => bail!(
                "registration ({}) must be open, allowlist or closed, not {other:?}",
                origin("registration")
            ),
        };
        let oidc_legacy_claims = match value("oidc_legacy_claims") {
            "true" => true,
            "false" => false,
            other => bail!(
                "oidc_legacy_claims ({}) must be true or false, not {other:?}",
                origin("oidc_legacy_claims")
            ),
        };
        let oidc_switch_delay_seconds: u64 = value("oidc_switch_delay_seconds")
            .parse()
            .with_context(|| {
                format!(
                    "oidc_switch_delay_seconds ({}) must be a number of seconds",
                    origin("oidc_switch_delay_seconds")
                )
            })?;
        let registration_origin = origin("registration");
        let mailer = match value("mailer") {
            "log" => MailerConfig::Log {
                outbox: data_dir.join("outbox"),
                from: value("mail_from").to_string(),
            },
            "ses" => MailerConfig::Ses {
                from: value("mail_from").to_string(),
                region: value("ses_region").to_string(),
                endpoint: sources.get("ses_endpoint").map(|(v, _)| v.clone()),
            },
            other => bail!(
                "mailer ({}) must be log or ses, not {other:?}",
                origin("mailer")
            ),
        };
        if !value("mail_from").contains('@') {
            bail!(
                "mail_from ({}) must be an email address",
                origin("mail_from")
            );
        }
        let trusted_proxies = value("trusted_proxies")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>().with_context(|| {
                    format!(
                        "trusted_proxies ({}): {s:?} is not an IP address or CIDR",
                        origin("trusted_proxies")
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let k3_file = match sources.get("k3_file") {
            Some((path, _)) => PathBuf::from(path),
            None => data_dir.join("keys").join("k3.key"),
        };
        sources.insert(
            "k3_file",
            (k3_file.display().to_string(), origin("k3_file")),
        );
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
            k3_file,
            metrics_listen,
            registration,
            mailer,
            trusted_proxies,
            oidc_legacy_claims,
            oidc_switch_delay_seconds,
            sources,
        })
    }

    /// `key = value  (source)` lines, secrets redacted.
    pub fn show(&self) -> String {
        let mut out = String::new();
        for (key, _, secret) in KEYS {
            if let Some((value, source)) = self.sources.get(key) {
                let shown = if secret { "<redacted>" } else { value.as_str() };
                out.push_str(&format!("{key} = {shown:?}  # {source}\n"));
            }
        }
        out
    }

    /// The same as JSON: `{key: {value, source}}`.
    pub fn show_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (key, _, secret) in KEYS {
            if let Some((value, source)) = self.sources.get(key) {
                let shown = if secret {
                    "<redacted>".to_string()
                } else {
                    value.clone()
                };
                map.insert(
                    key.to_string(),
                    serde_json::json!({"value": shown, "source": source.to_string()}),
                );
            }
        }
        serde_json::Value::Object(map)
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
    let flags = Layer {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        public_url: args.public_url.clone(),
        client_id: args.client_id.clone(),
        k3_file: args.k3_file.clone(),
        metrics_listen: args.metrics_listen.clone(),
        registration: args.registration.clone(),
        mailer: args.mailer.clone(),
        mail_from: args.mail_from.clone(),
        ses_region: args.ses_region.clone(),
        ses_endpoint: args.ses_endpoint.clone(),
        trusted_proxies: args.trusted_proxies.clone(),
        oidc_legacy_claims: args.oidc_legacy_claims.clone(),
        oidc_switch_delay_seconds: args.oidc_switch_delay_seconds.clone(),
    };
    Config::resolve(&file, &env, &flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Layer {
        Layer::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .expect("known vars")
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let file: Layer = toml::from_str(
            "listen = \"127.0.0.1:1000\"\nclient_id = \"fromfile\"\ndata_dir = \"/srv/ak\"",
        )
        .expect("toml");
        let env = env(&[
            ("AGENTKEYS_LISTEN", "127.0.0.1:2000"),
            ("PATH", "/bin"),
            ("AGENTKEYS_PROFILE", "p"),
        ]);
        let flags = Layer {
            listen: Some("127.0.0.1:3000".into()),
            ..Layer::default()
        };
        let c = Config::resolve(&file, &env, &flags).expect("valid");
        assert_eq!(c.listen.port(), 3000);
        assert_eq!(c.sources["listen"].1, Source::Flag);
        assert_eq!(c.client_id, "fromfile");
        assert_eq!(c.sources["client_id"].1, Source::File);
        assert_eq!(c.public_url, "http://127.0.0.1:8090");
        assert_eq!(c.sources["public_url"].1, Source::Default);
        assert!(c.dev_mode);
        assert_eq!(c.k3_file, PathBuf::from("/srv/ak/keys/k3.key"));
        let shown = c.show();
        assert!(
            shown.contains("listen = \"127.0.0.1:3000\"  # flag"),
            "{shown}"
        );
        assert!(
            shown.contains("client_id = \"fromfile\"  # file"),
            "{shown}"
        );
        assert_eq!(c.show_json()["data_dir"]["source"], "file");
    }

    #[test]
    fn unknown_keys_and_variables_are_errors() {
        let err = toml::from_str::<Layer>("listn = \"x\"").expect_err("unknown key");
        assert!(err.to_string().contains("listn"), "{err}");
        let err = Layer::from_env([("AGENTKEYS_LISTN".to_string(), "x".to_string())])
            .expect_err("unknown var");
        assert!(err.to_string().contains("AGENTKEYS_LISTN"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_source() {
        let flags = Layer {
            public_url: Some("ftp://x".into()),
            ..Layer::default()
        };
        let err =
            Config::resolve(&Layer::default(), &Layer::default(), &flags).expect_err("bad url");
        assert!(format!("{err:#}").contains("public_url (flag)"), "{err:#}");
        let env = env(&[("AGENTKEYS_LISTEN", "nowhere")]);
        let err =
            Config::resolve(&Layer::default(), &env, &Layer::default()).expect_err("bad listen");
        assert!(format!("{err:#}").contains("listen (env)"), "{err:#}");
        let file: Layer = toml::from_str("client_id = \"a b\"").expect("toml");
        let err = Config::resolve(&file, &Layer::default(), &Layer::default())
            .expect_err("bad client_id");
        assert!(format!("{err:#}").contains("client_id (file)"), "{err:#}");
        let flags = Layer {
            public_url: Some("https://keys.example.com/".into()),
            ..Layer::default()
        };
        let c = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("valid");
        assert_eq!(
            (c.public_url.as_str(), c.domain.as_str(), c.dev_mode),
            ("https://keys.example.com", "keys.example.com", false)
        );
    }
}
