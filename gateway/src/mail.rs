//! Sending magic links: the `log` mailer (a 0600 file per message in `<data>/outbox/`, and a log
//! line that says where — never the link, which is a credential) and the `ses` mailer (Amazon
//! SES v2 `SendEmail`). Readiness asks SES for the sender identity and names exactly what is
//! missing: the identity (address or its domain), its verification, or a permission.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::MailerConfig;

/// One magic-link message.
#[derive(Clone)]
pub struct MagicLink {
    /// The recipient.
    pub to: String,
    /// The link (carries the token in its fragment).
    pub link: String,
    /// Who asked: IP address and user agent, shown in the message.
    pub requester: String,
    /// For the outbox file name.
    pub request_id: String,
}

impl std::fmt::Debug for MagicLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MagicLink")
            .field("to", &self.to)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// A message the mailers send.
pub trait Mail: Send + Sync {
    /// The recipient.
    fn to(&self) -> &str;
    /// The subject line.
    fn subject(&self) -> String;
    /// The plain-text body.
    fn body(&self) -> String;
    /// A unique name (the outbox file is named after it).
    fn id(&self) -> &str;
}

impl Mail for MagicLink {
    fn to(&self) -> &str {
        &self.to
    }

    fn id(&self) -> &str {
        &self.request_id
    }

    fn subject(&self) -> String {
        "Your AgentKeys sign-in link".into()
    }

    fn body(&self) -> String {
        format!(
            "Someone ({}) asked to sign in to AgentKeys as {}.\n\n\
             If it was you, open this link and enter the confirmation code your terminal shows:\n\n\
             {}\n\n\
             The link works once and expires in 10 minutes. If it was not you, ignore this \
             message: without the code the link does nothing.\n",
            self.requester, self.to, self.link
        )
    }
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The outbox could not be written.
    #[error("cannot write the outbox: {0}")]
    Outbox(#[from] std::io::Error),
    /// SES refused or failed.
    #[error("SES: {0}")]
    Ses(String),
}

/// The configured mailer.
#[derive(Clone)]
pub enum Mailer {
    /// Files in the outbox.
    Log {
        /// The outbox directory.
        outbox: PathBuf,
        /// The sender.
        from: String,
    },
    /// Amazon SES v2.
    Ses(Arc<SesMailer>),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Log { outbox, .. } => f.debug_struct("Log").field("outbox", outbox).finish(),
            Mailer::Ses(_) => f.write_str("Ses"),
        }
    }
}

/// The SES client, the sender, and the last readiness result.
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    from: String,
    region: String,
    ready: Mutex<Result<String, String>>,
}

impl Mailer {
    /// Builds the mailer (SES reads credentials the standard AWS way: environment, profile,
    /// instance role).
    pub async fn new(config: &MailerConfig) -> Self {
        match config {
            MailerConfig::Log { outbox, from } => Mailer::Log {
                outbox: outbox.clone(),
                from: from.clone(),
            },
            MailerConfig::Ses {
                from,
                region,
                endpoint,
            } => {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(region.clone()));
                if let Some(endpoint) = endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                let shared = loader.load().await;
                Mailer::Ses(Arc::new(SesMailer {
                    client: aws_sdk_sesv2::Client::new(&shared),
                    from: from.clone(),
                    region: region.clone(),
                    ready: Mutex::new(Err("not checked yet".into())),
                }))
            }
        }
    }

    /// The readiness entry: `Ok(detail)` or `Err(what is missing)`.
    pub fn readiness(&self) -> Result<String, String> {
        match self {
            Mailer::Log { outbox, .. } => Ok(format!("log mailer, outbox {}", outbox.display())),
            Mailer::Ses(ses) => ses
                .ready
                .lock()
                .map(|r| r.clone())
                .unwrap_or_else(|_| Err("readiness unknown".into())),
        }
    }

    /// Re-checks what readiness reports (SES: the sender identity). Called at start and then
    /// every minute.
    pub async fn refresh_readiness(&self) {
        if let Mailer::Ses(ses) = self {
            let result = ses.check_identity().await;
            if let Err(problem) = &result {
                tracing::warn!(problem = %problem, "the SES mailer is not ready");
            }
            if let Ok(mut slot) = ses.ready.lock() {
                *slot = result;
            }
        }
    }

    /// Sends one message.
    pub async fn send(&self, message: &dyn Mail) -> Result<(), MailError> {
        match self {
            Mailer::Log { outbox, from } => write_outbox(outbox, from, message),
            Mailer::Ses(ses) => ses.send(message).await,
        }
    }
}

fn write_outbox(outbox: &PathBuf, from: &str, message: &dyn Mail) -> Result<(), MailError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(outbox)?;
    let name = format!("{}.eml", message.id());
    let path = outbox.join(&name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    write!(
        file,
        "From: {from}\nTo: {}\nSubject: {}\nContent-Type: text/plain; charset=utf-8\n\n{}",
        message.to(),
        message.subject(),
        message.body()
    )?;
    file.sync_all()?;
    tracing::info!(to = %message.to(), file = %path.display(), "log mailer: message written to the outbox");
    Ok(())
}

impl SesMailer {
    async fn send(&self, message: &dyn Mail) -> Result<(), MailError> {
        use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
        let content = |text: &str| {
            Content::builder()
                .data(text)
                .charset("UTF-8")
                .build()
                .map_err(|e| MailError::Ses(e.to_string()))
        };
        let email = EmailContent::builder()
            .simple(
                Message::builder()
                    .subject(content(&message.subject())?)
                    .body(Body::builder().text(content(&message.body())?).build())
                    .build(),
            )
            .build();
        self.client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(message.to()).build())
            .content(email)
            .send()
            .await
            .map_err(|e| MailError::Ses(describe(&e)))?;
        tracing::info!(to = %message.to(), "ses mailer: message sent");
        Ok(())
    }

    /// The sender may send if SES knows it (the address, or else its domain) as verified:
    /// `VerifiedForSendingStatus`, or a `VerificationStatus` of `SUCCESS`.
    async fn check_identity(&self) -> Result<String, String> {
        let domain = self.from.rsplit_once('@').map(|(_, d)| d.to_string());
        let mut missing = Vec::new();
        for identity in std::iter::once(self.from.clone()).chain(domain) {
            match self
                .client
                .get_email_identity()
                .email_identity(&identity)
                .send()
                .await
            {
                Ok(found)
                    if found.verified_for_sending_status()
                        || found.verification_status()
                            == Some(&aws_sdk_sesv2::types::VerificationStatus::Success) =>
                {
                    return Ok(format!("ses, sender identity {identity} verified"));
                }
                Ok(_) => missing.push(format!("{identity} exists but is not verified yet")),
                Err(e) => {
                    let text = describe(&e);
                    if text.contains("AccessDenied") {
                        return Err(format!(
                            "the server's AWS credentials lack ses:GetEmailIdentity on {identity} \
                             (SendEmail needs ses:SendEmail too): {text}"
                        ));
                    }
                    if !text.contains("NotFound") {
                        return Err(format!("cannot reach SES in {}: {text}", self.region));
                    }
                    missing.push(format!("{identity} is not an identity"));
                }
            }
        }
        Err(format!(
            "SES in {} cannot send as {}: {}; create and verify the address or its domain",
            self.region,
            self.from,
            missing.join(", ")
        ))
    }
}

fn describe<E: std::error::Error>(e: &E) -> String {
    aws_sdk_sesv2::error::DisplayErrorContext(e).to_string()
}
