// Interop: outputs of the real AgentKeys signer (produced by the `interop-outputs` binary, path
// in INTEROP_OUTPUTS) checked with ethers and @polkadot, and every identifier recomputed with
// the independent implementation in derive.mjs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Transaction, TypedDataEncoder, verifyMessage, verifyTypedData } from "ethers";
import { signatureVerify } from "@polkadot/util-crypto";
import * as d from "./derive.mjs";

const out = JSON.parse(readFileSync(process.env.INTEROP_OUTPUTS ?? "outputs.json", "utf8"));
const k3 = Buffer.from(out.k3, "hex");
const byPath = Object.fromEntries(out.actors.map((a) => [a.path, a]));

test("identifiers match the independent derivation", async () => {
  await d.ready();
  const identity = d.identityOmni("agentkeys", "email", out.email);
  const anchor = d.wallet(k3, identity).address;
  assert.equal(out.anchor_wallet, anchor);
  const master = d.masterOmni("agentkeys", anchor);
  assert.equal(out.master_omni, d.hex(master));
  for (const a of out.actors) {
    let omni = master;
    for (const label of a.path.split("//").filter(Boolean)) omni = d.childOmni(omni, label);
    assert.equal(a.omni, d.hex(omni), a.path);
    assert.equal(a.wallet, d.wallet(k3, omni).address, a.path);
    const sr = d.srAccount(k3, master, a.path);
    assert.equal(a.sr25519_public, sr.public, a.path);
    assert.equal(a.ss58, sr.ss58, a.path);
  }
});

test("ethers recovers the EIP-191 signature to the reported wallet", () => {
  const signer = verifyMessage(out.eip191.message, out.eip191.signature);
  assert.equal(signer.toLowerCase(), byPath[out.eip191.signer_path].wallet);
});

test("ethers recovers the EIP-712 signature and agrees on the digest", () => {
  const { EIP712Domain, ...types } = out.eip712.typed_data.types;
  const { domain, message } = out.eip712.typed_data;
  assert.equal(TypedDataEncoder.hash(domain, types, message), out.eip712.digest);
  const signer = verifyTypedData(domain, types, message, out.eip712.signature);
  assert.equal(signer.toLowerCase(), out.eip712.address);
  assert.equal(out.eip712.address, byPath["//ops//bot-1"].wallet);
});

test("ethers parses every transaction: sender, hash and fields", () => {
  assert.equal(out.transactions.length, 4);
  for (const t of out.transactions) {
    const tx = Transaction.from(t.raw);
    assert.equal(tx.from.toLowerCase(), byPath["//hermes"].wallet);
    assert.equal(tx.hash, t.hash);
    assert.equal(tx.chainId, BigInt(t.request.chain_id));
    assert.equal(tx.type, t.request.type ?? 2);
    assert.equal(tx.nonce, Number(BigInt(t.request.nonce)));
    assert.equal(tx.to?.toLowerCase() ?? null, t.request.to ?? null);
    assert.equal(tx.value, BigInt(t.request.value ?? 0));
    assert.equal(tx.gasLimit, BigInt(t.request.gas_limit));
    if (t.request.access_list) assert.equal(tx.accessList.length, t.request.access_list.length);
  }
});

test("@polkadot verifies the sr25519 signature with the key derived from 0x<root seed>//ops//bot-1", async () => {
  await d.ready();
  const master = Buffer.from(out.master_omni, "hex");
  const sr = d.srAccount(k3, master, out.sr25519.path);
  const message = Buffer.from(out.sr25519.message_hex, "hex");
  const result = signatureVerify(message, "0x" + out.sr25519.signature, sr.pair.publicKey);
  assert.equal(result.isValid, true);
  assert.equal(result.crypto, "sr25519");
  const tampered = Buffer.concat([message, Buffer.from("!")]);
  assert.equal(signatureVerify(tampered, "0x" + out.sr25519.signature, sr.pair.publicKey).isValid, false);
});

test("the committed policy vectors are what ethers builds and decodes today", async () => {
  const { execFileSync } = await import("node:child_process");
  const here = new URL(".", import.meta.url).pathname;
  const fresh = execFileSync(process.execPath, [`${here}gen-policy-vectors.mjs`], { encoding: "utf8" });
  const committed = readFileSync(`${here}../../actors/tests/vectors/policy.json`, "utf8");
  assert.deepEqual(JSON.parse(fresh), JSON.parse(committed));
});

test("the committed derivation vectors (email and OpenID masters) are what the JS implementation computes today", async () => {
  const { execFileSync } = await import("node:child_process");
  const here = new URL(".", import.meta.url).pathname;
  const fresh = execFileSync(process.execPath, [`${here}gen-derivation-vectors.mjs`], { encoding: "utf8" });
  const committed = readFileSync(`${here}../../actors/tests/vectors/derivations.json`, "utf8");
  assert.deepEqual(JSON.parse(fresh), JSON.parse(committed));
});
