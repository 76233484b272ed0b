#!/usr/bin/env bash
# Runs the HTTP load benchmark (gateway/benches/http.rs) after installing what its independent
# crypto floor needs: a C compiler and the headers of OpenSSL and libsecp256k1, from the
# distribution's packages (Debian/Ubuntu, as root). Without them the benchmark still runs and
# says that the independent floor was not measured.
# Usage: scripts/loadbench.sh            (the levels; LOADBENCH_* variables pass through,
#                                         e.g. LOADBENCH_LEVELS=1,64 or LOADBENCH_SOAK_SECONDS=600)
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
[ -e /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
[ -e /usr/include/secp256k1_recovery.h ] || missing+=(libsecp256k1-dev)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "loadbench: missing ${missing[*]}; the independent floor may not be measured" >&2
  fi
fi
exec cargo bench -p agentkeys-gateway --bench http
