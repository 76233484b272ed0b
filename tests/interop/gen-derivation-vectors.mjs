// Generates actors/tests/vectors/derivations.json with the independent JS implementation.
// Run: node tests/interop/gen-derivation-vectors.mjs > actors/tests/vectors/derivations.json
import * as d from "./derive.mjs";

await d.ready();
const k3 = Buffer.from([...Array(32).keys()]);
const clientId = "agentkeys";
const email = "test@litentry.org";
const identity = d.identityOmni(clientId, "email", email);
const anchor = d.wallet(k3, identity).address;
const master = d.masterOmni(clientId, anchor);
const actor = (path) => {
  let omni = master;
  for (const label of path.split("//").filter(Boolean)) omni = d.childOmni(omni, label);
  const w = d.wallet(k3, omni);
  const sr = d.srAccount(k3, master, path);
  return { path, omni: d.hex(omni), wallet: w.address, sr25519_public: sr.public, ss58: sr.ss58 };
};
console.log(
  JSON.stringify(
    {
      k3: d.hex(k3),
      client_id: clientId,
      email,
      identity_omni: d.hex(identity),
      anchor_wallet: anchor,
      master_omni: d.hex(master),
      actors: ["", "//hermes", "//ops//bot-1", "//42", "//" + "a".repeat(32)].map(actor),
    },
    null,
    2,
  ),
);
