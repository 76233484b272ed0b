#!/usr/bin/env bash
# Builds AgentKeys, starts the server on embedded defaults (127.0.0.1:8090, ./agentkeys-data),
# shows it healthy and ready, then stops it gracefully.
# Usage: scripts/quickstart.sh [--keep-running]
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
[ "${1:-}" = "--keep-running" ] && keep=1

echo "==> building (release)"
cargo build --release --locked -p agentkeys-gateway --bin agentkeys
bin=target/release/agentkeys

echo "==> starting: $bin serve"
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

echo "==> GET $base/healthz"
curl -fsS "$base/healthz"; echo
echo "==> GET $base/readyz"
curl -fsS "$base/readyz"; echo

if [ "$keep" = 1 ]; then
  trap - EXIT
  echo "==> running as pid $pid; stop it with: kill -TERM $pid"
  wait "$pid"
else
  echo "==> stopping (SIGTERM: drains requests, stops actors, closes the store)"
  kill -TERM "$pid"
  trap - EXIT
  wait "$pid"
  echo "==> stopped cleanly. Run it yourself with: $bin serve"
fi
