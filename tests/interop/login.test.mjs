// Interop: a real `agentkeys serve` driven by third-party clients only — the SIWE message built
// by npm `siwe` and signed by `ethers`, every request carrying a proof built by npm `dpop`, an
// agent's signatures verified by `ethers` against its derived wallet. Needs AGENTKEYS_BIN (the
// debug binary; scripts/test.sh sets it).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { generateKeyPair, generateProof } from "dpop";
import { TypedDataEncoder, Wallet, getAddress, verifyMessage, verifyTypedData } from "ethers";
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

async function login(keys) {
  const wallet = Wallet.createRandom();
  const start = await call(keys, "POST", "/v1/auth/wallet/start", { address: wallet.address, chain_id: 1 });
  const signature = await wallet.signMessage(start.body.message);
  const verified = await call(keys, "POST", "/v1/auth/wallet/verify", { request_id: start.body.request_id, signature });
  assert.equal(verified.status, 200, JSON.stringify(verified.body));
  return verified.body.session_jwt;
}

test("an agent linked with npm dpop signs; ethers verifies against its derived wallet", async () => {
  const masterKeys = await generateKeyPair("ES256");
  const master = await login(masterKeys);
  const created = await call(masterKeys, "POST", "/v1/actors",
    { label: "hermes", scopes: ["sign:eip191", "sign:eip712"] }, master);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const agentWallet = created.body.wallet;
  const code = await call(masterKeys, "POST", `/v1/actors/${created.body.omni}/link-codes`, {}, master);
  assert.equal(code.status, 200, JSON.stringify(code.body));

  // The agent's own machine: its own npm-dpop key redeems the code.
  const agentKeys = await generateKeyPair("ES256");
  const linked = await call(agentKeys, "POST", "/v1/link/redeem", { code: code.body.code });
  assert.equal(linked.status, 200, JSON.stringify(linked.body));
  const agent = linked.body.session_jwt;

  const message = "hermes says hello";
  const signed = await call(agentKeys, "POST", "/v1/sign/eip191", { message }, agent);
  assert.equal(signed.status, 200, JSON.stringify(signed.body));
  assert.equal(verifyMessage(message, signed.body.signature), agentWallet);

  const domain = { name: "AgentKeys interop", version: "1", chainId: 1 };
  const types = { Order: [{ name: "id", type: "uint256" }, { name: "note", type: "string" }] };
  const value = { id: 7, note: "typed" };
  const typed = await call(agentKeys, "POST", "/v1/sign/eip712", {
    typed_data: {
      types: { EIP712Domain: [{ name: "name", type: "string" }, { name: "version", type: "string" }, { name: "chainId", type: "uint256" }], ...types },
      primaryType: "Order", domain, message: value,
    },
  }, agent);
  assert.equal(typed.status, 200, JSON.stringify(typed.body));
  assert.equal(typed.body.digest, TypedDataEncoder.hash(domain, types, value));
  assert.equal(verifyTypedData(domain, types, value, typed.body.signature), agentWallet);

  // The master's session is useless with the agent's key, and vice versa.
  const crossed = await call(agentKeys, "GET", "/v1/whoami", undefined, master);
  assert.equal(crossed.body.error, "invalid_dpop_proof");
});

test("OIDC: openid-client discovers the issuer; jose verifies a minted token with the remote JWKS", async () => {
  const client = await import("openid-client");
  const { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } = await import("jose");
  // The issuer is PUBLIC_URL; requests go to the server's real port.
  const realFetch = globalThis.fetch;
  const toServer = (url, init) => realFetch(String(url).replace(PUBLIC_URL, base), init);
  const config = await client.discovery(new URL(PUBLIC_URL), "agentkeys-interop", undefined, undefined, {
    execute: [client.allowInsecureRequests],
    [client.customFetch]: toServer,
  });
  const metadata = config.serverMetadata();
  assert.equal(metadata.issuer, PUBLIC_URL);
  assert.equal(metadata.jwks_uri, `${PUBLIC_URL}/.well-known/jwks.json`);

  const keys = await generateKeyPair("ES256");
  const session = await login(keys);
  const minted = await call(keys, "POST", "/v1/oidc/token", {}, session);
  assert.equal(minted.status, 200, JSON.stringify(minted.body));
  const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`));
  const { payload } = await jwtVerify(minted.body.jwt, jwks, {
    issuer: PUBLIC_URL,
    audience: "sts.amazonaws.com",
    algorithms: ["ES256"],
  });
  assert.match(payload.sub, /^agentkeys:actor:[0-9a-f]{64}$/);
  assert.deepEqual(payload["https://aws.amazon.com/tags"].principal_tags.agentkeys_actor_omni, [payload.sub.split(":")[2]]);
  // A session token is not in that JWKS: jose refuses it.
  assert.notEqual(decodeProtectedHeader(session).kid, decodeProtectedHeader(minted.body.jwt).kid);
  await assert.rejects(jwtVerify(session, jwks, { issuer: PUBLIC_URL }));
});
