//! deploy/setup-host.sh in a throwaway root with stub systemctl/curl/journalctl: dry run
//! changes nothing, a real run installs everything with the right modes, a second run changes
//! nothing and never regenerates K3, a store without its K3 is refused, a failed probe explains.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/setup-host.sh")
}

/// A PATH directory with logging stubs; `ready` decides what the curl stub answers.
fn stubs(dir: &Path, ready: bool) -> PathBuf {
    let bin = dir.join("stub-bin");
    std::fs::create_dir_all(&bin).expect("dir");
    let log = dir.join("calls.log");
    let curl = if ready {
        "echo '{\"status\":\"ready\"}'"
    } else {
        "exit 7"
    };
    for (name, body) in [
        ("systemctl", "echo \"systemctl $*\" >> \"$LOG\""),
        ("journalctl", "echo \"journalctl $*\" >> \"$LOG\""),
        ("curl", curl),
    ] {
        let path = bin.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\nLOG='{}'\n{body}\n", log.display()),
        )
        .expect("stub");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

fn run(dir: &Path, root: &Path, extra: &[&str], ready: bool) -> std::process::Output {
    let path = format!(
        "{}:{}",
        stubs(dir, ready).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(script())
        .args(["--public-url", "https://keys.example.com", "--root"])
        .arg(root)
        .args(["--binary", env!("CARGO_BIN_EXE_agentkeys")])
        .args(extra)
        .env("PATH", path)
        .env("SETUP_HOST_PROBES", "2")
        .output()
        .expect("bash runs")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn setup_host_installs_idempotently_into_a_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");

    let dry = run(dir.path(), &root, &["--dry-run"], true);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        said.contains("+ install -m 0755") && said.contains("systemctl enable --now"),
        "{said}"
    );
    assert!(!root.exists(), "a dry run changes nothing");

    let first = run(dir.path(), &root, &[], true);
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let etc = root.join("etc/agentkeys");
    assert_eq!(mode(&etc), 0o700);
    assert_eq!(mode(&root.join("var/lib/agentkeys")), 0o700);
    assert_eq!(mode(&etc.join("k3.key")), 0o600);
    assert_eq!(mode(&etc.join("agentkeys.toml")), 0o600);
    assert!(root.join("usr/local/bin/agentkeys").exists());
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/agentkeys.service")).expect("unit");
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/agentkeys",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "LoadCredential=k3:/etc/agentkeys/k3.key",
        "User=agentkeys",
        "Environment=MIMALLOC_ALLOW_THP=0",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let config = std::fs::read_to_string(etc.join("agentkeys.toml")).expect("config");
    assert!(config.contains("public_url = \"https://keys.example.com\""));
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("log");
    assert!(
        calls.contains("systemctl daemon-reload")
            && calls.contains("systemctl enable --now agentkeys.service")
    );
    assert!(out.contains("AgentKeys is ready"));

    // Again: nothing regenerated.
    let k3 = std::fs::read(etc.join("k3.key")).expect("k3");
    let second = run(dir.path(), &root, &[], true);
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("never regenerated"));
    assert_eq!(std::fs::read(etc.join("k3.key")).expect("k3"), k3);

    // A store without its K3 is refused: a new K3 would change every wallet.
    std::fs::remove_file(etc.join("k3.key")).expect("rm");
    std::fs::write(root.join("var/lib/agentkeys/agentkeys.redb"), b"store").expect("store");
    let refused = run(dir.path(), &root, &[], true);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("restore the original K3"));
}

#[test]
fn a_failed_probe_prints_status_logs_and_fixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let failed = run(dir.path(), &root, &[], false);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("did not become ready") && err.contains("Likely fixes"),
        "{err}"
    );
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("log");
    assert!(
        calls.contains("systemctl status") && calls.contains("journalctl -u agentkeys.service")
    );
}
