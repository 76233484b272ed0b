// Generates the EIP-712 known-answer vectors in actors/tests/vectors/eip712.json with ethers.
// Run: node tests/interop/gen-eip712-vectors.mjs > actors/tests/vectors/eip712.json
// Each vector: the eth_signTypedData_v4 document, ethers' digest, and ethers' signature with a
// fixed test key (RFC 6979, so the Rust signer must produce the same bytes).
import { AbiCoder, TypedDataEncoder, Wallet, keccak256, toUtf8Bytes, concat } from "ethers";

const KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const wallet = new Wallet(KEY);

const domainTypes = (domain) =>
  [
    ["name", "string"],
    ["version", "string"],
    ["chainId", "uint256"],
    ["verifyingContract", "address"],
    ["salt", "bytes32"],
  ]
    .filter(([n]) => n in domain)
    .map(([name, type]) => ({ name, type }));

const cases = [
  {
    name: "eip-mail",
    domain: { name: "Ether Mail", version: "1", chainId: 1, verifyingContract: "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC" },
    primaryType: "Mail",
    types: {
      Person: [{ name: "name", type: "string" }, { name: "wallet", type: "address" }],
      Mail: [{ name: "from", type: "Person" }, { name: "to", type: "Person" }, { name: "contents", type: "string" }],
    },
    message: {
      from: { name: "Cow", wallet: "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826" },
      to: { name: "Bob", wallet: "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB" },
      contents: "Hello, Bob!",
    },
  },
  {
    name: "struct-arrays",
    domain: { name: "Groups", version: "2", chainId: 137 },
    primaryType: "Group",
    types: {
      Person: [{ name: "name", type: "string" }, { name: "wallet", type: "address" }],
      Group: [{ name: "name", type: "string" }, { name: "members", type: "Person[]" }],
    },
    message: {
      name: "ops",
      members: [
        { name: "Ann", wallet: "0x1111111111111111111111111111111111111111" },
        { name: "Ben", wallet: "0x2222222222222222222222222222222222222222" },
      ],
    },
  },
  {
    name: "nested-arrays",
    domain: { name: "Matrix", chainId: 1 },
    primaryType: "Grid",
    types: {
      Cell: [{ name: "x", type: "uint8" }],
      Grid: [
        { name: "rows", type: "uint256[][]" },
        { name: "fixed", type: "int16[2][]" },
        { name: "cells", type: "Cell[2]" },
      ],
    },
    message: {
      rows: [[1, 2, 3], [], ["115792089237316195423570985008687907853269984665640564039457584007913129639935"]],
      fixed: [[-1, 2], [32767, -32768]],
      cells: [{ x: 0 }, { x: 255 }],
    },
  },
  {
    name: "bytes",
    domain: { name: "Bytes", version: "1", chainId: 10, salt: "0x" + "ab".repeat(32) },
    primaryType: "Blob",
    types: {
      Blob: [
        { name: "b1", type: "bytes1" },
        { name: "b16", type: "bytes16" },
        { name: "b32", type: "bytes32" },
        { name: "data", type: "bytes" },
        { name: "flag", type: "bool" },
      ],
    },
    message: { b1: "0xff", b16: "0x" + "01".repeat(16), b32: "0x" + "fe".repeat(32), data: "0xdeadbeef00", flag: true },
  },
  {
    name: "negative-ints",
    domain: { name: "Ints", chainId: 1 },
    primaryType: "Ints",
    types: {
      Ints: [
        { name: "a", type: "int8" },
        { name: "b", type: "int64" },
        { name: "c", type: "int256" },
        { name: "d", type: "int256" },
        { name: "e", type: "uint64" },
      ],
    },
    message: { a: -128, b: "-12345", c: "-1", d: "-57896044618658097711785492504343953926634992332820282019728792003956564819968", e: "18446744073709551615" },
  },
];

const out = [];
for (const c of cases) {
  const digest = TypedDataEncoder.hash(c.domain, c.types, c.message);
  const signature = await wallet.signTypedData(c.domain, c.types, c.message);
  out.push({
    name: c.name,
    typed_data: { types: { EIP712Domain: domainTypes(c.domain), ...c.types }, primaryType: c.primaryType, domain: c.domain, message: c.message },
    digest,
    signature,
  });
}

// Recursive types: ethers' TypedDataEncoder refuses them ("circular type reference"), so this
// vector is computed by hand from ethers' primitives (keccak256, ABI encoding), following
// EIP-712: encodeType(Node) = "Node(uint8 value,Node[] children)".
{
  const abi = AbiCoder.defaultAbiCoder();
  const typeHash = keccak256(toUtf8Bytes("Node(uint8 value,Node[] children)"));
  const hashNode = (n) =>
    keccak256(abi.encode(["bytes32", "uint8", "bytes32"], [typeHash, n.value, keccak256(concat(n.children.map(hashNode)))]));
  const domain = { name: "Tree", chainId: 1 };
  const message = { value: 1, children: [{ value: 2, children: [] }, { value: 3, children: [{ value: 4, children: [] }] }] };
  const separator = TypedDataEncoder.hashDomain(domain);
  const digest = keccak256(concat(["0x1901", separator, hashNode(message)]));
  const signature = wallet.signingKey.sign(digest).serialized;
  out.push({
    name: "recursive",
    typed_data: { types: { EIP712Domain: domainTypes(domain), Node: [{ name: "value", type: "uint8" }, { name: "children", type: "Node[]" }] }, primaryType: "Node", domain, message },
    digest,
    signature,
  });
}

console.log(JSON.stringify({ key: KEY, address: wallet.address, vectors: out }, null, 2));
