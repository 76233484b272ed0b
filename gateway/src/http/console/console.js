// The AgentKeys operator console (docs/console.md). Plain JavaScript, no dependencies, inlined
// into /console and allowed by its hash in the page's CSP. It speaks only the public API: the
// browser is a device like any other, with a non-extractable P-256 key kept in IndexedDB that
// signs a DPoP proof for every request. No URL carries a credential; nothing is sent to another
// origin.
"use strict";

// ---------------------------------------------------------------------------------------------
// Small helpers

const enc = new TextEncoder();

function b64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(text) {
  const clean = text.replace(/^0x/, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", typeof data === "string" ? enc.encode(data) : data));
}

function randomId() {
  return b64url(crypto.getRandomValues(new Uint8Array(16)));
}

// h("div", {class: "x", onclick: f}, child, "text") — elements built with text nodes only.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function short(omni) {
  return omni ? `${omni.slice(0, 8)}…${omni.slice(-4)}` : "";
}

function when(text) {
  return text ? text.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The device key and the session, kept in IndexedDB

const DB = "agentkeys-console";

function db() {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore("kv");
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

async function kv(mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const tx = d.transaction("kv", mode);
    const req = fn(tx.objectStore("kv"));
    tx.oncomplete = () => resolve(req && req.result);
    tx.onerror = () => reject(tx.error);
  });
}
const kvGet = (key) => kv("readonly", (s) => s.get(key));
const kvPut = (key, value) => kv("readwrite", (s) => s.put(value, key));
const kvDelete = (key) => kv("readwrite", (s) => s.delete(key));

// The device: a P-256 key pair whose private half cannot be exported (the CryptoKey object is
// stored as is; IndexedDB keeps it non-extractable).
async function deviceKey() {
  let device = await kvGet("device");
  if (!device) {
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const full = await crypto.subtle.exportKey("jwk", pair.publicKey);
    const jwk = { crv: "P-256", kty: "EC", x: full.x, y: full.y };
    const jkt = b64url(await sha256(JSON.stringify(jwk))); // RFC 7638: members in this order
    device = { privateKey: pair.privateKey, jwk, jkt };
    await kvPut("device", device);
  }
  return device;
}

// The fingerprint people compare: 64 bits of the thumbprint, hex in groups of four.
function fingerprint(jkt) {
  const bytes = Uint8Array.from(atob(jkt.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return hex(bytes.slice(0, 8)).match(/.{4}/g).join("-");
}

// ---------------------------------------------------------------------------------------------
// The API client: a DPoP proof (RFC 9449) on every request

const state = {
  issuer: "",
  device: null,
  session: null,
  nonce: null,
  me: null,
  view: "tree",
  actor: null,
  events: [],
  feed: null,
  lastEventId: null,
  refreshing: null,
};

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.body = body;
  }
}

async function proof(method, path, token) {
  const header = { typ: "dpop+jwt", alg: "ES256", jwk: state.device.jwk };
  const claims = {
    jti: randomId(),
    htm: method,
    htu: state.issuer + path.split("?")[0],
    iat: Math.floor(Date.now() / 1000),
  };
  if (token) claims.ath = b64url(await sha256(token));
  if (state.nonce) claims.nonce = state.nonce;
  const input = `${b64url(enc.encode(JSON.stringify(header)))}.${b64url(enc.encode(JSON.stringify(claims)))}`;
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, state.device.privateKey, enc.encode(input));
  return `${input}.${b64url(sig)}`;
}

async function send(method, path, body, token, extra) {
  const headers = { dpop: await proof(method, path, token), ...(extra || {}) };
  if (token) headers.authorization = `DPoP ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const nonce = response.headers.get("dpop-nonce");
  if (nonce) state.nonce = nonce;
  return response;
}

// One call: retried once with a server nonce, and once after refreshing an expired session.
async function api(method, path, body, { auth = true, stream = false, headers } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const token = auth ? state.session && state.session.session_jwt : undefined;
    if (auth && !token) throw new ApiError(401, { error: "invalid_token", message: "not signed in" });
    const response = await send(method, path, body, token, headers);
    if (stream && response.ok) return response;
    const answer = await response.json().catch(() => ({}));
    if (response.ok) return answer;
    if (answer.error === "use_dpop_nonce" && attempt < 2) continue;
    if (auth && answer.error === "invalid_token" && attempt === 0 && (await refresh())) continue;
    throw new ApiError(response.status, answer);
  }
  throw new ApiError(401, { error: "use_dpop_nonce", message: "the server kept asking for a nonce" });
}

// One refresh at a time: the calls that found the token expired together share it.
function refresh() {
  if (!state.refreshing) state.refreshing = refreshOnce().finally(() => { state.refreshing = null; });
  return state.refreshing;
}

async function refreshOnce() {
  if (!state.session) return false;
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      const response = await send("POST", "/v1/session/refresh", {}, state.session.session_jwt);
      const answer = await response.json().catch(() => ({}));
      if (response.ok) {
        await keepSession({ ...state.session, ...answer });
        return true;
      }
      if (answer.error !== "use_dpop_nonce") break;
    }
  } catch (_) {
    // fall through: sign in again
  }
  await forgetSession();
  return false;
}

async function keepSession(session) {
  state.session = session;
  await kvPut("session", session);
}

async function forgetSession() {
  state.session = null;
  state.me = null;
  state.lastEventId = null;
  state.events = [];
  stopFeed();
  await kvDelete("session");
  render();
}

// ---------------------------------------------------------------------------------------------
// Rendering

const root = () => document.getElementById("app");

function setBusy(button, busy) {
  if (button) button.disabled = busy;
}

function notice(text, kind) {
  const box = document.getElementById("notice");
  box.className = kind || "info";
  box.textContent = text;
}

function failure(e) {
  notice(e instanceof ApiError ? `${e.code || e.status}: ${e.message}` : String(e), "error");
}

function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

function render() {
  const app = root();
  app.replaceChildren();
  document.getElementById("who").replaceChildren();
  if (!state.session) return renderLogin(app);
  renderHeader();
  const tabs = [
    ["tree", "Tree"],
    ["approvals", "Approvals"],
    ["events", "Events"],
    ["audit", "Audit"],
  ];
  const nav = h("nav", { "aria-label": "views" },
    tabs.map(([id, label]) =>
      h("button", {
        class: state.view === id ? "tab current" : "tab",
        "aria-current": state.view === id ? "page" : null,
        "data-view": id,
        onclick: () => show(id),
      }, label)));
  const content = h("section", { id: "content", "aria-live": "polite" });
  app.append(nav, content);
  const views = { tree: viewTree, actor: viewActor, approvals: viewApprovals, events: viewEvents, audit: viewAudit };
  (views[state.view] || viewTree)(content).catch(failure);
}

function show(view, actor) {
  state.view = view;
  if (actor) state.actor = actor;
  notice("");
  render();
}

function renderHeader() {
  const me = state.session;
  document.getElementById("who").append(
    h("span", { class: "path", title: me.omni }, me.path || short(me.omni)),
    " ",
    badge(me.role || "master"),
    " ",
    h("button", { class: "link", id: "logout", onclick: () => forgetSession() }, "Sign out"),
  );
}

// ---------------------------------------------------------------------------------------------
// Signing in

function renderLogin(app) {
  const wallet = h("button", { id: "login-wallet", onclick: (e) => loginWallet(e.target) }, "Sign in with a wallet");
  if (!window.ethereum) {
    wallet.disabled = true;
    wallet.title = "no EIP-1193 wallet in this browser";
  }
  const email = h("input", { id: "email", type: "email", autocomplete: "email", placeholder: "you@example.com", required: true });
  const emailForm = h("form", {
    onsubmit: (e) => {
      e.preventDefault();
      loginEmail(email.value, e.submitter);
    },
  }, h("label", { for: "email" }, "Email"), " ", email, " ", h("button", { type: "submit" }, "Send a link"));
  const providers = h("div", { id: "providers" });
  const pair = h("button", { id: "login-pair", onclick: (e) => loginPairing(e.target) }, "Pair with a device that is signed in");
  app.append(
    h("section", { class: "card" }, h("h2", {}, "Sign in"), h("p", {}, wallet), emailForm, providers,
      h("p", {}, pair), h("div", { id: "login-progress", "aria-live": "polite" })),
  );
  deviceKey().then((d) =>
    app.append(h("p", { class: "muted" }, "This browser's device key: ", h("code", { id: "device-fingerprint" }, fingerprint(d.jkt)))));
  fetch("/readyz", { credentials: "omit" }).then((r) => r.json()).then((ready) => {
    for (const p of ready.providers || []) {
      providers.append(h("button", { class: "provider", onclick: (e) => loginProvider(p.name, e.target) }, `Sign in with ${p.name}`), " ");
    }
  }).catch(() => {});
}

function progress(...children) {
  const box = document.getElementById("login-progress");
  if (box) box.replaceChildren(...children);
}

async function signedIn(session) {
  await keepSession(session);
  notice("");
  render();
  startFeed();
}

function utf8Hex(text) {
  return `0x${hex(enc.encode(text))}`;
}

async function loginWallet(button) {
  setBusy(button, true);
  try {
    const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
    const chain = parseInt(await window.ethereum.request({ method: "eth_chainId" }), 16) || 1;
    const start = await api("POST", "/v1/auth/wallet/start", { address, chain_id: chain }, { auth: false });
    progress(h("p", {}, "Sign the message in your wallet."));
    const signature = await window.ethereum.request({ method: "personal_sign", params: [utf8Hex(start.message), address] });
    await signedIn(await api("POST", "/v1/auth/wallet/verify", { request_id: start.request_id, signature }, { auth: false }));
  } catch (e) {
    failure(e);
  } finally {
    setBusy(button, false);
  }
}

// Email and OpenID logins: show the confirmation code, then poll with this device's key.
async function pollLogin(path) {
  for (;;) {
    await sleep(2000);
    const status = await api("GET", path, undefined, { auth: false });
    if (status.status === "verified") return status;
  }
}

async function loginEmail(address, button) {
  setBusy(button, true);
  try {
    const asked = await api("POST", "/v1/auth/email/request", { email: address }, { auth: false });
    progress(h("p", {}, "Open the link we sent to ", h("strong", {}, address), " and type this code there: ",
      h("code", { id: "confirm-code", class: "code" }, asked.confirm_code)));
    await signedIn(await pollLogin(`/v1/auth/email/status/${asked.request_id}`));
  } catch (e) {
    failure(e);
  } finally {
    setBusy(button, false);
  }
}

async function loginProvider(provider, button) {
  setBusy(button, true);
  try {
    const started = await api("POST", "/v1/auth/oauth2/start", { provider }, { auth: false });
    // The provider's page opens in a tab of its own; this page keeps its key and polls.
    window.open(started.authorization_url, "_blank", "noopener");
    progress(h("p", {}, `Finish signing in with ${provider} in the new tab, then type this code there: `,
      h("code", { id: "confirm-code", class: "code" }, started.confirm_code)));
    await signedIn(await pollLogin(`/v1/auth/oauth2/status/${started.request_id}`));
  } catch (e) {
    failure(e);
  } finally {
    setBusy(button, false);
  }
}

async function loginPairing(button) {
  setBusy(button, true);
  try {
    const started = await api("POST", "/v1/pairing/request", {}, { auth: false });
    progress(
      h("p", {}, "On a machine where you are signed in, run:"),
      h("pre", {}, h("code", { id: "pairing-command" }, `agentkeys device add ${started.code}`)),
      h("p", {}, "Add this browser only if the fingerprint it shows is ",
        h("code", { id: "pairing-fingerprint", class: "code" }, started.fingerprint), "."),
    );
    for (;;) {
      await sleep(2000);
      const polled = await api("POST", "/v1/pairing/poll", { request_id: started.request_id }, { auth: false });
      if (polled.status === "claimed") return await signedIn(polled);
    }
  } catch (e) {
    failure(e);
  } finally {
    setBusy(button, false);
  }
}

// ---------------------------------------------------------------------------------------------
// The tree

const PAGE = 25;

async function viewTree(content) {
  const rootOmni = state.session.omni;
  const query = h("input", { id: "search", type: "search", placeholder: "label or omni", "aria-label": "search the tree" });
  const list = h("ul", { class: "tree", id: "tree" });
  const more = h("button", { id: "tree-more", hidden: true }, "Load more");
  let cursor = null;
  let search = null;
  // Each fresh load (the first, a search, a live update) supersedes the loads before it: an
  // answer that arrives after a newer load began is dropped, so a search typed while the tree
  // is still loading never shows the two lists mixed.
  let generation = 0;
  const load = async (fresh) => {
    if (fresh) {
      generation += 1;
      cursor = null;
    }
    const mine = generation;
    const params = new URLSearchParams({ limit: String(search ? 20 : PAGE) });
    if (cursor) params.set("cursor", cursor);
    if (search) params.set("q", search);
    const page = await api("GET", `/v1/actors/${rootOmni}/${search ? "search" : "tree"}?${params}`);
    if (mine !== generation) return;
    if (fresh) list.replaceChildren();
    for (const entry of page.entries) list.append(treeRow(entry));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!list.children.length) list.append(h("li", { class: "muted" }, search ? "no match" : "no agents yet"));
  };
  more.addEventListener("click", () => load(false).catch(failure));
  const form = h("form", {
    class: "row",
    role: "search",
    onsubmit: (e) => {
      e.preventDefault();
      search = query.value.trim() || null;
      load(true).catch(failure);
    },
  }, query, h("button", { type: "submit" }, "Search"));
  content.append(
    h("div", { class: "row spread" }, h("h2", {}, "Tree"), createButton(rootOmni)),
    form, list, more,
  );
  state.reloadTree = () => load(true);
  await load(true);
}

function treeRow(entry) {
  const meters = h("span", { class: "meters" });
  const row = h("li", { "data-omni": entry.omni },
    h("button", { class: "link actor", onclick: () => show("actor", entry.omni) }, entry.label || "(master)"),
    " ", badge(entry.status),
    " ", h("span", { class: "muted" }, entry.depth === 0 ? "master" : "agent"),
    " ", h("span", { class: "scopes" }, (entry.scopes || []).join(" ")),
    meters);
  row.style.setProperty("--depth", String(Math.min(entry.depth, 12)));
  if (entry.status === "active") budgetMeters(entry.omni, meters).catch(() => {});
  return row;
}

// Budget meters, loaded lazily (one policy read per shown row).
async function budgetMeters(omni, into) {
  const policy = await api("GET", `/v1/actors/${omni}/policy`);
  for (const b of policy.budgets || []) into.append(meter(b));
}

function meter(b) {
  const max = BigInt(b.max || "0");
  const spent = BigInt(b.spent || "0");
  const pct = max > 0n ? Number((spent * 1000n) / max) / 10 : 0;
  const label = `${b.asset === "signatures" ? "signatures" : b.asset} on ${b.chain}: ${b.spent} of ${b.max} per ${b.window_seconds} s`;
  // A bar sized through the CSSOM (the CSP allows no style attributes).
  const fill = h("span", { class: "fill" });
  fill.style.width = `${Math.min(pct, 100)}%`;
  return h("span", { class: "meter", title: label },
    h("span", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, "aria-label": label }, fill),
    ` ${pct.toFixed(0)}%`);
}

function createButton(parent) {
  return h("button", { class: "primary", id: "create-agent", onclick: () => createDialog(parent) }, "Create an agent");
}

const SCOPE_CHOICES = ["sign:eip191", "sign:eip712", "sign:sr25519", "sign:tx:1", "actors:create", "approvals:decide", "policy:set"];

function createDialog(parent) {
  const label = h("input", { id: "new-label", required: true, pattern: "[a-z0-9\\-]{1,32}", autocomplete: "off" });
  const boxes = SCOPE_CHOICES.map((s) => h("label", { class: "check" }, h("input", { type: "checkbox", value: s, checked: s === "sign:eip191" }), ` ${s}`));
  const extra = h("input", { id: "new-scopes", placeholder: "more scopes, space-separated", autocomplete: "off" });
  const dialog = h("dialog", { id: "create-dialog", "aria-labelledby": "create-title" });
  const form = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      const scopes = [...boxes.map((b) => b.firstChild).filter((i) => i.checked).map((i) => i.value),
        ...extra.value.split(/\s+/).filter(Boolean)];
      try {
        const created = await api("POST", "/v1/actors", { label: label.value, parent, scopes });
        const code = await api("POST", `/v1/actors/${created.omni}/link-codes`, {});
        dialog.replaceChildren(
          h("h2", {}, `${created.path} created`),
          h("p", {}, "Its link code, shown this once (", when(code.expires_at), "):"),
          h("p", {}, h("code", { id: "link-code", class: "code big" }, code.code)),
          h("p", {}, "On the agent's machine: ", h("code", {}, "agentkeys link"), " and type the code."),
          h("button", { id: "link-code-done", autofocus: true, onclick: () => { dialog.close(); dialog.remove(); if (state.reloadTree) state.reloadTree().catch(failure); } }, "Done"));
      } catch (err) {
        failure(err);
      }
    },
  },
  h("h2", { id: "create-title" }, "Create an agent"),
  h("p", {}, h("label", { for: "new-label" }, "Label"), " ", label),
  h("fieldset", {}, h("legend", {}, "Scopes"), boxes, extra),
  h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Create"),
    h("button", { type: "button", onclick: () => { dialog.close(); dialog.remove(); } }, "Cancel")));
  dialog.append(form);
  document.body.append(dialog);
  dialog.showModal();
  label.focus();
}

// ---------------------------------------------------------------------------------------------
// An actor's page

async function viewActor(content) {
  const omni = state.actor;
  const [record, devices, policy, audit] = await Promise.all([
    api("GET", `/v1/actors/${omni}`),
    api("GET", `/v1/actors/${omni}/devices`),
    api("GET", `/v1/actors/${omni}/policy`),
    newestRows(omni, 20),
  ]);
  const isSelf = omni === state.session.omni;
  const facts = h("dl", { class: "facts" });
  for (const [k, v] of [["omni", record.omni], ["path", record.path], ["role", record.role], ["wallet", record.wallet],
    ["sr25519", record.sr25519_public], ["ss58", record.ss58], ["created", when(record.created_at)],
    ["scopes", (record.scopes || []).join(" ")]]) {
    facts.append(h("dt", {}, k), h("dd", {}, h("code", {}, v || "")));
  }
  const actions = h("div", { class: "row" });
  if (record.status === "active") {
    actions.append(
      h("button", { id: "issue-link-code", onclick: (e) => issueCode(omni, e.target) }, "Link code"),
      createButton(omni));
    if (!isSelf) actions.append(h("button", { class: "danger", id: "revoke", onclick: () => revokeDialog(record) }, "Revoke…"));
  }
  const deviceList = h("ul", { class: "plain", id: "devices" }, devices.devices.map((d) =>
    h("li", {}, h("strong", {}, d.label), ` #${d.binding_id} `, h("code", {}, fingerprint(d.jkt)),
      h("span", { class: "muted" }, ` added ${when(d.created_at)}, used ${when(d.last_used)}`),
      d.deleted_at ? h("span", {}, " ", badge("deleted")) : h("button", {
        class: "link", onclick: async () => {
          if (!confirm(`Delete device #${d.binding_id} (${d.label})? Its tokens stop at once.`)) return;
          try { await api("DELETE", `/v1/actors/${omni}/devices/${d.binding_id}`); show("actor"); } catch (err) { failure(err); }
        },
      }, "delete"))));
  const budgets = h("div", { id: "budgets" }, (policy.budgets || []).length
    ? policy.budgets.map((b) => h("p", {}, meter(b), ` remaining ${b.remaining}${b.frees_at ? `, frees at ${when(b.frees_at)}` : ""}`))
    : h("p", { class: "muted" }, "no budgets"));
  const rules = h("pre", { class: "policy" }, JSON.stringify({ policy: policy.policy, set_by: policy.set_by, inherited: policy.inherited }, null, 2));
  content.append(
    h("div", { class: "row spread" }, h("h2", {}, record.label || "master", " ", badge(record.status)), actions),
    facts,
    h("h3", {}, "Devices"), deviceList,
    h("h3", {}, "Budgets"), budgets,
    h("details", {}, h("summary", {}, "Policy"), rules),
    h("h3", {}, "Recent audit rows"),
    audit.rows.length ? auditTable(audit.rows) : h("p", { class: "muted" }, "none among the chain's newest 1,000 rows"),
  );
}

async function issueCode(omni, button) {
  setBusy(button, true);
  try {
    const code = await api("POST", `/v1/actors/${omni}/link-codes`, {});
    const dialog = h("dialog", { id: "code-dialog" },
      h("h2", {}, "Link code"),
      h("p", {}, "Shown this once; it expires at ", when(code.expires_at), "."),
      h("p", {}, h("code", { id: "link-code", class: "code big" }, code.code)),
      h("button", { autofocus: true, onclick: () => { dialog.close(); dialog.remove(); } }, "Done"));
    document.body.append(dialog);
    dialog.showModal();
  } catch (e) {
    failure(e);
  } finally {
    setBusy(button, false);
  }
}

async function revokeDialog(record) {
  let count;
  try {
    count = await api("GET", `/v1/actors/${record.omni}/count`);
  } catch (e) {
    return failure(e);
  }
  const size = `${count.actors}${count.more ? "+" : ""} actor${count.actors === 1 && !count.more ? "" : "s"}`;
  const dialog = h("dialog", { id: "revoke-dialog", role: "alertdialog", "aria-labelledby": "revoke-title" },
    h("h2", { id: "revoke-title" }, `Revoke ${record.path}?`),
    h("p", { id: "revoke-size" }, `This stops ${size}: ${record.label} and everything below it, at once and for good. Its label cannot be used again.`),
    h("div", { class: "row" },
      h("button", {
        class: "danger", id: "revoke-confirm", onclick: async () => {
          try {
            const done = await api("POST", `/v1/actors/${record.omni}/revoke`);
            dialog.close(); dialog.remove();
            notice(`Revoked ${record.path}: ${done.revoked}${done.revoked_more ? "+" : ""} actors, committed in ${done.commit_ms} ms.`);
            show("tree");
          } catch (e) {
            failure(e);
          }
        },
      }, `Revoke ${size}`),
      h("button", { autofocus: true, onclick: () => { dialog.close(); dialog.remove(); } }, "Cancel")));
  document.body.append(dialog);
  dialog.showModal();
}

// The newest `count` rows of the caller's chain (about `actor` when given): the audit route pages
// oldest first by chain position, so the page starts near the head's length instead of walking
// the chain (an actor's rows are looked for among the newest 1,000).
async function newestRows(actor, count) {
  const head = await api("GET", "/v1/audit/head");
  const span = actor ? 1000 : count;
  const params = new URLSearchParams({ after: String(Math.max(0, head.length - span)), limit: String(span) });
  if (actor) params.set("actor", actor);
  const page = await api("GET", `/v1/audit?${params}`);
  return { head, rows: page.rows.slice(-count) };
}

function auditTable(rows) {
  if (!rows.length) return h("p", { class: "muted" }, "no rows");
  return h("table", { class: "audit" },
    h("thead", {}, h("tr", {}, ["#", "at", "operation", "outcome", "target"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.slice().reverse().map((r) => h("tr", {},
      h("td", {}, r.chain_seq), h("td", {}, when(r.at)), h("td", {}, r.operation), h("td", {}, r.outcome),
      h("td", { title: r.target }, short(r.target))))));
}

// ---------------------------------------------------------------------------------------------
// Approvals

async function viewApprovals(content) {
  const list = await api("GET", "/v1/approvals?state=pending");
  content.append(h("h2", {}, "Approvals"));
  if (!list.approvals.length) return content.append(h("p", { class: "muted", id: "no-approvals" }, "nothing waits for you"));
  content.append(h("ul", { class: "plain", id: "approvals" }, list.approvals.map((a) => {
    const decide = (verb) => async (e) => {
      setBusy(e.target, true);
      try {
        const done = await api("POST", `/v1/approvals/${a.id}/${verb}`);
        notice(`${a.id}: ${done.status}`);
        show("approvals");
      } catch (err) {
        failure(err);
        setBusy(e.target, false);
      }
    };
    const spends = (a.spends || []).map((s) => `${s.amount} ${s.asset} on ${s.chain}`).join(", ");
    return h("li", { class: "card", "data-approval": a.id },
      h("p", {}, h("strong", {}, a.route), ` by ${short(a.agent)}`, a.recipient ? ` to ${a.recipient}` : "", spends ? ` — ${spends}` : ""),
      h("p", { class: "muted" }, `asked ${when(a.created_at)}, expires ${when(a.expires_at)}`),
      h("div", { class: "row" },
        h("button", { class: "primary approve", onclick: decide("approve") }, "Approve"),
        h("button", { class: "danger deny", onclick: decide("deny") }, "Deny")));
  })));
}

// ---------------------------------------------------------------------------------------------
// The live feed: /v1/events read with fetch streaming (EventSource cannot send DPoP headers),
// resumed with Last-Event-ID after a reconnect.

function stopFeed() {
  if (state.feed) state.feed.abort();
  state.feed = null;
}

function startFeed() {
  stopFeed();
  const control = new AbortController();
  state.feed = control;
  (async () => {
    let backoff = 1000;
    while (!control.signal.aborted && state.session) {
      try {
        const last = state.lastEventId;
        const headers = last ? { "last-event-id": last } : undefined;
        const response = await api("GET", "/v1/events", undefined, { stream: true, headers });
        setFeedStatus("live");
        backoff = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        control.signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const event = parseEvent(block);
            if (!event) continue;
            if (event.id) state.lastEventId = event.id;
            if (event.type === "closed") {
              const reason = JSON.parse(event.data || "{}").reason;
              if (reason === "token_expired") await refresh();
              else if (reason === "actor_revoked" || reason === "binding_revoked") return forgetSession();
            } else {
              onEvent(event);
            }
          }
        }
      } catch (e) {
        if (control.signal.aborted) return;
        if (e instanceof ApiError && e.status === 401) return forgetSession();
      }
      if (control.signal.aborted) return;
      setFeedStatus("reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 30000);
    }
  })();
}

// Without a network the stream is given up at once (a dead connection can look open for
// minutes); back online it resumes from the last event seen, and the view is read again.
window.addEventListener("offline", () => {
  if (!state.feed) return;
  stopFeed();
  setFeedStatus("offline");
});
window.addEventListener("online", () => {
  if (!state.session) return;
  startFeed();
  render();
});

function parseEvent(block) {
  const event = { type: "message", data: "" };
  let any = false;
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "id") event.id = value;
    any = true;
  }
  return any ? event : null;
}

function setFeedStatus(text) {
  const el = document.getElementById("feed");
  if (el) {
    el.textContent = text;
    el.className = `badge ${text}`;
  }
}

function onEvent(event) {
  let row = {};
  try { row = JSON.parse(event.data); } catch (_) { /* a heartbeat or an unknown shape */ }
  state.events.unshift({ id: event.id, type: event.type, row });
  state.events.length = Math.min(state.events.length, 200);
  if (state.view === "events") {
    const list = document.getElementById("events");
    if (list) list.prepend(eventRow(state.events[0]));
  } else if (state.view === "tree" && /^(actor_revoke|device_add|device_revoke|quarantine)/.test(event.type)) {
    if (state.reloadTree) state.reloadTree().catch(failure);
  } else if (state.view === "approvals" && event.type.startsWith("approval_")) {
    show("approvals");
  } else if (state.view === "actor" && row.target === state.actor) {
    show("actor");
  }
  const count = document.querySelector('[data-view="approvals"]');
  if (count && event.type === "approval_requested") count.classList.add("attention");
}

function eventRow(e) {
  return h("li", { "data-event": e.id }, h("code", {}, e.id), " ", h("strong", {}, e.type), " ",
    h("span", { title: e.row.target }, short(e.row.target)), " ", h("span", { class: "muted" }, when(e.row.at)));
}

async function viewEvents(content) {
  content.append(h("div", { class: "row spread" }, h("h2", {}, "Live events"), h("span", { id: "feed", class: "badge" }, state.feed ? "live" : "off")),
    h("ul", { class: "plain", id: "events" }, state.events.map(eventRow)));
}

// ---------------------------------------------------------------------------------------------
// Audit verification: the head's ES256 signature checked here with WebCrypto, the signed message
// compared field by field, and the newest row's hash compared with the head.

async function verifyHead(head) {
  if (!head.signature) return { head, ok: null, why: "the head waits for its signature" };
  const jwk = head.keys.find((k) => k.kid === head.kid);
  if (!jwk) return { head, ok: false, why: `no audit key ${head.kid}` };
  const key = await crypto.subtle.importKey("jwk", { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const message = fromHex(head.message);
  const good = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, fromHex(head.signature), message);
  if (!good) return { head, ok: false, why: "the signature does not verify" };
  // "agentkeys-audit-head-v1" ‖ master (32) ‖ u64 BE length ‖ hash (32) ‖ u64 BE seq
  const tag = enc.encode("agentkeys-audit-head-v1");
  const view = new DataView(message.buffer);
  const at = tag.length;
  const signedMaster = hex(message.slice(at, at + 32));
  const signedLength = Number(view.getBigUint64(at + 32));
  const signedHash = `0x${hex(message.slice(at + 40, at + 72))}`;
  if (signedMaster !== head.master.replace(/^0x/, "") || signedLength !== head.length || signedHash !== head.hash) {
    return { head, ok: false, why: "the signed message does not match the head" };
  }
  // The chain's last row (an agent sees it only when it is about its subtree).
  const rows = await api("GET", `/v1/audit?after=${Math.max(0, head.length - 1)}&limit=1`);
  const last = rows.rows.find((r) => r.chain_seq === head.length);
  if (last && last.hash !== head.hash) return { head, ok: false, why: "the last row does not hash to the head" };
  return { head, ok: true, why: `signed by ${head.kid}${last ? ", and the last row hashes to it" : ""}` };
}

async function viewAudit(content) {
  const status = h("p", { id: "audit-status" }, "verifying…");
  const { head, rows } = await newestRows(null, 50);
  content.append(h("h2", {}, "Audit"), status, auditTable(rows));
  const result = await verifyHead(head);
  status.replaceChildren(
    result.ok ? badge("verified") : badge(result.ok === false ? "failed" : "pending"),
    ` chain of ${result.head.length} rows, head ${short(result.head.hash)} — ${result.why}`);
}

// ---------------------------------------------------------------------------------------------
// Start

async function main() {
  const discovery = await (await fetch("/.well-known/openid-configuration", { credentials: "omit" })).json();
  state.issuer = discovery.issuer;
  state.device = await deviceKey();
  state.session = (await kvGet("session")) || null;
  render();
  if (state.session) startFeed();
}

main().catch(failure);
