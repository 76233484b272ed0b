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
      // OpenID masters: upstream's Google type (value = the ID token's sub) and the generic
      // type (value = <issuer>#<sub>), each anchored to W(identity omni) like an email master.
      openid: [
        ["oauth2_google", "110169484474386276334"],
        ["oidc", "https://example.okta.com#00u1abcdEFGH2345"],
      ].map(([type, value]) => {
        const id = d.identityOmni(clientId, type, value);
        const anchorWallet = d.wallet(k3, id).address;
        const m = d.masterOmni(clientId, anchorWallet);
        return {
          type,
          value,
          identity_omni: d.hex(id),
          anchor_wallet: anchorWallet,
          master_omni: d.hex(m),
          master_wallet: d.wallet(k3, m).address,
        };
      }),
    },
    null,
    2,
  ),
);
