// Generates actors/tests/vectors/siwe.json: EIP-4361 messages built by npm `siwe` and signed by
// ethers with a fixed test key.
// Run: node tests/interop/gen-siwe-vectors.mjs > actors/tests/vectors/siwe.json
import { SiweMessage } from "siwe";
import { Wallet } from "ethers";

const wallet = new Wallet("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318");
const base = { domain: "127.0.0.1:8090", address: wallet.address, uri: "http://127.0.0.1:8090", version: "1", chainId: 1, nonce: "abcdefgh12", issuedAt: "2026-11-29T10:00:00.000Z" };
const cases = [
  { name: "minimal", fields: base },
  { name: "statement", fields: { ...base, statement: "Sign in to AgentKeys as the master of your agents." } },
  {
    name: "everything",
    fields: {
      ...base,
      scheme: "https",
      domain: "keys.example.com",
      uri: "https://keys.example.com",
      chainId: 8453,
      nonce: "Zx9Yw8Vu7TsR",
      statement: "I accept the AgentKeys terms.",
      issuedAt: "2026-11-29T10:00:00Z",
      expirationTime: "2026-11-29T10:45:00.000Z",
      notBefore: "2026-11-29T09:59:00Z",
      requestId: "req-7f3a",
      resources: ["https://keys.example.com/v1/actors", "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"],
    },
  },
  { name: "resources-only", fields: { ...base, resources: ["https://example.com/x"] } },
];
const vectors = [];
for (const c of cases) {
  const text = new SiweMessage(c.fields).prepareMessage();
  vectors.push({ name: c.name, text, fields: c.fields, signature: await wallet.signMessage(text) });
}
console.log(JSON.stringify({ address: wallet.address, vectors }, null, 2));
