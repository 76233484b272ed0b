//! Test helpers: a DPoP client key (the product's `DeviceKey`) that also signs proofs with
//! arbitrary headers and claims, to violate each rule on purpose.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use agentkeys_actors::crypto::eip191::sign_message;
use agentkeys_actors::crypto::wallet::WalletKey;
use agentkeys_gateway::client::DeviceKey;
use agentkeys_gateway::config::{Config, Layer};
use agentkeys_gateway::serve;
use agentkeys_runtime::{Clock, ManualClock, Timestamp};
use serde_json::{Value, json};

/// A device key for tests.
pub struct Client {
    key: DeviceKey,
}

impl Client {
    pub fn new() -> Self {
        Self {
            key: DeviceKey::generate().expect("key"),
        }
    }

    pub fn jwk(&self) -> Value {
        self.key.public_jwk()
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.key.sign_jws(header, claims).expect("sign")
    }

    pub fn proof(&self, claims: Value) -> String {
        self.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()}),
            &claims,
        )
    }

    /// A proof for `method` on `url` issued at `iat` with a fresh jti.
    pub fn proof_for(&self, method: &str, url: &str, iat: i64) -> String {
        self.key.proof(method, url, iat, None, None).expect("proof")
    }
}

/// A whole server on loopback with a manual clock, and requests signed per call.
pub const PUBLIC_URL: &str = "http://127.0.0.1:8090";

pub struct Stack {
    pub server: serve::Server,
    pub base: String,
    pub clock: ManualClock,
    pub http: reqwest::Client,
}

fn real_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis();
    Timestamp::from_millis(u64::try_from(ms).expect("fits"))
}

pub async fn start(dir: &Path, registration: Option<&str>) -> Stack {
    start_with(
        dir,
        match registration {
            Some(r) => Layer::default().with("registration", r),
            None => Layer::default(),
        },
    )
    .await
}

/// A stack with extra configuration (`listen`, `metrics_listen` and `data_dir` are set here).
pub async fn start_with(dir: &Path, flags: Layer) -> Stack {
    start_configured(dir, Layer::default(), flags).await
}

/// A stack with a configuration file's layer (e.g. `[[oidc_providers]]`) and flags.
pub async fn start_configured(dir: &Path, file: Layer, flags: Layer) -> Stack {
    let mut flags = flags
        .with("listen", "127.0.0.1:0")
        .with("metrics_listen", "off")
        .with("data_dir", dir.display().to_string());
    if agentkeys_tests::engine::on_postgres() && flags.get("store").is_none() {
        flags = flags.with("store", agentkeys_tests::engine::database_url(dir));
    }
    let config = Config::resolve(&file, &Layer::default(), &flags).expect("config");
    let clock = ManualClock::new(real_now());
    let server = serve::start_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("server starts");
    let base = format!("http://{}", server.local_addr());
    Stack {
        server,
        base,
        clock,
        http: reqwest::Client::new(),
    }
}

impl Stack {
    /// Stops the server (drains within 5 s).
    pub async fn stop(self) {
        self.server
            .stop(std::time::Duration::from_secs(5))
            .await
            .expect("stops");
    }

    pub fn now(&self) -> i64 {
        i64::try_from(self.clock.now().as_millis() / 1000).expect("fits")
    }

    /// Sends a request with `proof` as the DPoP header (and the token if given).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        proof: &str,
    ) -> (u16, Value, Option<String>) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("dpop", proof);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("DPoP {token}"));
        }
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        let nonce = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        (status, response.json().await.expect("json"), nonce)
    }

    /// A request with a fresh, correct proof by `key`.
    pub async fn call(
        &self,
        key: &DeviceKey,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let proof = key
            .proof(
                method,
                &format!("{PUBLIC_URL}{path}"),
                self.now(),
                token,
                None,
            )
            .expect("proof");
        let (status, body, _) = self.send(method, path, body, token, &proof).await;
        (status, body)
    }

    /// Starts a SIWE login for `wallet` on chain 1 with device `key`.
    pub async fn challenge(&self, key: &DeviceKey, wallet: &WalletKey) -> Value {
        self.challenge_at(key, wallet, "/v1/auth/wallet/start", None)
            .await
    }

    /// Starts a SIWE challenge for `wallet` at `path` (a login, or a link with `token`).
    pub async fn challenge_at(
        &self,
        key: &DeviceKey,
        wallet: &WalletKey,
        path: &str,
        token: Option<&str>,
    ) -> Value {
        let address = wallet.address().to_string();
        let (status, body) = self
            .call(
                key,
                "POST",
                path,
                Some(&json!({"address": address, "chain_id": 1})),
                token,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Links `wallet` to the master whose session `token` (of `key`) is: start, sign, verify.
    pub async fn link_wallet(
        &self,
        key: &DeviceKey,
        token: &str,
        wallet: &WalletKey,
    ) -> (u16, Value) {
        let challenge = self
            .challenge_at(key, wallet, "/v1/identities/wallet/start", Some(token))
            .await;
        self.call(
            key,
            "POST",
            "/v1/identities/wallet/verify",
            Some(&answer(&challenge, wallet)),
            Some(token),
        )
        .await
    }

    /// A complete login: challenge, sign the server's message, verify.
    pub async fn login(&self, key: &DeviceKey, wallet: &WalletKey) -> (u16, Value) {
        let challenge = self.challenge(key, wallet).await;
        self.call(
            key,
            "POST",
            "/v1/auth/wallet/verify",
            Some(&answer(&challenge, wallet)),
            None,
        )
        .await
    }
}

/// The `wallet/verify` body answering `challenge` with `wallet`'s signature of its message.
pub fn answer(challenge: &Value, wallet: &WalletKey) -> Value {
    let text = challenge["message"].as_str().expect("message");
    let signature = sign_message(wallet, text.as_bytes()).to_hex();
    json!({"request_id": challenge["request_id"], "signature": signature})
}

/// A configuration file naming an OpenID provider `name` on a loopback port nothing listens on
/// (its 0600 secret file in `dir`).
pub fn down_provider(dir: &Path, name: &str) -> Layer {
    use std::os::unix::fs::PermissionsExt as _;
    let secret = dir.join(format!("{name}.secret"));
    std::fs::write(&secret, "s3cret").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    Layer::from_toml_str(&format!(
        "[[oidc_providers]]\nname = {name:?}\nissuer = \"http://127.0.0.1:{port}\"\nclient_id = \"agentkeys-test\"\nclient_secret_file = {:?}\n",
        secret.display().to_string()
    ))
    .expect("file")
}

/// The token of the link mailed for `request_id` (from the log mailer's outbox).
pub fn token_from_outbox(dir: &Path, request_id: &str) -> String {
    let mail = std::fs::read_to_string(dir.join("outbox").join(format!("{request_id}.eml")))
        .expect("the message is in the outbox");
    let prefix = format!("{PUBLIC_URL}/auth/email/landing#t=");
    let line = mail
        .lines()
        .find(|l| l.starts_with(&prefix))
        .expect("the link, built from public_url");
    line[prefix.len()..].to_string()
}

/// The P-256 keys of a key set of the stack in `dir`, newest first: its files, or on
/// PostgreSQL the wrapped keys in the store, unwrapped with the stack's K3.
pub fn key_set(
    stack: &Stack,
    dir: &Path,
    set: agentkeys_actors::signer::KeySetName,
) -> Vec<agentkeys_actors::signer::P256Key> {
    use agentkeys_actors::signer::keys;
    if agentkeys_tests::engine::on_postgres() {
        let stored =
            agentkeys_gateway::keystore::read(stack.server.runtime().store()).expect("stored keys");
        let k3 = keys::load_k3(&dir.join("keys/k3.key")).expect("k3");
        keys::load_stored_set(&k3, &stored, set).expect("key set")
    } else {
        keys::load_set(&dir.join("keys").join(set.dir_name())).expect("key set")
    }
}

/// `agentkeys admin keys rotate-oidc` on the server of `dir`; answers the admin reply.
pub async fn rotate_oidc(dir: &Path) -> Value {
    agentkeys_gateway::admin::call(
        dir,
        &agentkeys_gateway::admin::AdminRequest::Keys {
            action: agentkeys_gateway::admin::KeysAction::RotateOidc,
        },
    )
    .await
    .expect("admin")
}

pub fn wallet(seed: u8) -> WalletKey {
    WalletKey::from_secret(&[seed; 32]).expect("valid scalar")
}

pub fn device() -> DeviceKey {
    DeviceKey::generate().expect("key")
}

/// `moto_server` on a free loopback port, killed when dropped. `MOTO_SERVER` names the binary
/// (scripts/test.sh installs it from tests/python/requirements.txt).
pub struct Moto {
    _child: tokio::process::Child,
    pub url: String,
}

impl Moto {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let binary = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let child = tokio::process::Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}); run scripts/test.sh, which installs it")
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let probe = http.get(format!("{url}/moto-api/data.json")).send().await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { _child: child, url }
    }

    /// Everything moto recorded (`/moto-api/data.json`).
    pub async fn data(&self) -> Value {
        reqwest::get(format!("{}/moto-api/data.json", self.url))
            .await
            .expect("moto answers")
            .json()
            .await
            .expect("json")
    }
}

/// `agentkeys serve` as a child process (real environment, real binary), killed when dropped.
pub struct ChildServer {
    child: tokio::process::Child,
    pub base: String,
}

impl ChildServer {
    pub async fn spawn(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_on(data_dir, "127.0.0.1:0", args, env).await
    }

    /// As [`ChildServer::spawn`], listening on `listen`.
    pub async fn spawn_on(
        data_dir: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"));
        agentkeys_tests::child::serve(&mut command, data_dir, listen)
            .args(args)
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::inherit());
        let mut child = command.spawn().expect("agentkeys serve starts");
        let base = agentkeys_tests::child::listening(&mut child).await;
        Self { child, base }
    }

    /// SIGKILL and wait.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("killed");
    }
}

/// The typed client for a child server (proofs name `PUBLIC_URL`, requests go to `base`).
pub fn client_for(base: &str) -> agentkeys_gateway::client::Client {
    agentkeys_gateway::client::Client::new(PUBLIC_URL, device()).connecting_to(base)
}

pub struct Output {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `agentkeys` binary as [`agentkeys`] does, with `input` on its standard input.
pub async fn agentkeys_with_stdin(
    home: &Path,
    connect: &str,
    args: &[&str],
    input: &str,
) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("AGENTKEYS_CONNECT", connect)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("exits");
    Output {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the `agentkeys` binary with `HOME` and the connect address set, nothing else.
pub async fn agentkeys(home: &Path, connect: &str, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("AGENTKEYS_CONNECT", connect)
        .env("AGENTKEYS_LOG", "warn")
        .output()
        .await
        .expect("runs");
    Output {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The JSON a successful run printed.
pub fn json(out: &Output) -> Value {
    assert!(out.ok, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    serde_json::from_str(out.stdout.trim()).expect("JSON output")
}

/// A server for tests of the `agentkeys` binary, which talks to it from a throwaway home.
pub struct CliStack {
    pub server: serve::Server,
    pub connect: String,
    pub data: tempfile::TempDir,
    pub home: tempfile::TempDir,
}

impl CliStack {
    /// Starts a server on loopback (log mailer, dev mode) with its own data dir.
    pub async fn start() -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let home = tempfile::tempdir().expect("tempdir");
        let flags = Layer::default()
            .with("listen", "127.0.0.1:0")
            .with("metrics_listen", "off")
            .with("data_dir", data.path().display().to_string());
        let config = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("config");
        let server = serve::start(config).await.expect("server starts");
        let connect = format!("http://{}", server.local_addr());
        Self {
            server,
            connect,
            data,
            home,
        }
    }

    /// Runs the binary.
    pub async fn run(&self, args: &[&str]) -> Output {
        agentkeys(self.home.path(), &self.connect, args).await
    }

    /// Writes a 0600 key file holding 32 bytes of `byte`; returns its path.
    pub fn key_file(&self, byte: u8) -> String {
        use std::os::unix::fs::OpenOptionsExt;
        let key_file = self.home.path().join(format!("wallet-{byte}.key"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    format!("0x{}\n", hex::encode([byte; 32])).as_bytes(),
                )
            })
            .expect("key file");
        key_file.display().to_string()
    }

    /// Logs in with a key file of `byte` (default profile); returns the wallet.
    pub async fn login(&self, byte: u8) -> WalletKey {
        let path = self.key_file(byte);
        let out = self.run(&["login", "wallet", "--key-file", &path]).await;
        assert!(out.ok, "{}", out.stderr);
        WalletKey::from_secret(&[byte; 32]).expect("valid key")
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.server
            .stop(std::time::Duration::from_secs(5))
            .await
            .expect("stops");
    }
}

/// A logged-in principal: its device key and session.
pub struct Who {
    pub key: DeviceKey,
    pub token: String,
    pub omni: String,
}

impl Who {
    /// From a session answer (login, redemption, claimed pairing).
    pub fn from_session(key: DeviceKey, session: &Value) -> Self {
        Who {
            key,
            token: session["session_jwt"].as_str().expect("token").into(),
            omni: session["omni"].as_str().expect("omni").into(),
        }
    }

    /// A fresh proof of this principal's key for `method` `path` with its session, dated by
    /// `stack`'s clock (to send by hand, e.g. twice).
    pub fn proof(&self, stack: &Stack, method: &str, path: &str) -> String {
        self.key
            .proof(
                method,
                &format!("{PUBLIC_URL}{path}"),
                stack.now(),
                Some(&self.token),
                None,
            )
            .expect("proof")
    }

    /// A request with this principal's session and a fresh proof.
    pub async fn call(
        &self,
        stack: &Stack,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        stack
            .call(&self.key, method, path, body.as_ref(), Some(&self.token))
            .await
    }
}

/// A master logged in with wallet `seed` and a fresh device key.
pub async fn master(stack: &Stack, seed: u8) -> Who {
    let key = device();
    let (status, session) = stack.login(&key, &wallet(seed)).await;
    assert_eq!(status, 200, "{session}");
    Who::from_session(key, &session)
}

/// Issues a link code for `omni` as `issuer` and redeems it with a fresh device key.
pub async fn link(stack: &Stack, issuer: &Who, omni: &str) -> Who {
    link_session(stack, issuer, omni).await.0
}

/// [`link`], with the redemption's whole answer (its `binding_id`, …).
pub async fn link_session(stack: &Stack, issuer: &Who, omni: &str) -> (Who, Value) {
    let path = format!("/v1/actors/{omni}/link-codes");
    let (status, code) = issuer.call(stack, "POST", &path, Some(json!({}))).await;
    assert_eq!(status, 200, "{code}");
    let key = device();
    let body = json!({"code": code["code"]});
    let (status, session) = stack
        .call(&key, "POST", "/v1/link/redeem", Some(&body), None)
        .await;
    assert_eq!(status, 200, "{session}");
    (Who::from_session(key, &session), session)
}

/// A daemon child for `profile`; answers once it says it serves.
pub async fn spawn_daemon(
    home: &Path,
    connect: &str,
    profile: &str,
    extra: &[&str],
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkeys"))
        .args(["--profile", profile, "daemon"])
        .args(extra)
        .env_clear()
        .env("HOME", home)
        .env("AGENTKEYS_CONNECT", connect)
        .env("AGENTKEYS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("daemon starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = out
        .next_line()
        .await
        .expect("read")
        .expect("the daemon says it serves");
    assert!(line.starts_with("agentkeys daemon serving"), "{line}");
    let err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    (child, err)
}
