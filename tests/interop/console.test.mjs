// The web console (/console) in a real browser: headless Chromium from the distribution driven
// by puppeteer-core, against a real `agentkeys serve`. The browser signs in with an injected
// test EIP-1193 wallet, creates an agent and shows its link code once, approves a request the
// agent raised, revokes a subtree after a confirmation naming its size, and follows another
// revocation through the live feed; a second browser joins by pairing (claimed with
// `agentkeys device add`), a third by an email magic link. No request may leave the page's
// origin. CONSOLE_SCREENSHOTS=<dir> also writes the screenshots of docs/console.md.
// Needs AGENTKEYS_BIN (scripts/test.sh sets it) and CHROMIUM (default /usr/bin/chromium).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { once } from "node:events";
import { consolePage, launchChromium, sameOrigin } from "./chromium.mjs";
import { Wallet } from "ethers";

const bin = process.env.AGENTKEYS_BIN ?? "../../target/debug/agentkeys";
const shots = process.env.CONSOLE_SCREENSHOTS;
const PUBLIC_URL = "http://127.0.0.1:8090";
const KEY = `0x${"5e".repeat(32)}`;
const wallet = new Wallet(KEY);
const dir = mkdtempSync(join(tmpdir(), "agentkeys-console-"));
const data = join(dir, "data");
const masterHome = join(dir, "master");
const agentHome = join(dir, "agent");
const children = [];
let gateway;
let browser;

function env(home) {
  return { PATH: process.env.PATH, HOME: home, AGENTKEYS_CONNECT: gateway, AGENTKEYS_LOG: "warn" };
}

function cli(home, args, input) {
  return execFileSync(bin, ["--gateway", PUBLIC_URL, ...args], { env: env(home), input, encoding: "utf8" });
}

before(async () => {
  const server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data], {
    env: { PATH: process.env.PATH, AGENTKEYS_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(server);
  for await (const line of createInterface({ input: server.stdout })) {
    const m = line.match(/agentkeys listening on (http:\/\/\S+)/);
    if (m) {
      gateway = m[1];
      break;
    }
  }
  assert.ok(gateway, "the server exited before listening");
  browser = await launchChromium();
  const keyFile = join(dir, "wallet.key");
  writeFileSync(keyFile, `${KEY}\n`);
  chmodSync(keyFile, 0o600);
  cli(masterHome, ["login", "wallet", "--key-file", keyFile]);
});

after(async () => {
  await browser?.close();
  for (const c of children) c.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

function openConsole(options = {}) {
  return consolePage(browser, gateway, { ...options, wallet: options.withWallet ? wallet : undefined });
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`) });
}

const text = (page, selector) => page.$eval(selector, (el) => el.textContent);

// Waits until the tree row of `label` shows `status`.
async function rowStatus(page, label, status) {
  await page.waitForFunction(
    (label, status) => [...document.querySelectorAll("#tree li")].some((li) =>
      li.querySelector(".actor")?.textContent === label && li.querySelector(".badge")?.textContent === status),
    { timeout: 10_000 }, label, status);
}


test("wallet login, an agent and its link code, an approval, revocations seen live; nothing leaves the origin", async () => {
  const { page, requests, errors, context } = await openConsole({ withWallet: true });
  await page.waitForSelector("#login-wallet");
  await shot(page, "login");
  await page.click("#login-wallet");
  await page.waitForSelector("#who .path");
  const master = JSON.parse(cli(masterHome, ["whoami", "--json"]));
  assert.equal(await page.$eval("#who .path", (el) => el.title), master.omni);
  await page.waitForSelector("#tree");

  // Create an agent; its link code is shown once.
  await page.click("#create-agent");
  await page.type("#new-label", "ops");
  await page.click('input[value="sign:tx:1"]');
  await page.click("#create-dialog button[type=submit]");
  await page.waitForSelector("#link-code");
  const code = await text(page, "#link-code");
  assert.match(code, /^[0-9A-Z]{4}(-[0-9A-Z]{4}){4}$/);
  await shot(page, "link-code");
  await page.click("#link-code-done");
  await rowStatus(page, "ops", "active");
  assert.equal(await page.$("#link-code"), null, "the code is not shown again");
  cli(agentHome, ["link"], `${code}\n`);

  // The master's CLI (the same wallet: the same master) sets a policy; the agent asks for more
  // than the threshold and waits; the person approves in the browser.
  const policy = join(dir, "policy.json");
  writeFileSync(policy, JSON.stringify({
    chains: [1], tx: { to: "any" },
    budgets: [{ asset: "native", chain: 1, window_seconds: 86400, max: "1000000000000000000" }],
    approval: { above: [{ asset: "native", chain: 1, amount: "100000000000000000" }] },
  }));
  cli(masterHome, ["agent", "policy", "set", "//ops", "--file", policy]);
  const fee = 21000n * 1000000000n;
  const tx = { chain_id: 1, nonce: 0, to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    value: (300000000000000000n - fee).toString(), gas_limit: 21000, max_fee_per_gas: 1000000000, max_priority_fee_per_gas: 1 };
  const signer = spawn(bin, ["--gateway", PUBLIC_URL, "sign", "tx", "-", "--json"], { env: env(agentHome), stdio: ["pipe", "pipe", "pipe"] });
  children.push(signer);
  signer.stdin.end(JSON.stringify(tx));
  let signed = "";
  signer.stdout.on("data", (c) => (signed += c));
  await page.click('[data-view="approvals"]');
  await page.waitForSelector("[data-approval] .approve", { timeout: 15_000 });
  await shot(page, "approvals");
  await page.click("[data-approval] .approve");
  const [exit] = await once(signer, "exit");
  assert.equal(exit, 0, "the agent's signature came after the approval");
  assert.match(JSON.parse(signed).raw, /^0x02/);

  // The actor page: addresses, devices, budgets, recent rows.
  await page.click('[data-view="tree"]');
  await rowStatus(page, "ops", "active");
  await page.waitForFunction(() => document.querySelector("#tree li .bar") !== null);
  await shot(page, "tree");
  const ops = await page.$$eval("#tree .actor", (els) => els.findIndex((e) => e.textContent === "ops"));
  await (await page.$$("#tree .actor"))[ops].click();
  await page.waitForSelector("#devices li");
  assert.match(await text(page, "dl.facts"), /0x[0-9a-fA-F]{40}/);
  assert.match(await text(page, "#budgets"), /remaining 700000000000000000/);
  await shot(page, "actor");

  // Revoke ops with its child: the confirmation states the subtree's size.
  cli(masterHome, ["agent", "create", "worker", "--parent", "//ops"]);
  await page.click("#revoke");
  await page.waitForSelector("#revoke-size");
  assert.match(await text(page, "#revoke-size"), /stops 2 actors/);
  await shot(page, "revoke");
  await page.click("#revoke-confirm");
  await page.waitForSelector("#tree");
  await rowStatus(page, "ops", "revoked");
  await rowStatus(page, "worker", "revoked");

  // A revocation made elsewhere reaches the open tree through the live feed.
  cli(masterHome, ["agent", "create", "other"]);
  cli(masterHome, ["agent", "create", "sub", "--parent", "//other"]);
  await page.click('[data-view="events"]');
  await page.click('[data-view="tree"]');
  await rowStatus(page, "sub", "active");
  cli(masterHome, ["agent", "revoke", "//other"]);
  await rowStatus(page, "other", "revoked");
  await rowStatus(page, "sub", "revoked");
  // The browser goes offline (the console gives the stream up) while another revocation
  // commits; back online, the stream resumes with Last-Event-ID and the missed event arrives.
  const third = JSON.parse(cli(masterHome, ["agent", "create", "third", "--json"]));
  await page.click('[data-view="events"]');
  await page.setOfflineMode(true);
  await page.waitForSelector("#feed.offline");
  cli(masterHome, ["agent", "revoke", "//third"]);
  await page.setOfflineMode(false);
  await page.waitForFunction((omni) => [...document.querySelectorAll("#events li")].some((li) =>
    li.querySelector("strong")?.textContent === "actor_revoke" && li.querySelector(`[title="${omni}"]`)),
  { timeout: 10_000 }, third.omni);
  const ids = await page.$$eval("#events li", (els) => els.map((e) => e.dataset.event));
  assert.equal(new Set(ids).size, ids.length, "no event twice after the reconnect");
  await shot(page, "events");

  // The audit head verified in the browser.
  await page.click('[data-view="audit"]');
  await page.waitForFunction(() => /verified.*the last row hashes to it/.test(document.querySelector("#audit-status")?.textContent ?? ""), { timeout: 10_000 });
  await shot(page, "audit");

  // Search in the subtree: a part of a label finds the agent under its revoked parent.
  await page.click('[data-view="tree"]');
  await page.waitForSelector("#search");
  await page.type("#search", "ork");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => {
    const labels = [...document.querySelectorAll("#tree .actor")].map((e) => e.textContent);
    return labels.length === 1 && labels[0] === "worker";
  });

  // The keyboard alone opens and closes the create dialog.
  await page.click('[data-view="tree"]');
  await page.waitForSelector("#create-agent");
  await page.focus("#create-agent");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#create-dialog[open]");
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => !document.querySelector("#create-dialog[open]"));

  // 360 px wide: nothing scrolls sideways.
  await page.setViewport({ width: 360, height: 740 });
  for (const view of ["tree", "approvals", "events", "audit"]) {
    await page.click(`[data-view="${view}"]`);
    await page.waitForSelector("#content h2");
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 360, `${view} is ${width} px wide at 360`);
    if (view === "tree") await shot(page, "tree-360");
  }

  sameOrigin(requests, gateway);
  // Expected: refusals the console handles, and requests made while the test held it offline.
  const expected = /the server responded with a status of (401|409)|net::ERR_INTERNET_DISCONNECTED/;
  assert.deepEqual(errors.filter((e) => !expected.test(e)), []);
  await context.close();
});

test("a browser joins as another device of the master by pairing, claimed with `agentkeys device add`", async () => {
  const { page, requests, context } = await openConsole();
  await page.waitForSelector("#login-pair");
  await page.click("#login-pair");
  await page.waitForSelector("#pairing-command");
  const command = await text(page, "#pairing-command");
  const shown = await text(page, "#pairing-fingerprint");
  assert.equal(shown, await text(page, "#device-fingerprint"), "the fingerprint is this browser's key");
  await shot(page, "pairing");
  const code = command.match(/agentkeys device add (\S+)/)[1];
  const added = JSON.parse(cli(masterHome, ["device", "add", code, "--label", "console", "--json"]));
  assert.equal(added.fingerprint, shown);
  await page.waitForSelector("#who .path", { timeout: 10_000 });
  const master = JSON.parse(cli(masterHome, ["whoami", "--json"]));
  assert.equal(added.omni, master.omni);
  const devices = JSON.parse(cli(masterHome, ["device", "list", "--json"])).devices;
  assert.ok(devices.some((d) => d.label === "console" && d.binding_id === added.binding_id));
  sameOrigin(requests, gateway);
  await context.close();
});

test("a browser signs in with an email magic link", async () => {
  const { page, requests, context } = await openConsole();
  await page.waitForSelector("#email");
  await page.type("#email", "ops@example.com");
  await page.click("form button[type=submit]");
  await page.waitForSelector("#confirm-code");
  const confirm = await text(page, "#confirm-code");
  // The link from the log mailer's outbox, opened as the person would, with the code typed.
  const outbox = join(data, "outbox");
  const mail = readdirSync(outbox).map((f) => readFileSync(join(outbox, f), "utf8")).join("\n");
  const link = mail.match(/(http\S+\/auth\/email\/landing#t=[A-Za-z0-9_-]+)/)[1];
  const token = link.split("#t=")[1];
  const verified = await fetch(`${gateway}/v1/auth/email/verify`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ token, confirm_code: confirm }),
  });
  assert.equal(verified.status, 200, await verified.text());
  await page.waitForSelector("#who .path", { timeout: 10_000 });
  await page.waitForSelector("#tree");
  sameOrigin(requests, gateway);
  await context.close();
});
