"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  // email: the token is in the fragment (never sent by a GET); oauth2: the provider put the
  // state in the query (the server kept the code at the GET and exchanges it only after the
  // confirmation code).
  var oauth2 = document.body.getAttribute("data-flow") === "oauth2";
  var secret = oauth2
    ? new URLSearchParams(location.search).get("state")
    : new URLSearchParams(location.hash.slice(1)).get("t");
  var failure = oauth2 ? new URLSearchParams(location.search).get("error") : null;
  // The secret leaves the address bar at once: no history entry or screenshot keeps it.
  history.replaceState(null, "", location.pathname);
  var endpoint = oauth2 ? "/v1/auth/oauth2/confirm" : "/v1/auth/email/verify";
  function fail(text) { $("error").textContent = text; $("status").textContent = ""; }
  function post(code) {
    var body = oauth2 ? { state: secret } : { token: secret };
    if (code !== undefined) body.confirm_code = code;
    return fetch(endpoint, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      referrerPolicy: "no-referrer",
      credentials: "omit"
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, body: j }; });
    });
  }
  if (failure) { fail("The provider did not sign you in. Start again from your terminal."); return; }
  if (!secret) { fail("This link is incomplete. Open the full link."); return; }
  post().then(function (r) {
    if (!r.ok) { fail(r.body.message || "This link cannot be used."); return; }
    var link = r.body.mode === "link";
    $("what").textContent = link
      ? "Someone asked to add this identity to an AgentKeys account:"
      : "Someone asked to sign in as";
    $("who").textContent = oauth2 ? "your " + r.body.provider + " account" : r.body.email;
    $("ip").textContent = r.body.requester_ip;
    $("ua").textContent = r.body.user_agent;
    $("at").textContent = r.body.requested_at;
    $("status").textContent = "";
    $("request").classList.remove("hidden");
  }, function () { fail("The server cannot be reached."); });
  $("form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("error").textContent = "";
    post($("code").value).then(function (r) {
      if (!r.ok) { fail(r.body.message || "Sign-in refused."); return; }
      $("request").classList.add("hidden");
      $("status").textContent = r.body.status === "linked"
        ? "Linked. Return to your terminal; you can close this page."
        : "Signed in. Return to your terminal; you can close this page.";
    }, function () { fail("The server cannot be reached."); });
  });
})();
