#!/usr/bin/env bash
# Writes a new store fixture: a data dir with a master, agents, a linked device, a signature and
# a revocation, plus expected.json (what the API shows of it). Run it before a change to the
# stored layouts, commit the result as tests/fixtures/store-vN, and point
# gateway/tests/integration/store_fixture.rs at it: later builds must open it unchanged.
# Usage: scripts/store-fixture.sh DIR   (DIR must not exist)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?give a directory that does not exist yet}
if [ -e "$target" ]; then
  echo "$target exists; give a new directory" >&2
  exit 1
fi
mkdir -p "$target"
AGENTKEYS_WRITE_FIXTURE="$(cd "$target" && pwd)" \
  cargo test --locked -p agentkeys-gateway --test integration -- --ignored store_fixture::write_the_fixture
echo "fixture written to $target (the keys in it are for tests only)"
