"use strict";
(function () {
  var token = new URLSearchParams(location.hash.slice(1)).get("t");
  // The token leaves the address bar at once: no history entry or screenshot keeps it.
  history.replaceState(null, "", location.pathname);
  var $ = function (id) { return document.getElementById(id); };
  function fail(text) { $("error").textContent = text; $("status").textContent = ""; }
  function post(body) {
    return fetch("/v1/auth/email/verify", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      referrerPolicy: "no-referrer",
      credentials: "omit"
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, body: j }; });
    });
  }
  if (!token) { fail("This link is incomplete. Open the full link from the email."); return; }
  post({ token: token }).then(function (r) {
    if (!r.ok) { fail(r.body.message || "This link cannot be used."); return; }
    $("email").textContent = r.body.email;
    $("ip").textContent = r.body.requester_ip;
    $("ua").textContent = r.body.user_agent;
    $("status").textContent = "";
    $("request").classList.remove("hidden");
  }, function () { fail("The server cannot be reached."); });
  $("form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("error").textContent = "";
    post({ token: token, confirm_code: $("code").value }).then(function (r) {
      if (!r.ok) { fail(r.body.message || "Sign-in refused."); return; }
      $("request").classList.add("hidden");
      $("status").textContent = "Signed in. Return to your terminal; you can close this page.";
    }, function () { fail("The server cannot be reached."); });
  });
})();
