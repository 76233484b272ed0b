#!/usr/bin/env bash
# Builds target/pyvenv from tests/python/requirements.txt (hash-pinned: moto_server,
# the shellcheck binary and schemathesis); rebuilt only when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyvenv
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/st" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    -r tests/python/requirements.txt
  echo "$want" > "$stamp"
fi
