#!/usr/bin/env bash
# API fuzzing: schemathesis against /openapi.json of a running server (debug build), every
# request carrying a master's session and a fresh DPoP proof (tests/apifuzz/dpop_hook.py), so
# the generated requests reach the handlers. Fails on any 5xx, any status code, content type,
# header or body the schema does not allow, or a panic in the server's log.
# Usage: [AGENTKEYS_BIN=PATH] scripts/apifuzz.sh [MAX_EXAMPLES_PER_OPERATION] [SEED]   (defaults: 25, 1; CI: defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-25}"
seed="${2:-1}"
bash scripts/pyvenv.sh
# AGENTKEYS_BIN names a debug binary already built (scripts/test.sh passes the one its test
# build made, which a `-p agentkeys-gateway` build would compile again with other features).
if [ -n "${AGENTKEYS_BIN:-}" ]; then
  bin="$AGENTKEYS_BIN"
else
  cargo build -q --locked -p agentkeys-gateway --bin agentkeys
  bin="$PWD/target/debug/agentkeys"
fi

work=$(mktemp -d)
server=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -m 700 "$work/data" "$work/home"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
# Loopback is a trusted proxy here so that the hook can name a different client address in
# X-Forwarded-For per request: the per-IP rate limit of the unauthenticated routes would
# otherwise answer most generated requests with 429 before they reach a handler.
env -i PATH="$PATH" HOME="$work/home" "$bin" serve --listen "127.0.0.1:$port" --public-url "$url" \
  --data-dir "$work/data" --metrics-listen off --trusted-proxies 127.0.0.1/32 \
  > "$work/server.log" 2>&1 &
server=$!
curl -sf --retry 100 --retry-connrefused --retry-delay 0 --retry-max-time 30 "$url/healthz" > /dev/null

# A master: log in with a throwaway wallet key through the CLI (its profile holds the device key
# and the session the hook signs with).
( umask 077; printf '0x%s\n' "$(printf '%02x' $(seq 1 32) | tr -d ' ')" > "$work/wallet.key" )
cli() { env -i PATH="$PATH" HOME="$work/home" AGENTKEYS_GATEWAY="$url" AGENTKEYS_LOG=warn "$bin" "$@"; }
cli login wallet --key-file "$work/wallet.key" > /dev/null
# Real actors for the {omni} path parameters (the hook substitutes them for half the cases).
omnis="$(cli --json whoami | python3 -c 'import json, sys; print(json.load(sys.stdin)["omni"])')"
for label in fuzz-a fuzz-b; do
  omnis="$omnis,$(cli --json agent create "$label" --scope sign:eip191 --scope actors:create \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["omni"])')"
done

# /v1/events is a stream that stays open until the token expires: not fuzzable by a
# request/response tool; it is covered by gateway/tests/integration/events.rs.
status=0
AK_PROFILE="$work/home/.agentkeys/default" AK_PUBLIC_URL="$url" AK_OMNIS="$omnis" \
  SCHEMATHESIS_HOOKS=dpop_hook PYTHONPATH="$PWD/tests/apifuzz" \
  target/pyvenv/bin/st run "$url/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --exclude-path /v1/events \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" --seed "$seed" --workers 1 \
    --generation-database none --no-color || status=$?
if grep -q "panicked" "$work/server.log"; then
  grep -B2 -A8 "panicked" "$work/server.log" >&2
  echo "the server panicked under API fuzzing" >&2
  status=1
fi
exit "$status"
