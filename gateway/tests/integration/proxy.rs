//! `agentkeys proxy` against a local HTTPS upstream (a test CA, passed with the test-only
//! `--test-ca-file`): the upstream sees the injected header; requests without the token, with an
//! `Origin`, a foreign `Host`, `CONNECT`, absolute-form and `//host` paths are refused or stay
//! on the credential's origin; a redirect is not followed; the credential never reaches the
//! caller, its arguments or its files; after a revoke the proxy refuses at the next request.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{CliStack, agentkeys, agentkeys_with_stdin, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const SECRET: &str = "sk-proxy-9d2e4c6a8b0f1e3d";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// What the upstream received: (request line, headers as lowercase `name: value` lines).
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// An HTTPS upstream on loopback: records each request; `/api/redirect` answers 302 elsewhere,
/// anything else echoes the request's headers in its body.
async fn upstream() -> (u16, Seen) {
    let certs = vec![CertificateDer::from_pem_file(fixture("server.pem")).expect("cert")];
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut reader = BufReader::new(tls);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let request_line = line.trim().to_string();
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    let h = h.trim().to_ascii_lowercase();
                    if let Some(v) = h.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    headers.push(h);
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body).await;
                record
                    .lock()
                    .expect("record")
                    .push((request_line.clone(), headers.clone()));
                let response = if request_line.contains("/api/redirect") {
                    format!(
                        "HTTP/1.1 302 Found\r\nlocation: https://127.0.0.1:{port}/api/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    let echo = headers.join("\n");
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-echo: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{echo}",
                        headers
                            .iter()
                            .find(|h| h.starts_with("x-api-key"))
                            .cloned()
                            .unwrap_or_default(),
                        echo.len()
                    )
                };
                let mut tls = reader.into_inner();
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, seen)
}

/// Sends raw HTTP/1.1 to the proxy; returns the status code.
async fn raw(port: u16, request: &str) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    // The status line only: a refused CONNECT may leave the connection open.
    let mut answer = String::new();
    let _ = BufReader::new(tcp).read_line(&mut answer).await;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[actix::test]
async fn the_proxy_injects_refuses_what_it_must_and_stops_at_a_revoke() {
    let (upstream_port, seen) = upstream().await;
    let stack = CliStack::start().await;
    stack.login(0x51).await;
    let (h, connect) = (stack.home.path().to_path_buf(), stack.connect.clone());
    let base = format!("https://127.0.0.1:{upstream_port}/api");
    let out = agentkeys_with_stdin(
        &h,
        &connect,
        &[
            "cred",
            "set",
            "echo",
            "--stdin",
            "--inject-base-url",
            &base,
            "--inject-header",
            "X-Api-Key",
            "--inject-template",
            "Key {}",
        ],
        SECRET,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    // The agent: its own profile, granted the credential.
    let created = json(
        &agentkeys(
            &h,
            &connect,
            &[
                "agent",
                "create",
                "bot",
                "--scope",
                "cred:read:echo",
                "--json",
            ],
        )
        .await,
    );
    let code = json(&agentkeys(&h, &connect, &["link-code", "issue", "//bot", "--json"]).await);
    let code = code["code"].as_str().expect("code");
    let out = agentkeys_with_stdin(
        &h,
        &connect,
        &["--profile", "bot", "link"],
        &format!("{code}\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // The proxy, as the agent's profile.
    let token_file = h.join("proxy.token");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args([
            "--profile",
            "bot",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(&token_file)
        .arg("--test-ca-file")
        .arg(fixture("ca.pem"))
        .env_clear()
        .env("HOME", &h)
        .env("AGENTKEYS_CONNECT", &connect)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines
        .next_line()
        .await
        .expect("read")
        .expect("the proxy says where it listens");
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address")
        .trim_start_matches("http://")
        .to_string();
    let port: u16 = addr
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&token_file)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).expect("token");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let proxied = |path: &str| {
        http.get(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {token}"))
    };

    // Injected: the upstream sees the header, the caller sees it redacted.
    let answer = proxied("/echo/v1/models?limit=2")
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 200);
    let echoed_header = answer
        .headers()
        .get("x-echo")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = answer.text().await.expect("body");
    assert!(
        !body.contains(SECRET) && body.contains("[redacted]"),
        "{body}"
    );
    assert!(!echoed_header.contains(SECRET), "{echoed_header}");
    {
        let seen = seen.lock().expect("seen");
        let (line, headers) = seen.last().expect("a request upstream");
        assert!(line.starts_with("GET /api/v1/models?limit=2 "), "{line}");
        assert!(
            headers
                .iter()
                .any(|h| h == &format!("x-api-key: key {}", SECRET.to_lowercase())),
            "{headers:?}"
        );
        assert!(
            !headers.iter().any(|h| h.starts_with("authorization")),
            "the proxy's own token never goes upstream"
        );
    }
    // `//host` is appended, never resolved: the upstream (same origin) gets it as a path.
    let answer = proxied("/echo//evil.example/x").send().await.expect("sent");
    assert_eq!(answer.status(), 200);
    assert!(
        seen.lock()
            .expect("seen")
            .last()
            .is_some_and(|(line, _)| line.starts_with("GET /api//evil.example/x ")),
    );
    // (Sent raw: an HTTP client would remove the dot segments itself.)
    let climb = raw(
        port,
        &format!("GET /echo/../../etc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(climb, 400, "dot segments never climb out of the base");
    // A redirect is handed back, not followed.
    let before = seen.lock().expect("seen").len();
    let answer = proxied("/echo/redirect").send().await.expect("sent");
    assert_eq!(answer.status(), 302);
    assert_eq!(
        seen.lock().expect("seen").len(),
        before + 1,
        "only the redirect itself"
    );

    // Refusals.
    let host = format!("127.0.0.1:{port}");
    let no_token = raw(
        port,
        &format!("GET /echo/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(no_token, 401);
    let wrong_token = raw(port, &format!("GET /echo/x HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(wrong_token, 401);
    let origin = raw(port, &format!("GET /echo/x HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(origin, 403);
    let foreign = raw(port, &format!("GET /echo/x HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(foreign, 403);
    let connect_method = raw(port, &format!("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nAuthorization: Bearer {token}\r\n\r\n")).await;
    assert!(connect_method >= 400, "CONNECT refused: {connect_method}");
    let absolute = raw(port, &format!("GET http://evil.example/echo/x HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(absolute, 400);
    // A service the agent has no grant for: the server's refusal, passed on.
    let ungranted = proxied("/nothing/x").send().await.expect("sent");
    assert_eq!(ungranted.status(), 403);

    // The agent's side never holds the value: not in its profile's files, nor in the proxy's
    // arguments.
    for entry in std::fs::read_dir(h.join(".agentkeys/bot")).expect("profile") {
        let path = entry.expect("entry").path();
        let text = std::fs::read(&path).unwrap_or_default();
        assert!(
            !text.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the value",
            path.display()
        );
    }

    // Revoked: the next request is refused, and every one after it.
    let out = agentkeys(&h, &connect, &["agent", "revoke", "//bot"]).await;
    assert!(out.ok, "{}", out.stderr);
    let answer = proxied("/echo/v1/models").send().await.expect("sent");
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["error"], "actor_revoked");
    let answer = proxied("/echo/v1/models").send().await.expect("sent");
    assert_eq!(answer.status(), 401);
    assert_eq!(created["path"], "//bot");
    child.kill().await.expect("stopped");
    stack.stop().await;
}
