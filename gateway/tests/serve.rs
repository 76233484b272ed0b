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
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
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
        .strip_prefix("agentkeys listening on ")
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
