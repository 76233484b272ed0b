// Interop: a real `agentkeys serve` logged into by third-party clients only — the SIWE
// message built by npm `siwe`, signed by `ethers`, every request carrying a proof built by npm
// `dpop`. Needs AGENTKEYS_BIN (the debug binary; scripts/test.sh sets it).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { generateKeyPair, generateProof } from "dpop";
import { Wallet, getAddress } from "ethers";
import { SiweMessage } from "siwe";

const PUBLIC_URL = "http://127.0.0.1:8090";
const bin = process.env.AGENTKEYS_BIN ?? "../../target/debug/agentkeys";
const dataDir = mkdtempSync(join(tmpdir(), "agentkeys-interop-"));

async function startServer() {
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", dataDir], {
    env: { PATH: process.env.PATH, AGENTKEYS_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const m = line.match(/agentkeys listening on (http:\/\/\S+)/);
    if (m) return { child, base: m[1] };
  }
  throw new Error("the server exited before listening");
}

const { child, base } = await startServer();
after(() => {
  child.kill("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
});

async function call(keys, method, path, body, token, nonce) {
  const proof = await generateProof(keys, PUBLIC_URL + path, method, nonce, token);
  const headers = { dpop: proof };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `DPoP ${token}`;
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json(), nonce: response.headers.get("dpop-nonce") };
}

test("a SIWE message built by npm siwe and signed by ethers logs in; npm dpop proofs are accepted", async () => {
  const keys = await generateKeyPair("ES256");
  const wallet = Wallet.createRandom();
  const start = await call(keys, "POST", "/v1/auth/wallet/start", { address: wallet.address, chain_id: 1 });
  assert.equal(start.status, 200, JSON.stringify(start.body));
  // The client builds its own message around the server's nonce.
  const message = new SiweMessage({
    domain: "127.0.0.1:8090",
    address: getAddress(wallet.address),
    statement: "Sign in to AgentKeys from an npm client.",
    uri: PUBLIC_URL,
    version: "1",
    chainId: 1,
    nonce: start.body.nonce,
    issuedAt: new Date().toISOString(),
    expirationTime: new Date(Date.now() + 300_000).toISOString(),
  }).prepareMessage();
  const signature = await wallet.signMessage(message);
  const verified = await call(keys, "POST", "/v1/auth/wallet/verify", { message, signature });
  assert.equal(verified.status, 200, JSON.stringify(verified.body));
  const { session_jwt: token, omni } = verified.body;
  assert.match(omni, /^[0-9a-f]{64}$/);

  const me = await call(keys, "GET", "/v1/whoami", undefined, token);
  assert.equal(me.status, 200, JSON.stringify(me.body));
  assert.equal(me.body.omni, omni);
  assert.equal(me.body.anchor_wallet, wallet.address.toLowerCase());

  // Refresh: npm dpop carries the server's nonce on the retry.
  const first = await call(keys, "POST", "/v1/session/refresh", {}, token);
  assert.equal(first.body.error, "use_dpop_nonce");
  assert.ok(first.nonce);
  const refreshed = await call(keys, "POST", "/v1/session/refresh", {}, token, first.nonce);
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));

  // The same token with a proof by another npm-dpop key is refused.
  const thief = await generateKeyPair("ES256");
  const stolen = await call(thief, "GET", "/v1/whoami", undefined, token);
  assert.equal(stolen.status, 401);
  assert.equal(stolen.body.error, "invalid_dpop_proof");
});
