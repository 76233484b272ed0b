//! `agentkeys config show|check` as a process: sources, precedence, refusals.

use std::process::Command;

fn agentkeys(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentkeys"));
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AGENTKEYS_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).output().expect("runs")
}

#[test]
fn show_prints_each_value_with_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agentkeys.toml");
    std::fs::write(
        &file,
        "data_dir = \"/srv/agentkeys\"\nlisten = \"127.0.0.1:7000\"\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    let out = agentkeys(
        &[
            "config",
            "show",
            "--config",
            path,
            "--listen",
            "127.0.0.1:7001",
        ],
        &[("AGENTKEYS_PUBLIC_URL", "https://keys.example.com")],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("listen = \"127.0.0.1:7001\"  # flag"),
        "{text}"
    );
    assert!(
        text.contains("data_dir = \"/srv/agentkeys\"  # file"),
        "{text}"
    );
    assert!(
        text.contains("public_url = \"https://keys.example.com\"  # env"),
        "{text}"
    );
    assert!(
        text.contains("client_id = \"agentkeys\"  # default"),
        "{text}"
    );
    assert!(
        text.contains("k3_file = \"/srv/agentkeys/keys/k3.key\"  # default"),
        "{text}"
    );

    let out = agentkeys(&["config", "show", "--json", "--config", path], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["listen"]["value"], "127.0.0.1:7000");
    assert_eq!(json["listen"]["source"], "file");
}

#[test]
fn check_refuses_unknown_keys_variables_and_bad_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listn = \"127.0.0.1:7000\"\n").expect("write");
    let out = agentkeys(
        &["config", "check", "--config", file.to_str().expect("utf-8")],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listn"),
        "{out:?}"
    );

    let out = agentkeys(&["config", "check"], &[("AGENTKEYS_PUBLICURL", "x")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown environment variable AGENTKEYS_PUBLICURL"),
        "{out:?}"
    );

    let out = agentkeys(&["config", "check", "--public-url", "https://h/path"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("public_url (flag)"),
        "{out:?}"
    );

    let out = agentkeys(&["config", "check"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev mode: true"));
}

#[test]
fn typed_values_from_the_docs_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agentkeys.toml");
    // docs/aws.md and docs/migration.md tell operators to write `oidc_legacy_claims = true`;
    // upstream deployments use Base Sepolia.
    std::fs::write(
        &file,
        "oidc_legacy_claims = true\nsiwe_chains = [1, 84532]\nsession_ttl_seconds = \"30m\"\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    // A shell that exports the CLI's own variable can still run the server commands.
    let out = agentkeys(
        &[
            "config",
            "show",
            "--json",
            "--config",
            path,
            "--set",
            "dpop_skew_seconds=30",
        ],
        &[("AGENTKEYS_STS_ENDPOINT", "http://127.0.0.1:5000")],
    );
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["oidc_legacy_claims"]["value"], "true");
    assert_eq!(json["siwe_chains"]["value"], "1,84532");
    assert_eq!(json["session_ttl_seconds"]["value"], "30m");
    assert_eq!(json["dpop_skew_seconds"]["source"], "flag");

    std::fs::write(&file, "oidc_legacy_claims = \"true\"\n").expect("write");
    let out = agentkeys(&["config", "check", "--config", path], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oidc_legacy_claims (file) must be a boolean"),
        "{err}"
    );

    let out = agentkeys(&["config", "check"], &[("AGENTKEYS_NOT_A_KEY", "1")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENTKEYS_NOT_A_KEY"));
}
