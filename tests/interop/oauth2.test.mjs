// Login with an OpenID provider, end to end: a real `agentkeys serve` configured with two
// providers served by the OpenID-certified npm `oidc-provider` (one generic `oidc`, one with
// upstream's `oauth2_google` identity type and client_secret_post), driven through the
// provider's own login and consent forms with plain HTTP. Every request to the gateway carries a
// proof built by npm `dpop`. A small proxy in front of the provider can replace the ID token of
// the next token response with a forged one (signed with jose), so each validation rule is
// exercised against a real exchange. Needs AGENTKEYS_BIN (scripts/test.sh sets it).
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { generateKeyPair, generateProof } from "dpop";
import * as jose from "jose";
import Provider from "oidc-provider";
import * as d from "./derive.mjs";
import { consolePage, launchChromium, sameOrigin } from "./chromium.mjs";

const PUBLIC_URL = "http://127.0.0.1:8090";
const REDIRECT = `${PUBLIC_URL}/auth/oauth2/callback`;
const bin = process.env.AGENTKEYS_BIN ?? "../../target/debug/agentkeys";
const dataDir = mkdtempSync(join(tmpdir(), "agentkeys-oauth2-"));

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

// The provider's signing key, published in its JWKS; forged tokens reuse it where a rule other
// than the signature is under test.
const { privateKey: providerKey } = await generateKeyPair("RS256", { extractable: true });
const providerJwk = { ...(await jose.exportJWK(providerKey)), kid: "provider-1", alg: "RS256", use: "sig" };

// The proxy listens first so the provider's issuer can be the proxy's URL.
let forge = null; // (payload, realToken) => forged id_token, for the next token response only
const proxy = http.createServer();
const proxyPort = await listen(proxy);
const issuer = `http://127.0.0.1:${proxyPort}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "agentkeys-corp",
      client_secret: "corp-secret-0123456789",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
    {
      client_id: "agentkeys-google",
      client_secret: "google-secret-0123456789",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  jwks: { keys: [providerJwk] },
  findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id, email: `${id}@corp.example` }) }),
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["a-test-cookie-key-0123456789"] },
});
provider.on("server_error", (_ctx, err) => console.error("provider error", err));
const providerServer = http.createServer(provider.callback());
const providerPort = await listen(providerServer);

// Forwards with node:http (fetch would replace the Host header, and the provider builds its
// endpoint URLs from it: they must name the proxy).
function forward(req, body) {
  return new Promise((resolve, reject) => {
    const upstream = http.request(
      { host: "127.0.0.1", port: providerPort, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        const chunks = [];
        r.on("data", (c) => chunks.push(c));
        r.on("end", () => resolve({ status: r.statusCode, headers: r.headers, body: Buffer.concat(chunks) }));
      },
    );
    upstream.on("error", reject);
    upstream.end(body);
  });
}

proxy.on("request", async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const upstream = await forward(req, Buffer.concat(chunks));
  let body = upstream.body;
  if (forge && req.method === "POST" && req.url.startsWith("/token") && upstream.status === 200) {
    const json = JSON.parse(body.toString());
    const payload = jose.decodeJwt(json.id_token);
    json.id_token = await forge(payload, json.id_token);
    forge = null;
    body = Buffer.from(JSON.stringify(json));
  }
  const headers = { ...upstream.headers, "content-length": body.length };
  delete headers["transfer-encoding"];
  res.writeHead(upstream.status, headers);
  res.end(body);
});

function secretFile(name, value) {
  const path = join(dataDir, name);
  writeFileSync(path, value);
  chmodSync(path, 0o600);
  return path;
}

const configPath = join(dataDir, "agentkeys.toml");
// Many logins from one address in a few seconds: the per-address limit is raised for the test.
writeFileSync(
  configPath,
  `ip_rate_per_second = 1000
ip_burst = 10000
pending_per_client = 1000

[[oidc_providers]]
name = "corp"
issuer = "${issuer}"
client_id = "agentkeys-corp"
client_secret_file = "${secretFile("corp.secret", "corp-secret-0123456789\n")}"

[[oidc_providers]]
name = "googlish"
issuer = "${issuer}"
client_id = "agentkeys-google"
client_secret_file = "${secretFile("google.secret", "google-secret-0123456789")}"
identity_type = "oauth2_google"
token_endpoint_auth = "client_secret_post"
`,
);

async function startServer() {
  const child = spawn(
    bin,
    ["serve", "--config", configPath, "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", join(dataDir, "data")],
    { env: { PATH: process.env.PATH, AGENTKEYS_LOG: "warn" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let logs = "";
  child.stderr.on("data", (c) => (logs += c));
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const m = line.match(/agentkeys listening on (http:\/\/\S+)/);
    if (m) return { child, base: m[1], logs: () => logs };
  }
  throw new Error(`the server exited before listening: ${logs}`);
}

let gateway;
before(async () => {
  gateway = await startServer();
});
after(() => {
  gateway?.child.kill("SIGTERM");
  providerServer.close();
  proxy.close();
  rmSync(dataDir, { recursive: true, force: true });
});

async function call(keys, method, path, body, token) {
  const proof = await generateProof(keys, PUBLIC_URL + path, method, undefined, token);
  const headers = { dpop: proof };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `DPoP ${token}`;
  const r = await fetch(gateway.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

async function confirm(body) {
  const r = await fetch(`${gateway.base}/v1/auth/oauth2/confirm`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

// A browser: follows redirects by hand, keeps the provider's cookies, fills its forms.
async function signInAtProvider(authorizationUrl, account) {
  const jar = new Map();
  const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
  const remember = (r) => {
    for (const c of r.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
  };
  let url = authorizationUrl;
  let method = "GET";
  let form;
  for (let hop = 0; hop < 20; hop++) {
    if (url.startsWith(REDIRECT)) return new URL(url);
    const r = await fetch(url, {
      method,
      headers: { cookie: cookieHeader(), ...(form ? { "content-type": "application/x-www-form-urlencoded" } : {}) },
      body: form,
      redirect: "manual",
    });
    remember(r);
    form = undefined;
    method = "GET";
    if (r.status >= 300 && r.status < 400) {
      url = new URL(r.headers.get("location"), url).toString();
      continue;
    }
    const html = await r.text();
    assert.equal(r.status, 200, html);
    const action = html.match(/<form[^>]*action="([^"]+)"/)?.[1];
    assert.ok(action, `a form on ${url}: ${html.slice(0, 400)}`);
    const fields = new URLSearchParams();
    for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)) fields.set(m[1], m[2]);
    if (html.includes('name="login"')) {
      fields.set("login", account);
      fields.set("password", "any");
    }
    url = new URL(action.replaceAll("&amp;", "&"), url).toString();
    method = "POST";
    form = fields.toString();
  }
  throw new Error("too many hops at the provider");
}

// Starts a login (or, with a token, a link), signs in at the provider, and returns what the
// browser lands on: the callback URL's state, the page, the started request.
async function throughProvider(keys, providerName, account, token) {
  const path = token ? "/v1/identities/oauth2/start" : "/v1/auth/oauth2/start";
  const started = await call(keys, "POST", path, { provider: providerName }, token);
  assert.equal(started.status, 200, JSON.stringify(started.body));
  const authUrl = new URL(started.body.authorization_url);
  assert.equal(authUrl.searchParams.get("code_challenge_method"), "S256");
  assert.ok(authUrl.searchParams.get("nonce") && authUrl.searchParams.get("state"));
  assert.equal(authUrl.searchParams.get("redirect_uri"), REDIRECT);
  const landed = await signInAtProvider(started.body.authorization_url, account);
  assert.ok(landed.searchParams.get("code"), landed.toString());
  // The browser opens the callback on the gateway (its public URL maps to the test's port).
  const page = await fetch(`${gateway.base}${landed.pathname}${landed.search}`);
  return { started: started.body, state: landed.searchParams.get("state"), page, landed };
}

async function poll(keys, requestId) {
  return call(keys, "GET", `/v1/auth/oauth2/status/${requestId}`);
}

function k3() {
  return Buffer.from(readFileSync(join(dataDir, "data", "keys", "k3.key"), "utf8").trim(), "hex");
}

function expectedMaster(type, value) {
  const id = d.identityOmni("agentkeys", type, value);
  return d.hex(d.masterOmni("agentkeys", d.wallet(k3(), id).address));
}

test("a login through oidc-provider: callback page, confirm code, session; the derived master is the oidc identity's", async () => {
  const keys = await generateKeyPair("ES256");
  const { started, state, page, landed } = await throughProvider(keys, "corp", "alice");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-security-policy"), /default-src 'none'.*frame-ancestors 'none'/);
  assert.equal(page.headers.get("referrer-policy"), "no-referrer");
  assert.equal(page.headers.get("x-frame-options"), "DENY");
  const html = await page.text();
  assert.match(html, /data-flow="oauth2"/);
  assert.doesNotMatch(html, new RegExp(landed.searchParams.get("code")), "the code is not echoed");
  // A link scanner's second GET consumes nothing; the status is still pending.
  await fetch(`${gateway.base}${landed.pathname}${landed.search}`);
  assert.equal((await poll(keys, started.request_id)).body.status, "pending");
  // The page describes the request without a code and grants nothing.
  const described = await confirm({ state });
  assert.equal(described.status, 200, JSON.stringify(described.body));
  assert.equal(described.body.status, "confirm");
  assert.equal(described.body.provider, "corp");
  assert.equal(described.body.mode, "login");
  assert.equal(described.body.requester_ip, "127.0.0.1");
  assert.equal((await poll(keys, started.request_id)).body.status, "pending");
  // A wrong code is refused and counted; the right one completes.
  const wrong = await confirm({ state, confirm_code: "AAA-AAA" });
  assert.equal(wrong.status, 400);
  assert.equal(wrong.body.error, "invalid_confirm_code");
  const done = await confirm({ state, confirm_code: started.confirm_code.toLowerCase() });
  assert.equal(done.status, 200, JSON.stringify(done.body));
  assert.equal(done.body.status, "verified");
  // The state is single use.
  const replay = await confirm({ state, confirm_code: started.confirm_code });
  assert.equal(replay.status, 410, JSON.stringify(replay.body));
  // Another key cannot read the session; the starting key can.
  const other = await generateKeyPair("ES256");
  assert.equal((await poll(other, started.request_id)).status, 404);
  const session = await poll(keys, started.request_id);
  assert.equal(session.status, 200, JSON.stringify(session.body));
  assert.equal(session.body.status, "verified");
  assert.equal(session.body.master_omni, expectedMaster("oidc", `${issuer}#alice`));
  const whoami = await call(keys, "GET", "/v1/whoami", undefined, session.body.session_jwt);
  assert.equal(whoami.status, 200, JSON.stringify(whoami.body));
  assert.deepEqual(whoami.body.identity, { type: "oidc", value: `${issuer}#alice` });
  // Nothing of the provider's exchange reached the logs.
  assert.doesNotMatch(gateway.logs(), new RegExp(landed.searchParams.get("code")));
});

test("the oauth2_google identity type derives upstream's omni (value = sub), over client_secret_post", async () => {
  const keys = await generateKeyPair("ES256");
  const { started, state } = await throughProvider(keys, "googlish", "110169484474386276334");
  const done = await confirm({ state, confirm_code: started.confirm_code });
  assert.equal(done.status, 200, JSON.stringify(done.body));
  const session = await poll(keys, started.request_id);
  assert.equal(session.body.master_omni, expectedMaster("oauth2_google", "110169484474386276334"));
  // The provider's email claim never became an email identity.
  const list = await call(keys, "GET", "/v1/identities", undefined, session.body.session_jwt);
  assert.deepEqual(
    list.body.identities.map((i) => [i.type, i.value, i.created_with]),
    [["oauth2_google", "110169484474386276334", true]],
  );
});

test("without the confirm code nothing is granted, and five wrong codes end the login", async () => {
  const keys = await generateKeyPair("ES256");
  const { started, state } = await throughProvider(keys, "corp", "mallory-victim");
  for (let i = 0; i < 5; i++) {
    const wrong = await confirm({ state, confirm_code: `ZZZ-ZZ${i}` });
    assert.equal(wrong.body.error, "invalid_confirm_code");
  }
  const late = await confirm({ state, confirm_code: started.confirm_code });
  assert.equal(late.status, 410, JSON.stringify(late.body));
  const status = await poll(keys, started.request_id);
  assert.equal(status.status, 410, JSON.stringify(status.body));
  assert.equal(status.body.error, "expired");
});

async function forged(forgery) {
  const keys = await generateKeyPair("ES256");
  const { started, state } = await throughProvider(keys, "corp", "eve");
  forge = forgery;
  const result = await confirm({ state, confirm_code: started.confirm_code });
  forge = null;
  const status = await poll(keys, started.request_id);
  return { result, status };
}

const now = () => Math.floor(Date.now() / 1000);
const signRs = (payload, header = {}) =>
  new jose.SignJWT(payload).setProtectedHeader({ alg: "RS256", kid: "provider-1", ...header }).sign(providerKey);

const forgeries = {
  "wrong aud (the deployment's client_id)": (p) => signRs({ ...p, aud: "agentkeys" }),
  "wrong iss": (p) => signRs({ ...p, iss: "http://127.0.0.1:1" }),
  "azp of another client": (p) => signRs({ ...p, azp: "agentkeys-google" }),
  "missing nonce": (p) => {
    const { nonce: _n, ...rest } = p;
    return signRs(rest);
  },
  "another login's nonce": (p) => signRs({ ...p, nonce: "not-this-login" }),
  "alg none": (p) => `${jose.base64url.encode(JSON.stringify({ alg: "none", typ: "JWT" }))}.${jose.base64url.encode(JSON.stringify(p))}.`,
  "HS256 with the client secret": (p) =>
    new jose.SignJWT(p).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode("corp-secret-0123456789")),
  "a disallowed algorithm (PS256)": async (p) => {
    const { privateKey } = await jose.generateKeyPair("PS256");
    return new jose.SignJWT(p).setProtectedHeader({ alg: "PS256", kid: "provider-1" }).sign(privateKey);
  },
  expired: (p) => signRs({ ...p, iat: now() - 7200, exp: now() - 3600 }),
  "an unknown kid": async (p) => {
    const { privateKey } = await generateKeyPair("RS256");
    return new jose.SignJWT(p).setProtectedHeader({ alg: "RS256", kid: "rogue" }).sign(privateKey);
  },
  "a bad signature under the provider's kid": async (p) => {
    const { privateKey } = await generateKeyPair("RS256");
    return new jose.SignJWT(p).setProtectedHeader({ alg: "RS256", kid: "provider-1" }).sign(privateKey);
  },
};

for (const [name, forgery] of Object.entries(forgeries)) {
  test(`an ID token with ${name} is refused: invalid_id_token, no session`, async () => {
    const { result, status } = await forged(forgery);
    assert.equal(result.status, 502, JSON.stringify(result.body));
    assert.equal(result.body.error, "invalid_id_token", JSON.stringify(result.body));
    assert.equal(status.status, 502, JSON.stringify(status.body));
    assert.equal(status.body.error, "invalid_id_token");
  });
}

test("a genuine token re-signed by the provider's own key is accepted (the proxy itself changes nothing)", async () => {
  const { result, status } = await forged((p) => signRs(p));
  assert.equal(result.status, 200, JSON.stringify(result.body));
  assert.equal(status.body.status, "verified");
});

test("a master links a provider account; it then logs into the same master; unlinked, it is refused", async () => {
  const keys = await generateKeyPair("ES256");
  const first = await throughProvider(keys, "corp", "carol");
  await confirm({ state: first.state, confirm_code: first.started.confirm_code });
  const session = (await poll(keys, first.started.request_id)).body;
  const token = session.session_jwt;
  const link = await throughProvider(keys, "googlish", "carol-google", token);
  const described = await confirm({ state: link.state });
  assert.equal(described.body.mode, "link");
  const linked = await confirm({ state: link.state, confirm_code: link.started.confirm_code });
  assert.equal(linked.body.status, "linked", JSON.stringify(linked.body));
  assert.equal((await poll(keys, link.started.request_id)).body.status, "linked");
  // The linked account logs into carol's master from another device.
  const other = await generateKeyPair("ES256");
  const again = await throughProvider(other, "googlish", "carol-google");
  await confirm({ state: again.state, confirm_code: again.started.confirm_code });
  const second = (await poll(other, again.started.request_id)).body;
  assert.equal(second.master_omni, session.master_omni);
  // Another master cannot take it.
  const daveKeys = await generateKeyPair("ES256");
  const dave = await throughProvider(daveKeys, "corp", "dave");
  await confirm({ state: dave.state, confirm_code: dave.started.confirm_code });
  const daveToken = (await poll(daveKeys, dave.started.request_id)).body.session_jwt;
  const steal = await throughProvider(daveKeys, "googlish", "carol-google", daveToken);
  const taken = await confirm({ state: steal.state, confirm_code: steal.started.confirm_code });
  assert.equal(taken.status, 409, JSON.stringify(taken.body));
  assert.equal(taken.body.error, "identity_taken");
  // Unlinked, it logs into nothing.
  const gone = await call(keys, "DELETE", `/v1/identities/oauth2_google/carol-google`, undefined, token);
  assert.equal(gone.status, 200, JSON.stringify(gone.body));
  const third = await throughProvider(await generateKeyPair("ES256"), "googlish", "carol-google");
  const refused = await confirm({ state: third.state, confirm_code: third.started.confirm_code });
  assert.equal(refused.status, 403, JSON.stringify(refused.body));
  assert.equal(refused.body.error, "identity_unlinked");
});

// The CLI as a person runs it: `login oauth2` prints the URL and the code and polls; the person
// signs in at the provider and types the code on the page; then `identity list`.
function cli(home, args) {
  return spawn(bin, ["--gateway", PUBLIC_URL, ...args], {
    env: { PATH: process.env.PATH, HOME: home, AGENTKEYS_CONNECT: gateway.base },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

function finished(child) {
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (err += c));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, out, err })));
}

test("the CLI: login oauth2 --provider prints the URL and code, waits, and stores the session; identity list shows it", async () => {
  const home = mkdtempSync(join(tmpdir(), "agentkeys-cli-"));
  try {
    const child = cli(home, ["login", "oauth2", "--provider", "corp", "--no-browser", "--poll-ms", "50"]);
    const done = finished(child);
    let seen = "";
    const { url, code } = await new Promise((resolve, reject) => {
      child.stderr.on("data", (c) => {
        seen += c;
        const url = seen.match(/(http:\/\/\S+\/auth\?\S+)/)?.[1];
        const code = seen.match(/\n\s+([0-9A-Z]{3}-[0-9A-Z]{3})\s*\n/)?.[1];
        if (url && code) resolve({ url, code });
      });
      child.on("close", () => reject(new Error(`the CLI exited: ${seen}`)));
    });
    const landed = await signInAtProvider(url, "frank");
    const state = landed.searchParams.get("state");
    await fetch(`${gateway.base}${landed.pathname}${landed.search}`);
    const ok = await confirm({ state, confirm_code: code });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const result = await done;
    assert.equal(result.code, 0, result.err);
    assert.match(result.out, /logged in as master [0-9a-f]{64}/);
    assert.equal(result.out.match(/master ([0-9a-f]{64})/)[1], expectedMaster("oidc", `${issuer}#frank`));
    const list = await finished(cli(home, ["--json", "identity", "list"]));
    assert.equal(list.code, 0, list.err);
    assert.deepEqual(
      JSON.parse(list.out).identities.map((i) => [i.type, i.value]),
      [["oidc", `${issuer}#frank`]],
    );
    const last = await finished(cli(home, ["identity", "unlink", `oidc:${issuer}#frank`]));
    assert.equal(last.code, 3, "refused by the server");
    assert.match(last.err, /last_identity|last identity/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("the web console signs in through a provider: the provider opens in a tab of its own, the console shows the code and polls", async () => {
  const browser = await launchChromium();
  try {
    const { page, requests, errors } = await consolePage(browser, gateway.base);
    await page.waitForSelector(".provider");
    const buttons = await page.$$eval(".provider", (els) => els.map((e) => e.textContent));
    assert.deepEqual(buttons.sort(), ["Sign in with corp", "Sign in with googlish"]);
    const opened = browser.waitForTarget((t) => t.url().startsWith(issuer));
    await page.click(".provider");
    const tab = await (await opened).page();
    await page.waitForSelector("#confirm-code");
    const code = await page.$eval("#confirm-code", (el) => el.textContent);
    // The person signs in at the provider in that tab (its own login and consent forms); the
    // provider sends the tab to the gateway's callback page, where the code is typed.
    const callback = new Promise((resolve) =>
      tab.on("request", (r) => r.url().startsWith(REDIRECT) && resolve(new URL(r.url()))));
    await tab.waitForSelector('input[name="login"]');
    await tab.type('input[name="login"]', "dora");
    await tab.type('input[name="password"]', "any");
    await Promise.all([tab.waitForNavigation(), tab.click('button[type="submit"]')]);
    await tab.click('button[type="submit"]');
    const landed = await callback;
    await tab.close();
    const state = landed.searchParams.get("state");
    await fetch(`${gateway.base}${landed.pathname}${landed.search}`);
    const done = await confirm({ state, confirm_code: code });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    await page.waitForSelector("#who .path", { timeout: 10_000 });
    await page.waitForSelector("#tree");
    sameOrigin(requests, gateway.base);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
