#!/usr/bin/env bash
# The AgentKeys demo on embedded defaults (server on 127.0.0.1:8090, data in ./agentkeys-data),
# with no external service: start the server, log in a master with a fresh wallet, build a small
# tree, link an agent from a second profile, sign, revoke, show the rejection and the tree,
# verify the audit log, stop.
# Usage: scripts/quickstart.sh [--keep-running]
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
[ "${1:-}" = "--keep-running" ] && keep=1

echo "==> building (release)"
cargo build --release --locked -p agentkeys-gateway --bin agentkeys
bin="$PWD/target/release/agentkeys"
data="$PWD/agentkeys-data"

step() { printf '\n==> %s\n' "$*"; }
show() { printf '$ agentkeys %s\n' "$*"; "$bin" "$@"; }

step "starting the server: agentkeys serve"
"$bin" serve &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
base=http://127.0.0.1:8090
for _ in $(seq 1 100); do
  if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the server exited; see the log above (is port 8090 taken?)" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "$base/readyz"; echo

# Client state for the demo lives in a throwaway home, not in your ~/.agentkeys.
demo_home=$(mktemp -d)
export HOME="$demo_home"
wallet_key="$demo_home/wallet.key"
(umask 077; printf '0x%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > "$wallet_key")

step "a master logs in with its own wallet (Sign-In with Ethereum, DPoP-bound session)"
show login wallet --key-file "$wallet_key"
show whoami

step "a small tree: ops (may create agents) and ops//bot-1 (may sign messages)"
show agent create ops --scope actors:create --scope sign:eip191
show agent create bot-1 --parent //ops --scope sign:eip191

step "bot-1 joins from another machine (profile 'bot'): a one-time link code, read from stdin"
code=$("$bin" link-code issue //ops//bot-1 --json | sed -n 's/.*"code":"\([^"]*\)".*/\1/p')
echo "link code: $code"
printf '$ echo <code> | agentkeys --profile bot link\n'
echo "$code" | "$bin" --profile bot link --label demo-machine

step "bot-1 signs with its own derived wallet"
show --profile bot sign message "hello from bot-1"

step "the tree"
show agent tree

step "revoking ops stops its whole subtree at once, durably"
show agent revoke //ops

step "bot-1 is refused now"
if "$bin" --profile bot sign message "after the revocation"; then
  echo "bot-1 could still sign: this must not happen" >&2
  exit 1
fi

step "the tree shows the computed status"
show agent tree
show audit tail --limit 8

step "the audit log verifies (hash chains, signed heads)"
show audit verify --data-dir "$data"

rm -rf "$demo_home"
if [ "$keep" = 1 ]; then
  trap - EXIT
  step "running as pid $pid; the web console is at $base/console; stop it with: kill -TERM $pid"
  wait "$pid"
else
  step "stopping (SIGTERM: drains requests, stops actors, closes the store)"
  kill -TERM "$pid"
  trap - EXIT
  wait "$pid"
  echo "stopped cleanly. Run it yourself with: $bin serve (web console at $base/console)"
fi
