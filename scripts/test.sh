#!/usr/bin/env bash
# The project's checks: formatting, lints, the panic strategy, and every test.
# Usage: scripts/test.sh            (run from anywhere inside the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (disk: %s free)\n' "$*" "$(df -h . | awk 'NR==2{print $4}')"; }

step "panic strategy is unwind in every profile (supervision relies on catch_unwind)"
for profile in dev release; do
  if ! awk -v p="[profile.$profile]" '$0==p{f=1;next} /^\[/{f=0} f && /^panic *= *"unwind"/{ok=1} END{exit !ok}' Cargo.toml; then
    echo "Cargo.toml: [profile.$profile] must set panic = \"unwind\"" >&2
    exit 1
  fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "python test tools: moto_server, shellcheck and schemathesis (tests/python/requirements.txt, hash-pinned)"
bash scripts/pyvenv.sh
venv=target/pyvenv
export MOTO_SERVER="$PWD/$venv/bin/moto_server"

step "shellcheck: the scripts and deploy/setup-host.sh"
"$venv/bin/shellcheck" scripts/*.sh deploy/setup-host.sh .ci/run

step "a throwaway PostgreSQL cluster for the PostgreSQL tests (scripts/pg.sh; installed from the distribution when missing)"
TEST_POSTGRES_URL=$(bash scripts/pg.sh start)
export TEST_POSTGRES_URL
trap 'bash scripts/pg.sh stop' EXIT

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --locked --doc --quiet

step "the ledger's suites and the gateway's end-to-end suite again, on PostgreSQL (TEST_STORE=postgres)"
# Not on PostgreSQL: the tests that edit or read a redb file directly (offline audit
# verification, a tampered record, the fixture written by an earlier build); not again: the
# tests that choose their store themselves (several nodes, standby, migration) ran above.
redb_only='test(/^verify_detects/) | test(/a_tampered_record_returns_nothing/) | test(/a_store_written_by_an_earlier_build/) | test(/^nodes/) | test(/^standby::/) | test(/^migrate::/)'
if cargo nextest --version >/dev/null 2>&1; then
  TEST_STORE=postgres cargo nextest run --locked --no-fail-fast \
    -p agentkeys-actors --test ledger --test ledger_model --test budgets \
    -p agentkeys-gateway --test integration -E "not ($redb_only)"
else
  TEST_STORE=postgres cargo test --locked --no-fail-fast \
    -p agentkeys-actors --test ledger --test ledger_model --test budgets \
    -p agentkeys-gateway --test integration -- \
    --skip verify_detects --skip a_tampered_record_returns_nothing --skip a_store_written_by_an_earlier_build
fi

step "interop: the real signer's outputs checked with ethers and @polkadot; a real server logged into with npm siwe, ethers and dpop, and through oidc-provider; the MCP server driven by the official TypeScript SDK client; the web console in headless Chromium (tests/interop)"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are needed for the interop tests (Node 20)" >&2
  exit 1
fi
# The console tests drive headless Chromium from the distribution (puppeteer-core from the lockfile).
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is needed for the console tests (apt-get install chromium, or set CHROMIUM)" >&2
    exit 1
  fi
fi
CHROMIUM=${CHROMIUM:-$(command -v chromium)}
export CHROMIUM
mkdir -p target
# The test build above made both binaries (with the workspace's unified features); building them
# again with `-p` would compile the gateway a second time with other features.
target/debug/interop-outputs > target/interop-outputs.json
(
  cd tests/interop
  npm ci --no-audit --no-fund --silent
  INTEROP_OUTPUTS=../../target/interop-outputs.json AGENTKEYS_BIN=../../target/debug/agentkeys node --test
)

step "API fuzzing: schemathesis against /openapi.json, every case signed (scripts/apifuzz.sh)"
AGENTKEYS_BIN="$PWD/target/debug/agentkeys" bash scripts/apifuzz.sh

step "fuzzing: every cargo-fuzz target for 30 s from the committed seeds (scripts/fuzz.sh)"
# The fuzz build takes about 2 GB of its own; on a machine short of disk, the debug build
# (not needed any more) makes room for it.
if [ "$(df -Pk . | awk 'NR==2{print $4}')" -lt 4000000 ]; then
  echo "under 4 GB free: removing target/debug before the fuzz build"
  rm -rf target/debug
fi
FUZZ_BUILD=--dev bash scripts/fuzz.sh 30

printf '\nall checks passed; target/ holds %s, fuzz/target/ %s (disk: %s free)\n' "$(du -sh target | cut -f1)" "$(du -sh fuzz/target 2>/dev/null | cut -f1)" "$(df -h . | awk 'NR==2{print $4}')"
