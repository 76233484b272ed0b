//! `agentkeys keys init` and `agentkeys keys derive` (offline).

use agentkeys_actors::crypto::account;
use agentkeys_actors::crypto::omni::{Identity, identity_omni, master_omni};
use agentkeys_actors::crypto::wallet::derive_wallet;
use agentkeys_actors::signer::keys::{create_k3, load_k3};
use agentkeys_runtime::Omni;
use anyhow::{Context as _, bail};
use serde_json::json;

use crate::cli::{ConfigArgs, KeysDeriveArgs};

/// Creates K3 where the configuration says (`k3_file`); refuses to replace one.
pub fn init(args: ConfigArgs) -> anyhow::Result<()> {
    let path = crate::config::load(&args)?.k3_file;
    if path.exists() {
        bail!(
            "{} already exists; a new K3 would change every wallet, so it is never regenerated",
            path.display()
        );
    }
    let k3 = create_k3(&path)?;
    println!(
        "created {} (mode 0600), fingerprint {}",
        path.display(),
        k3.fingerprint()
    );
    println!("back it up: every wallet and sr25519 key derives from it");
    Ok(())
}

/// Prints the identifiers of one actor from a K3 file.
pub fn derive(args: KeysDeriveArgs, json_output: bool) -> anyhow::Result<()> {
    let k3 = load_k3(&args.k3_file)?;
    let mut anchor = None;
    let master: Omni = match (&args.identity, &args.master) {
        (_, Some(master)) => master
            .parse()
            .context("--master is an omni: 64 hex characters")?,
        (Some(identity), None) => match Identity::parse(identity)? {
            Identity::Evm(address) => master_omni(&args.client_id, address)?,
            other => {
                // Email and OpenID masters are anchored to W(identity omni).
                let id = identity_omni(&args.client_id, other)?;
                let wallet = derive_wallet(&k3, &id)?.address();
                anchor = Some(wallet);
                master_omni(&args.client_id, &wallet.to_string())?
            }
        },
        (None, None) => bail!("give --identity or --master"),
    };
    let acct = account::derive(&k3, &master, &args.path)?;
    if json_output {
        let mut out = json!({
            "omni": acct.omni.to_string(),
            "path": acct.path,
            "master_omni": master.to_string(),
            "wallet": acct.wallet.to_string(),
            "sr25519_public": hex::encode(acct.sr25519_public),
            "ss58": acct.ss58,
        });
        if let Some(anchor) = anchor {
            out["anchor_wallet"] = json!(anchor.to_string());
        }
        println!("{out}");
    } else {
        println!("omni            {}", acct.omni);
        println!(
            "path            {}",
            if acct.path.is_empty() {
                "(master)"
            } else {
                &acct.path
            }
        );
        println!("master omni     {master}");
        println!("wallet          {}", acct.wallet);
        println!("sr25519 public  0x{}", hex::encode(acct.sr25519_public));
        println!("ss58            {}", acct.ss58);
        if let Some(anchor) = anchor {
            println!(
                "anchor wallet   {anchor}  (the email login's own wallet; signs only when asked for)"
            );
        }
    }
    Ok(())
}
