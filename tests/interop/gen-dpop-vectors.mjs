// Generates gateway/tests/vectors/dpop.json: DPoP proofs built by npm `dpop` (panva), which the
// gateway's verifier must accept (at the proof's own iat).
// Run: node tests/interop/gen-dpop-vectors.mjs > gateway/tests/vectors/dpop.json
import { generateKeyPair, generateProof } from "dpop";
import { exportJWK, calculateJwkThumbprint } from "jose";

const keys = await generateKeyPair("ES256");
const jwk = await exportJWK(keys.publicKey);
const jkt = await calculateJwkThumbprint(jwk, "sha256");
const base = "https://keys.example.com";
const cases = [
  { name: "no-token", method: "POST", path: "/v1/auth/wallet/start", token: undefined },
  { name: "with-token", method: "GET", path: "/v1/whoami", token: "eyJhbGciOiJFUzI1NiJ9.e30.sig" },
  { name: "query-ignored", method: "GET", path: "/v1/actors", query: "?cursor=abc", token: "tok-2" },
];
const vectors = [];
for (const c of cases) {
  const proof = await generateProof(keys, base + c.path + (c.query ?? ""), c.method, undefined, c.token);
  const claims = JSON.parse(Buffer.from(proof.split(".")[1], "base64url").toString());
  vectors.push({ name: c.name, method: c.method, path: c.path, token: c.token ?? null, proof, iat: claims.iat });
}
console.log(JSON.stringify({ public_url: base, jkt, vectors }, null, 2));
