// An independent JavaScript implementation of the AgentKeys derivations (DESIGN §3), built
// only from node:crypto, ethers and @polkadot: the Rust code is checked against it.
import { createHash, hkdfSync } from "node:crypto";
import { Wallet } from "ethers";
import { Keyring } from "@polkadot/keyring";
import { cryptoWaitReady } from "@polkadot/util-crypto";

export const ready = cryptoWaitReady;

const sha256 = (...parts) => createHash("sha256").update(Buffer.concat(parts.map((p) => Buffer.from(p)))).digest();
const hex = (b) => Buffer.from(b).toString("hex");

export const identityOmni = (clientId, type, value) => sha256(clientId, type, value);

export function wallet(k3, omni) {
  for (let retry = 0; retry <= 15; retry++) {
    const info = Buffer.concat([Buffer.from([1]), Buffer.from("agentkeys-evm-wallet"), omni, retry ? Buffer.from([retry]) : Buffer.alloc(0)]);
    const secret = Buffer.from(hkdfSync("sha256", k3, Buffer.from("agentkeys-signer-v0"), info, 32));
    try {
      return { secret: "0x" + hex(secret), address: new Wallet("0x" + hex(secret)).address.toLowerCase() };
    } catch {
      // not a valid scalar: next retry byte
    }
  }
  throw new Error("no valid scalar");
}

export const masterOmni = (clientId, anchor) => sha256(clientId, "evm", anchor.toLowerCase());

export const childOmni = (parent, label) => sha256("agentkeys-hdkd-v1", parent, "//", label);

export const rootSeed = (k3, master) => Buffer.from(hkdfSync("sha256", k3, Buffer.from("agentkeys-sr25519-v1"), master, 32));

export function srAccount(k3, master, path) {
  const keyring = new Keyring({ type: "sr25519", ss58Format: 42 });
  const pair = keyring.addFromUri("0x" + hex(rootSeed(k3, master)) + path);
  return { pair, public: hex(pair.publicKey), ss58: pair.address };
}

export { hex };
