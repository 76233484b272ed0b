// The MCP server (`agentkeys mcp`) driven by the official TypeScript SDK client
// (@modelcontextprotocol/sdk): over stdio and over Streamable HTTP (bearer token, loopback Host,
// no foreign Origin), against a real gateway, a real agent with a budget and an approval
// threshold, the injecting proxy and an HTTPS upstream. Signatures are checked with ethers; no
// tool result may carry the session token, the device key or a credential value.
// Needs AGENTKEYS_BIN (scripts/test.sh sets it).
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { verifyMessage, Transaction, parseEther } from "ethers";

const bin = process.env.AGENTKEYS_BIN ?? "../../target/debug/agentkeys";
const PUBLIC_URL = "http://127.0.0.1:8090";
const SECRET = "ghp_mcp-interop-credential-0123456789";
const TLS = "../../gateway/tests/fixtures/tls";
const dir = mkdtempSync(join(tmpdir(), "agentkeys-mcp-"));
const masterHome = join(dir, "master");
const agentHome = join(dir, "agent");
const children = [];

// Spawns a long-running agentkeys process and waits for the line matching `ready`.
async function started(args, env, ready) {
  const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let logs = "";
  child.stderr.on("data", (c) => (logs += c));
  for await (const line of createInterface({ input: child.stdout })) {
    const m = line.match(ready);
    if (m) return { child, match: m };
  }
  throw new Error(`${args.join(" ")} exited early: ${logs}`);
}

let gateway;
let upstream;
let seenByUpstream = [];
const results = [];

function env(home) {
  return { PATH: process.env.PATH, HOME: home, AGENTKEYS_CONNECT: gateway, AGENTKEYS_LOG: "warn" };
}

function cli(home, args, input) {
  return execFileSync(bin, ["--gateway", PUBLIC_URL, ...args], { env: env(home), input, encoding: "utf8" });
}

function tx(totalWei, nonce) {
  const fee = 21000n * 1000000000n;
  return {
    tx: {
      chain_id: 1, nonce, to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
      value: (totalWei - fee).toString(), gas_limit: 21000,
      max_fee_per_gas: 1000000000, max_priority_fee_per_gas: 1,
    },
  };
}

before(async () => {
  const server = await started(
    ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", join(dir, "data")],
    { PATH: process.env.PATH, AGENTKEYS_LOG: "warn" },
    /agentkeys listening on (http:\/\/\S+)/,
  );
  gateway = server.match[1];
  // An HTTPS upstream that echoes the header the proxy injects.
  upstream = https.createServer(
    { key: readFileSync(join(TLS, "server.key")), cert: readFileSync(join(TLS, "server.pem")) },
    (req, res) => {
      seenByUpstream.push(req.headers["x-api-key"]);
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ path: req.url, echoed: req.headers["x-api-key"] }));
    },
  );
  await new Promise((r) => upstream.listen(0, "127.0.0.1", r));

  // The master, its agent (budget 1 ETH a day, a person approves above 0.5 ETH), a credential.
  const key = join(dir, "wallet.key");
  writeFileSync(key, `0x${"61".repeat(32)}\n`);
  chmodSync(key, 0o600);
  cli(masterHome, ["login", "wallet", "--key-file", key]);
  cli(masterHome, ["agent", "create", "bot", "--scope", "sign:eip191", "--scope", "sign:tx:1", "--scope", "cred:read:echo"]);
  const policy = join(dir, "policy.json");
  writeFileSync(policy, JSON.stringify({
    chains: [1], tx: { to: "any" }, messages: { text: true },
    budgets: [{ asset: "native", chain: 1, window_seconds: 86400, max: "1000000000000000000" }],
    approval: { above: [{ asset: "native", chain: 1, amount: "500000000000000000" }] },
  }));
  cli(masterHome, ["agent", "policy", "set", "//bot", "--file", policy]);
  cli(masterHome, [
    "cred", "set", "echo", "--stdin",
    "--inject-base-url", `https://127.0.0.1:${upstream.address().port}/api`,
    "--inject-header", "X-Api-Key", "--inject-template", "{}",
  ], SECRET);
  const code = JSON.parse(cli(masterHome, ["link-code", "issue", "//bot", "--json"])).code;
  cli(agentHome, ["link"], `${code}\n`);
});

after(() => {
  for (const c of children) c.kill("SIGTERM");
  upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

function secrets() {
  const profile = join(agentHome, ".agentkeys", "default");
  const session = JSON.parse(readFileSync(join(profile, "session.json"), "utf8"));
  const device = JSON.parse(readFileSync(join(profile, "device.jwk"), "utf8"));
  return [session.session_jwt, device.d, SECRET];
}

async function call(client, name, args = {}) {
  const r = await client.callTool({ name, arguments: args });
  results.push(JSON.stringify(r));
  return { isError: r.isError === true, body: JSON.parse(r.content[0].text) };
}

test("stdio: tools with the routes' schemas; signatures verify; budget and approval come back as tool errors with their codes", async () => {
  const proxy = await started(
    ["--gateway", PUBLIC_URL, "proxy", "--listen", "127.0.0.1:0", "--test-ca-file", join(TLS, "ca.pem")],
    env(agentHome),
    /listening on (http:\/\/\S+) \(bearer token in (\S+)\)/,
  );
  const client = new Client({ name: "interop", version: "1.0.0" });
  await client.connect(new StdioClientTransport({
    command: bin,
    args: ["--gateway", PUBLIC_URL, "mcp", "--approval-wait-seconds", "1", "--service", "echo", "--proxy-url", proxy.match[1], "--proxy-token-file", proxy.match[2]],
    env: env(agentHome),
    stderr: "ignore",
  }));
  assert.equal(client.getServerVersion().name, "agentkeys");

  const { tools } = await client.listTools();
  const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
  for (const name of ["whoami", "sign_message", "sign_typed_data", "sign_transaction", "check_policy", "approval_status", "list_credentials", "http_request"]) {
    assert.ok(byName[name], `tool ${name}`);
  }
  assert.ok(byName.sign_message.inputSchema.properties.message, "the EIP-191 body's fields");
  assert.ok(byName.sign_transaction.inputSchema.properties.tx);
  assert.match(byName.sign_transaction.description, /remaining/, "the budget is in the description");
  assert.match(byName.sign_transaction.description, /sign:tx:1/, "the scopes are in the description");

  const me = await call(client, "whoami");
  assert.equal(me.isError, false);
  assert.equal(me.body.role, "agent");

  const signed = await call(client, "sign_message", { message: "hello from an MCP client" });
  assert.equal(signed.isError, false, JSON.stringify(signed.body));
  assert.equal(verifyMessage("hello from an MCP client", signed.body.signature), me.body.wallet);

  const over = await call(client, "sign_transaction", tx(parseEther("2"), 0));
  assert.equal(over.isError, true);
  assert.equal(over.body.error, "budget_exceeded");
  assert.equal(over.body.remaining, "1000000000000000000", "what remains, for the model to explain");

  const checked = await call(client, "check_policy", { route: "/v1/sign/transaction", body: tx(parseEther("0.6"), 0) });
  assert.equal(checked.body.decision, "approval_required");

  const held = await call(client, "sign_transaction", tx(parseEther("0.6"), 0));
  assert.equal(held.isError, true);
  assert.equal(held.body.error, "approval_required");
  const id = held.body.approval_id;
  assert.ok(id);
  const waiting = await call(client, "approval_status", { approval_id: id });
  assert.equal(waiting.isError, false);
  assert.equal(waiting.body.status, "pending", "no decision within the wait: pending, with the id");
  assert.equal(waiting.body.approval_id, id);
  cli(masterHome, ["approvals", "approve", id]);
  const decided = await call(client, "approval_status", { approval_id: id });
  assert.equal(decided.isError, false);
  assert.equal(decided.body.status, "approved");
  const raw = Transaction.from(decided.body.result.raw);
  assert.equal(raw.from, me.body.wallet, "signed by the agent's wallet, never broadcast");
  assert.equal(decided.body.result.hash, raw.hash);

  const listed = await call(client, "list_credentials");
  assert.deepEqual(listed.body, { credentials: [{ service: "echo" }] });

  const fetched = await call(client, "http_request", { service: "echo", method: "GET", path: "/user" });
  assert.equal(fetched.isError, false, JSON.stringify(fetched.body));
  assert.equal(fetched.body.status, 200);
  assert.equal(seenByUpstream.at(-1), SECRET, "the upstream got the credential");
  assert.equal(JSON.parse(fetched.body.body).echoed, "[redacted]");
  const refused = await call(client, "http_request", { service: "other", method: "GET", path: "/" });
  assert.equal(refused.body.error, "service_not_configured");

  await client.close();
  proxy.child.kill("SIGTERM");
});

test("HTTP: the bearer token is required, a foreign Origin is refused; through the daemon the tools work", async () => {
  const daemon = await started(["--gateway", PUBLIC_URL, "daemon"], env(agentHome), /agentkeys daemon serving agent (\S+)/);
  const mcp = await started(
    ["--gateway", PUBLIC_URL, "mcp", "--listen", "127.0.0.1:0"],
    env(agentHome),
    /listening on (http:\/\/\S+) \(bearer token in (\S+)\)/,
  );
  const url = mcp.match[1];
  const token = readFileSync(mcp.match[2], "utf8").trim();
  const initialize = {
    jsonrpc: "2.0", id: 1, method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
  };
  const post = (headers) => fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
    body: JSON.stringify(initialize),
  });
  assert.equal((await post({})).status, 401, "no token");
  assert.equal((await post({ authorization: "Bearer wrong-token-wrong-token-wrong-token" })).status, 401);
  assert.equal((await post({ authorization: `Bearer ${token}`, origin: "http://evil.example" })).status, 403, "foreign Origin");
  assert.equal((await post({ authorization: `Bearer ${token}`, "sec-fetch-site": "cross-site" })).status, 403, "a cross-site browser request without Origin");

  const accepted = await post({ authorization: `Bearer ${token}` });
  assert.equal(accepted.status, 200);
  assert.match(await accepted.text(), /"protocolVersion":"2025-11-25"/, "the revision the SDK client speaks");

  const refusedClient = new Client({ name: "no-token", version: "1.0.0" });
  await assert.rejects(refusedClient.connect(new StreamableHTTPClientTransport(new URL(url))));

  const client = new Client({ name: "interop-http", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  const me = await call(client, "whoami");
  assert.equal(me.body.omni, daemon.match[1], "served through the daemon's session");
  const signed = await call(client, "sign_message", { message: "over HTTP" });
  assert.equal(verifyMessage("over HTTP", signed.body.signature), me.body.wallet);
  await client.close();
});

test("no tool result carried the session token, the device key or a credential value", () => {
  assert.ok(results.length >= 10);
  for (const secret of secrets()) {
    assert.ok(secret && secret.length > 16);
    for (const r of results) assert.ok(!r.includes(secret), `a tool result leaked a secret: ${r.slice(0, 80)}`);
  }
});
