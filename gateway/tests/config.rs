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
