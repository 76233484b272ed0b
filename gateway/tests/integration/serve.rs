//! `agentkeys serve` as a real process: health over HTTP, graceful SIGTERM, restart on the
//! same data dir, refusal of a bad public URL.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Served {
    child: Child,
    base: String,
}

fn start(data_dir: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("AGENTKEYS_LISTEN")
        .env_remove("AGENTKEYS_PUBLIC_URL")
        .env_remove("AGENTKEYS_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agentkeys starts");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("a line");
    let base = line
        .trim()
        .strip_prefix(agentkeys_tests::child::LISTENING)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Served { child, base }
}

fn terminate(mut served: Served, signal: &str) -> (std::process::ExitStatus, String) {
    let pid = served.child.id().to_string();
    let killed = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = served.child.wait().expect("exits");
    let mut stderr = String::new();
    served
        .child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("stderr");
    (status, stderr)
}

#[tokio::test]
async fn serves_health_and_shuts_down_gracefully_on_sigterm_and_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let served = start(&data);
    let client = reqwest::Client::new();

    let health = client
        .get(format!("{}/healthz", served.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");

    let ready = client
        .get(format!("{}/readyz", served.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    let names: Vec<_> = body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                c["ok"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("store".to_string(), Some(true)),
            ("store_writer".to_string(), Some(true)),
            ("arbiters".to_string(), Some(true)),
            ("signer".to_string(), Some(true)),
            ("mailer".to_string(), Some(true)),
        ]
    );

    let missing = client
        .get(format!("{}/nope", served.base))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.expect("json envelope");
    assert_eq!(body["error"], "not_found");

    let (status, stderr) = terminate(served, "-TERM");
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");

    // The store closed cleanly: a second server opens the same data dir.
    let again = start(&data);
    let ready = client
        .get(format!("{}/readyz", again.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    // ctrl-c (SIGINT) stops it just as gracefully.
    let (status, stderr) = terminate(again, "-INT");
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_bad_public_url_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--public-url",
            "ftp://x/y",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must start with http:// or https://"),
        "{stderr}"
    );
}

fn serve_output(data: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env_remove("AGENTKEYS_K3_FILE")
        .output()
        .expect("runs")
}

#[test]
fn k3_is_generated_once_in_dev_mode_and_a_different_or_missing_k3_refuses_to_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let served = start(&data);
    let (status, stderr) = terminate(served, "-TERM");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("DEV MODE: generated a new master secret K3"),
        "{stderr}"
    );
    let k3 = data.join("keys").join("k3.key");
    let mode = std::fs::metadata(&k3)
        .expect("k3 file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&k3).expect("read");
    assert_eq!(text.trim().len(), 64);
    for set in ["session", "oidc", "audit"] {
        let files: Vec<_> = std::fs::read_dir(data.join("keys").join(set))
            .expect("set dir")
            .collect();
        assert_eq!(files.len(), 1, "{set}");
    }

    // The store records the signing kid of each key set; its file missing refuses to start
    // (and no replacement key is made).
    let oidc_dir = data.join("keys").join("oidc");
    let oidc_file = std::fs::read_dir(&oidc_dir)
        .expect("dir")
        .next()
        .expect("file")
        .expect("entry")
        .path();
    let saved = dir.path().join("oidc.pk8");
    std::fs::rename(&oidc_file, &saved).expect("move away");
    let out = serve_output(&data, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restore the key file"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_dir(&oidc_dir).expect("dir").count(), 0);
    std::fs::rename(&saved, &oidc_file).expect("restore");

    // Another K3 for the same store: refused, naming the fix.
    let other = dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "11".repeat(32))).expect("write");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = serve_output(&data, &["--k3-file", other.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restore the original K3"),
        "{out:?}"
    );

    // Another client_id for the same store: refused (every omni would change).
    let out = serve_output(&data, &["--client-id", "other"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set client_id back to \"agentkeys\""),
        "{out:?}"
    );

    // A K3 file readable by others: refused with the chmod to run.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = serve_output(&data, &["--k3-file", other.to_str().expect("utf-8")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{out:?}"
    );

    // K3 missing while the store exists: never regenerated, even in dev mode.
    let missing = dir.path().join("missing.key");
    let out = serve_output(&data, &["--k3-file", missing.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agentkeys keys init"),
        "{out:?}"
    );
    assert!(!missing.exists());

    // A non-loopback public URL never generates K3.
    let fresh = dir.path().join("fresh");
    let out = serve_output(&fresh, &["--public-url", "https://keys.example.com"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agentkeys keys init"),
        "{out:?}"
    );
}

#[test]
fn keys_init_and_derive_print_the_identifiers_and_no_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k3 = dir.path().join("k3.key");
    let init = Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(["keys", "init", "--k3-file"])
        .arg(&k3)
        .output()
        .expect("runs");
    assert!(init.status.success(), "{init:?}");
    let again = Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(["keys", "init", "--k3-file"])
        .arg(&k3)
        .output()
        .expect("runs");
    assert!(!again.status.success(), "never regenerated");

    // The DESIGN vector K3 (bytes 0..31) and the end-to-end vector of actors/tests/vectors.
    let vector = dir.path().join("vector.key");
    std::fs::write(
        &vector,
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&vector, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args([
            "keys",
            "derive",
            "--identity",
            "email:test@litentry.org",
            "--path",
            "//hermes",
            "--json",
            "--k3-file",
        ])
        .arg(&vector)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json["omni"],
        "d9ab94bf1d8e640718ce0a3b9fff7c20d21934425c17b6e02f797cfdcdc88fb7"
    );
    assert_eq!(json["wallet"], "0xf2f83ffe53f1521f96769582e9913e1b7f9ccf70");
    assert_eq!(
        json["sr25519_public"],
        "1c23410635a1202a41ae3a181e372ca8364fca6da65048ab02bed2d1d0eea908"
    );
    assert_eq!(
        json["anchor_wallet"],
        "0x3df8d66d77828c1818b4904e0a819b3841e1fda9"
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!printed.contains("0001020304"), "no secret in the output");

    // OpenID masters, against the independent vectors (actors/tests/vectors/derivations.json).
    let vectors: serde_json::Value = serde_json::from_str(include_str!(
        "../../../actors/tests/vectors/derivations.json"
    ))
    .expect("vectors");
    for v in vectors["openid"].as_array().expect("openid vectors") {
        let identity = format!(
            "{}:{}",
            v["type"].as_str().expect("type"),
            v["value"].as_str().expect("value")
        );
        let out = Command::new(env!("CARGO_BIN_EXE_agentkeys"))
            .args([
                "keys",
                "derive",
                "--identity",
                &identity,
                "--json",
                "--k3-file",
            ])
            .arg(&vector)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["master_omni"], v["master_omni"], "{identity}");
        assert_eq!(json["anchor_wallet"], v["anchor_wallet"], "{identity}");
        assert_eq!(json["wallet"], v["master_wallet"], "{identity}");
    }

    let bad = Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args([
            "keys",
            "derive",
            "--identity",
            "email:test@litentry.org",
            "--path",
            "//Bad",
            "--k3-file",
        ])
        .arg(&vector)
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("a label is 1 to 32 characters"),
        "{bad:?}"
    );
}
