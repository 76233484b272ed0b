//! Connection settings: a `postgres://` URL (or libpq key=value string) without a password,
//! the password from a private file, TLS through rustls, and the pool size.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};

use crate::PgError;

/// Whether connections are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP or a Unix socket: `sslmode=disable`, or no `sslmode` and only loopback hosts
    /// or sockets.
    Plain,
    /// TLS through rustls, certificate checked against the system's roots (or the CA file
    /// given), never falling back to plain: `sslmode=require` (or `verify-full`), or no
    /// `sslmode` and any host that is not loopback.
    Verified,
}

/// How a node reaches PostgreSQL. `Debug` never shows the password.
#[derive(Clone)]
pub struct PgSettings {
    config: tokio_postgres::Config,
    tls: TlsMode,
    ca_file: Option<std::path::PathBuf>,
    pool_size: usize,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field(
                "password",
                &self.config.get_password().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The pool size when none is set: enough for a node's writer, its readers and its listener.
const DEFAULT_POOL_SIZE: usize = 16;

impl PgSettings {
    /// Parses `url` (`postgres://user@host:port/db?sslmode=…` or `host=… user=…`). A password
    /// inside it is refused: it would sit in configuration files and process listings; give it
    /// with [`with_password_file`](Self::with_password_file).
    pub fn parse(url: &str) -> Result<Self, PgError> {
        // `verify-full` is libpq's name for what `require` does here; tokio-postgres knows
        // only `disable`, `prefer` and `require`.
        let normalized = url.replace("sslmode=verify-full", "sslmode=require");
        let mut config: tokio_postgres::Config = normalized
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Config(e.to_string()))?;
        if config.get_password().is_some() {
            return Err(PgError::Config(
                "the URL carries a password; put it in a file readable only by this user and \
                 name that file instead"
                    .into(),
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(PgError::Config("the URL names no host".into()));
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => TlsMode::Plain,
            SslMode::Prefer if config.get_hosts().iter().all(is_local) => TlsMode::Plain,
            // `prefer` would fall back to plain text if the server declines: never.
            _ => TlsMode::Verified,
        };
        config.ssl_mode(match tls {
            TlsMode::Plain => SslMode::Disable,
            TlsMode::Verified => SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("agentkeys");
        }
        Ok(Self {
            config,
            tls,
            ca_file: None,
            pool_size: DEFAULT_POOL_SIZE,
        })
    }

    /// Reads the password from `path`, which must be a regular file that neither the group nor
    /// others can read (mode 0600 or stricter); a trailing newline is dropped.
    pub fn with_password_file(mut self, path: &Path) -> Result<Self, PgError> {
        let bad = |why: String| PgError::Password {
            path: path.display().to_string(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode {mode:04o} lets others read it; chmod 600 it"
            )));
        }
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
        let end = bytes
            .iter()
            .rposition(|b| *b != b'\n' && *b != b'\r')
            .map_or(0, |i| i + 1);
        if end == 0 {
            return Err(bad("it is empty".into()));
        }
        self.config.password(&bytes[..end]);
        Ok(self)
    }

    /// Checks the server's certificate against the PEM certificates in `path` as well (a
    /// private CA, as libpq's `sslrootcert`).
    pub fn with_ca_file(mut self, path: &Path) -> Self {
        self.ca_file = Some(path.to_path_buf());
        self
    }

    /// The most connections the node's pool opens.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Whether connections are encrypted.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    /// The connection pool (connections are opened on first use).
    pub fn pool(&self) -> Result<Pool, PgError> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match self.tls {
            TlsMode::Plain => {
                Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            TlsMode::Verified => Manager::from_config(
                self.config.clone(),
                tokio_postgres_rustls::MakeRustlsConnect::new(self.rustls()?),
                manager_config,
            ),
        };
        // Bounded waits: a database that does not answer (a black-holed address, an exhausted
        // pool) fails the request as unreachable instead of holding it until TCP gives up.
        Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))
    }

    /// Opens single connections outside the pool (the notification listener's).
    pub(crate) fn connector(&self) -> Result<Connector, PgError> {
        Ok(Connector {
            config: self.config.clone(),
            tls: match self.tls {
                TlsMode::Plain => None,
                TlsMode::Verified => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                    self.rustls()?,
                )),
            },
        })
    }

    fn rustls(&self) -> Result<rustls::ClientConfig, PgError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system certificate rustls cannot parse is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = &self.ca_file {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| PgError::Config(format!("CA file {}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| PgError::Config(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| PgError::Config(format!("CA file {}: {e}", path.display())))?;
            }
        }
        if roots.is_empty() {
            return Err(PgError::Config(
                "TLS is required but no trusted certificate was found (system roots or CA file)"
                    .into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Opens one connection at a time with the settings' TLS mode.
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    /// Connects, listens on `channel` and forwards what it hears until the connection breaks.
    pub(crate) async fn listen(
        &self,
        channel: &str,
        heard: Arc<dyn Fn(crate::cluster::Heard) + Send + Sync>,
    ) -> Result<(), PgError> {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                crate::cluster::forward(client, connection, channel, heard).await
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                crate::cluster::forward(client, connection, channel, heard).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused() {
        let err = PgSettings::parse("postgres://u:secret@db.example:5432/ak").expect_err("refused");
        assert!(matches!(err, PgError::Config(_)));
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn tls_is_required_off_loopback_and_never_preferred() {
        let remote = PgSettings::parse("postgres://u@db.example/ak").expect("parses");
        assert_eq!(remote.tls(), TlsMode::Verified);
        let asked = PgSettings::parse("postgres://u@127.0.0.1/ak?sslmode=require").expect("ok");
        assert_eq!(asked.tls(), TlsMode::Verified);
        let full = PgSettings::parse("postgres://u@db.example/ak?sslmode=verify-full").expect("ok");
        assert_eq!(full.tls(), TlsMode::Verified);
        let local = PgSettings::parse("postgres://u@127.0.0.1:5433/ak").expect("parses");
        assert_eq!(local.tls(), TlsMode::Plain);
        let off = PgSettings::parse("postgres://u@db.example/ak?sslmode=disable").expect("ok");
        assert_eq!(off.tls(), TlsMode::Plain);
    }

    #[test]
    fn the_password_file_must_be_private_and_is_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "s3cret-pass\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let settings = PgSettings::parse("postgres://u@127.0.0.1/ak").expect("parses");
        let err = settings
            .clone()
            .with_password_file(&path)
            .expect_err("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let with = settings.with_password_file(&path).expect("private file");
        assert_eq!(with.config.get_password(), Some(&b"s3cret-pass"[..]));
        let shown = format!("{with:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
