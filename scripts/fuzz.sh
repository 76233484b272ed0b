#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target of fuzz/ for SECONDS each (default 600), one after another,
# starting from the committed seeds in fuzz/corpus/<target>; new inputs go to
# target/fuzz-corpus/<target> (not committed). Prints each target's execution count.
# A crash stops the run and leaves its input under fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (installed here, pinned, when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
root="$PWD"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
# The project's own (stable) toolchain, allowed the nightly flags cargo-fuzz passes
# (-Zsanitizer=address and friends); FUZZ_TOOLCHAIN=+nightly uses a nightly one instead.
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  toolchain=("$FUZZ_TOOLCHAIN")
else
  export RUSTC_BOOTSTRAP=1
fi
# FUZZ_BUILD=--dev builds without optimisation: a faster build for short (CI) runs.
build="${FUZZ_BUILD:--O}"
cd fuzz
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi
for t in "${targets[@]}"; do
  work="$root/target/fuzz-corpus/$t"
  mkdir -p "$work"
  log="$root/target/fuzz-$t.log"
  if ! cargo "${toolchain[@]}" fuzz run "$build" "$t" "$work" "corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || true)
  echo "fuzz $t: ${seconds} s, ${runs:-?} executions, ${cov:-cov: ?}, corpus $(find "$work" -type f | wc -l) inputs"
done
