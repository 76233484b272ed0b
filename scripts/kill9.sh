#!/usr/bin/env bash
# The long kill -9 loop: the real server under mixed load (creates, revokes, link codes and
# redemptions, signatures), SIGKILLed and restarted CYCLES times (default 50); after every
# kill the audit log verifies offline and every acknowledged write is checked after restart.
# CI runs the same test with 5 cycles. Figures: docs/BENCHMARKS.md.
# Usage: scripts/kill9.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-50}"
KILL9_CYCLES="$cycles" cargo test -q --locked -p agentkeys-gateway --test integration -- --nocapture kill9:: 2>&1 \
  | grep -E '^(kill9:|test result)|panicked|assertion'
