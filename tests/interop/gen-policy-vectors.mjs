// Generates the policy classification vectors in actors/tests/vectors/policy.json with ethers.
// Run: node tests/interop/gen-policy-vectors.mjs > actors/tests/vectors/policy.json
// Each vector: a signing request body built with ethers (ERC-20 calls through
// Interface.encodeFunctionData; EIP-2612, DAI and Permit2 typed data) and what ethers decodes
// from it: the token, the amount (decimal), the recipient or spender, and whether the amount is
// an unlimited approval. The Rust classifier must report the same.
import { Interface, MaxUint256, TypedDataEncoder, getAddress } from "ethers";

const USDC = getAddress("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");
const DAI = getAddress("0x6b175474e89094c44da98b954eedeac495271d0f");
const WETH = getAddress("0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2");
const PERMIT2 = getAddress("0x000000000022d473030f116ddee9f6b43ac78ba3");
const ALICE = getAddress("0x1111111111111111111111111111111111111111");
const BOB = getAddress("0x2222222222222222222222222222222222222222");
const MAX160 = (1n << 160n) - 1n;

const erc20 = new Interface([
  "function transfer(address to, uint256 amount)",
  "function transferFrom(address from, address to, uint256 amount)",
  "function approve(address spender, uint256 amount)",
  "function increaseAllowance(address spender, uint256 added)",
]);

const vectors = [];

function tx(name, fn, args, expect) {
  const data = erc20.encodeFunctionData(fn, args);
  // What ethers decodes back is what the vector states.
  const decoded = erc20.decodeFunctionData(fn, data);
  const amount = decoded[decoded.length - 1];
  const party = fn === "transferFrom" ? decoded[1] : decoded[0];
  vectors.push({
    name,
    route: "/v1/sign/transaction",
    body: {
      tx: { chain_id: 1, nonce: 0, to: USDC, value: "0", data, gas_limit: 60000,
            max_fee_per_gas: "1000000000", max_priority_fee_per_gas: "1" },
    },
    expect: {
      token: USDC,
      chain: 1,
      amount: amount.toString(),
      recipient: getAddress(party),
      unlimited: amount >= 1n << 255n,
      ...expect,
    },
  });
}

tx("erc20-transfer", "transfer", [BOB, 5_000_000n]);
tx("erc20-transferFrom", "transferFrom", [ALICE, BOB, 7n]);
tx("erc20-approve", "approve", [BOB, 123n]);
tx("erc20-approve-unlimited", "approve", [BOB, MaxUint256]);
tx("erc20-increaseAllowance", "increaseAllowance", [BOB, 10n ** 18n]);

function typed(name, domain, types, primaryType, message, expect) {
  // ethers checks the document and computes its digest (the server signs the same).
  const digest = TypedDataEncoder.hash(domain, types, message);
  const domainFields = [
    ["name", "string"], ["version", "string"], ["chainId", "uint256"], ["verifyingContract", "address"],
  ].filter(([n]) => n in domain).map(([name, type]) => ({ name, type }));
  vectors.push({
    name,
    route: "/v1/sign/eip712",
    body: {
      typed_data: {
        types: { EIP712Domain: domainFields, ...types },
        primaryType,
        domain,
        message: JSON.parse(JSON.stringify(message, (_, v) => (typeof v === "bigint" ? v.toString() : v))),
      },
    },
    digest,
    expect,
  });
}

const permitTypes = {
  Permit: [
    { name: "owner", type: "address" }, { name: "spender", type: "address" },
    { name: "value", type: "uint256" }, { name: "nonce", type: "uint256" }, { name: "deadline", type: "uint256" },
  ],
};
typed("eip2612-permit", { name: "USD Coin", version: "2", chainId: 1, verifyingContract: USDC }, permitTypes,
  "Permit", { owner: ALICE, spender: BOB, value: 250_000_000n, nonce: 0n, deadline: 1_900_000_000n },
  { token: USDC, chain: 1, amount: "250000000", recipient: BOB, unlimited: false });
typed("eip2612-permit-unlimited", { name: "USD Coin", version: "2", chainId: 1, verifyingContract: USDC }, permitTypes,
  "Permit", { owner: ALICE, spender: BOB, value: MaxUint256, nonce: 1n, deadline: 1_900_000_000n },
  { token: USDC, chain: 1, amount: "340282366920938463463374607431768211455", recipient: BOB, unlimited: true });

const daiTypes = {
  Permit: [
    { name: "holder", type: "address" }, { name: "spender", type: "address" }, { name: "nonce", type: "uint256" },
    { name: "expiry", type: "uint256" }, { name: "allowed", type: "bool" },
  ],
};
typed("dai-permit-allowed", { name: "Dai Stablecoin", version: "1", chainId: 1, verifyingContract: DAI }, daiTypes,
  "Permit", { holder: ALICE, spender: BOB, nonce: 0n, expiry: 0n, allowed: true },
  { token: DAI, chain: 1, amount: "340282366920938463463374607431768211455", recipient: BOB, unlimited: true });
typed("dai-permit-revoke", { name: "Dai Stablecoin", version: "1", chainId: 1, verifyingContract: DAI }, daiTypes,
  "Permit", { holder: ALICE, spender: BOB, nonce: 1n, expiry: 0n, allowed: false },
  { token: DAI, chain: 1, amount: "0", recipient: BOB, unlimited: false });

const p2domain = { name: "Permit2", chainId: 8453, verifyingContract: PERMIT2 };
const details = [
  { name: "token", type: "address" }, { name: "amount", type: "uint160" },
  { name: "expiration", type: "uint48" }, { name: "nonce", type: "uint48" },
];
typed("permit2-single", p2domain, {
  PermitSingle: [{ name: "details", type: "PermitDetails" }, { name: "spender", type: "address" }, { name: "sigDeadline", type: "uint256" }],
  PermitDetails: details,
}, "PermitSingle", { details: { token: USDC, amount: 1_000_000n, expiration: 0n, nonce: 0n }, spender: BOB, sigDeadline: 1n },
  { token: USDC, chain: 8453, amount: "1000000", recipient: BOB, unlimited: false });
typed("permit2-single-max", p2domain, {
  PermitSingle: [{ name: "details", type: "PermitDetails" }, { name: "spender", type: "address" }, { name: "sigDeadline", type: "uint256" }],
  PermitDetails: details,
}, "PermitSingle", { details: { token: USDC, amount: MAX160, expiration: 0n, nonce: 0n }, spender: BOB, sigDeadline: 1n },
  { token: USDC, chain: 8453, amount: MAX160.toString(), recipient: BOB, unlimited: true });
typed("permit2-batch", p2domain, {
  PermitBatch: [{ name: "details", type: "PermitDetails[]" }, { name: "spender", type: "address" }, { name: "sigDeadline", type: "uint256" }],
  PermitDetails: details,
}, "PermitBatch", {
  details: [{ token: USDC, amount: 5n, expiration: 0n, nonce: 0n }, { token: WETH, amount: 9n, expiration: 0n, nonce: 0n }],
  spender: BOB, sigDeadline: 1n,
}, { token: WETH, chain: 8453, amount: "9", recipient: BOB, unlimited: false, also: { token: USDC, amount: "5" } });
const tokenPermissions = [{ name: "token", type: "address" }, { name: "amount", type: "uint256" }];
typed("permit2-transfer-from", p2domain, {
  PermitTransferFrom: [
    { name: "permitted", type: "TokenPermissions" }, { name: "spender", type: "address" },
    { name: "nonce", type: "uint256" }, { name: "deadline", type: "uint256" },
  ],
  TokenPermissions: tokenPermissions,
}, "PermitTransferFrom", { permitted: { token: USDC, amount: 42n }, spender: BOB, nonce: 0n, deadline: 1n },
  { token: USDC, chain: 8453, amount: "42", recipient: BOB, unlimited: false });
typed("permit2-batch-witness", p2domain, {
  PermitBatchWitnessTransferFrom: [
    { name: "permitted", type: "TokenPermissions[]" }, { name: "spender", type: "address" },
    { name: "nonce", type: "uint256" }, { name: "deadline", type: "uint256" }, { name: "witness", type: "Order" },
  ],
  TokenPermissions: tokenPermissions,
  Order: [{ name: "id", type: "uint256" }],
}, "PermitBatchWitnessTransferFrom", {
  permitted: [{ token: WETH, amount: 3n }], spender: BOB, nonce: 0n, deadline: 1n, witness: { id: 7n },
}, { token: WETH, chain: 8453, amount: "3", recipient: BOB, unlimited: false });

console.log(JSON.stringify(vectors, null, 1));
