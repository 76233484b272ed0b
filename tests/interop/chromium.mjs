// Headless Chromium from the distribution, driven by puppeteer-core, for the console tests
// (console.test.mjs, oauth2.test.mjs). CHROMIUM names the binary (default /usr/bin/chromium).
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";

export function launchChromium() {
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // As root Chromium needs --no-sandbox; /dev/shm is small in containers.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--no-first-run"],
  });
}

// /console of `base` in a fresh browser context (its own IndexedDB: its own device key). Every
// request the page makes is recorded, every console error and CSP violation collected, and with
// `wallet` (an ethers Wallet) the page gets it as an injected EIP-1193 provider.
export async function consolePage(browser, base, { wallet, width = 1100 } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width, height: 800 });
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  await page.evaluateOnNewDocument(() => document.addEventListener("securitypolicyviolation", (e) =>
    console.error(`CSP violation: ${e.violatedDirective} at ${e.sourceFile}:${e.lineNumber}:${e.columnNumber} ${e.sample}`)));
  if (wallet) {
    await page.exposeFunction("__testWalletSign", (hexMessage) =>
      wallet.signMessage(Buffer.from(hexMessage.slice(2), "hex")));
    await page.evaluateOnNewDocument((address) => {
      window.ethereum = {
        isTestWallet: true,
        async request({ method, params }) {
          if (method === "eth_requestAccounts" || method === "eth_accounts") return [address];
          if (method === "eth_chainId") return "0x1";
          if (method === "personal_sign") return window.__testWalletSign(params[0]);
          throw Object.assign(new Error(`unsupported ${method}`), { code: 4200 });
        },
      };
    }, wallet.address);
  }
  await page.goto(`${base}/console`);
  return { page, context, requests, errors };
}

// Every request the page made went to `base`'s origin.
export function sameOrigin(requests, base) {
  const origin = new URL(base).origin;
  const foreign = requests.filter((u) => !u.startsWith("data:") && new URL(u).origin !== origin);
  assert.deepEqual(foreign, [], "the console made a request to another origin");
}
