//! Telling a master that a request waits for approval when nobody is watching: a POST to the
//! master's webhook (signed with HMAC-SHA256 under a key the signer derives from K3; retried
//! with backoff) and an email to a master that logged in by email (docs/policies.md,
//! "Notifications").
//!
//! Deliveries run on their own tasks behind a bounded queue; a slow or failing endpoint delays
//! nothing else, and a full queue drops the notice with a warning (the approval itself is
//! durable and listed by `GET /v1/approvals`).

use std::sync::Arc;
use std::time::Duration;

use agentkeys_actors::crypto::rfc3339;
use agentkeys_actors::ledger::Ledger;
use agentkeys_actors::signer::SignerHandle;
use agentkeys_runtime::{Clock, Omni};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::mail::{Mail, Mailer};

/// Deliveries attempted per notice (the first and five retries).
pub const ATTEMPTS: u32 = 6;
/// Notices waiting for delivery.
const QUEUE: usize = 1024;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 16;
/// Longest one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One thing to tell a master.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The master.
    pub master: Omni,
    /// The event name (`approval_requested`).
    pub event: &'static str,
    /// The approval as the API shows it (never a result or a secret).
    pub approval: Value,
}

/// Whether someone watches the master's events (then nothing is sent).
pub trait Watching: Send + Sync + 'static {
    /// An event stream of `master` is open.
    fn watching(&self, master: &Omni) -> bool;
}

/// The queue of notices.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Notice>,
}

struct Worker {
    ledger: Ledger,
    signer: SignerHandle,
    mailer: Mailer,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    backoff: Duration,
    watching: Arc<dyn Watching>,
    slots: Arc<Semaphore>,
}

impl Notifier {
    /// Starts the delivery task.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        ledger: Ledger,
        signer: SignerHandle,
        mailer: Mailer,
        clock: Arc<dyn Clock>,
        backoff: Duration,
        watching: Arc<dyn Watching>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let worker = Arc::new(Worker {
            ledger,
            signer,
            mailer,
            clock,
            http,
            backoff,
            watching,
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        });
        let task = tokio::spawn(async move {
            while let Some(notice) = rx.recv().await {
                let worker = worker.clone();
                let Ok(slot) = worker.slots.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(async move {
                    worker.deliver(notice).await;
                    drop(slot);
                });
            }
        });
        (Self { tx }, task)
    }

    /// Queues a notice (dropped with a warning when the queue is full).
    pub fn notify(&self, notice: Notice) {
        if self.tx.try_send(notice).is_err() {
            tracing::warn!("the notification queue is full; a notice was dropped");
        }
    }
}

/// The mail telling a master about a waiting request (no link: approving needs a session).
struct ApprovalMail {
    to: String,
    id: String,
    approval: Value,
}

/// An approval's spends for people: `5000 native on chain 1, 7 0xA0b8… on chain 1`.
pub fn spends_text(spends: &Value) -> String {
    spends
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} {} on chain {}",
                s["amount"].as_str().unwrap_or("?"),
                s["asset"].as_str().unwrap_or("?"),
                s["chain"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Mail for ApprovalMail {
    fn to(&self) -> &str {
        &self.to
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn subject(&self) -> String {
        "An AgentKeys request waits for your approval".into()
    }

    fn body(&self) -> String {
        let a = &self.approval;
        let spends = spends_text(&a["spends"]);
        format!(
            "Agent {} asked to sign through {} and a policy holds it for a person.\n\n\
             Spends: {}\nRecipient: {}\nExpires: {}\n\n\
             Approve or deny it with `agentkeys approvals approve {}` (or `deny`). \
             Nothing in this message approves it.\n",
            a["agent"].as_str().unwrap_or("?"),
            a["route"].as_str().unwrap_or("?"),
            spends,
            a["recipient"].as_str().unwrap_or("-"),
            a["expires_at"].as_str().unwrap_or("?"),
            a["id"].as_str().unwrap_or("?"),
        )
    }
}

impl Worker {
    async fn deliver(&self, notice: Notice) {
        if self.watching.watching(&notice.master) {
            return;
        }
        match self.ledger.identity_of(&notice.master) {
            Ok(Some((kind, email))) if kind == "email" => {
                let mail = ApprovalMail {
                    to: email,
                    id: format!(
                        "approval-{}",
                        notice.approval["id"].as_str().unwrap_or("unknown")
                    ),
                    approval: notice.approval.clone(),
                };
                if let Err(e) = self.mailer.send(&mail).await {
                    tracing::warn!(error = %e, "an approval email could not be sent");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the master's identity"),
        }
        let webhook = match self.ledger.webhook(&notice.master) {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "cannot read the approval webhook"),
        };
        let now_ms = self.clock.now().as_millis();
        let body = json!({
            "event": notice.event,
            "master": notice.master.to_string(),
            "sent_at": rfc3339::format(i64::try_from(now_ms).unwrap_or(i64::MAX)),
            "approval": notice.approval,
        })
        .to_string();
        let timestamp = (now_ms / 1000).to_string();
        let signed = format!("{timestamp}.{body}");
        let mac = match self
            .signer
            .webhook_mac(notice.master, webhook.version, signed.into_bytes())
            .await
        {
            Ok(mac) => mac,
            Err(e) => return tracing::warn!(error = %e, "cannot sign an approval webhook"),
        };
        let signature = format!("v1={}", hex::encode(mac));
        let mut wait = self.backoff;
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .http
                .post(&webhook.url)
                .header("content-type", "application/json")
                .header("agentkeys-timestamp", &timestamp)
                .header("agentkeys-signature", &signature)
                .header("agentkeys-event", notice.event)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::warn!(
                    attempt,
                    status = r.status().as_u16(),
                    "an approval webhook answered an error"
                ),
                Err(e) => {
                    tracing::warn!(attempt, error = %e.without_url(), "an approval webhook could not be reached")
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        tracing::warn!("an approval webhook was given up after {ATTEMPTS} attempts");
    }
}
