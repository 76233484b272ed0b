#!/usr/bin/env bash
# Installs AgentKeys on a systemd host, idempotently: a dedicated user, 0700 directories, the
# binary, a configuration, the master secret K3 (created once, never again), the unit, then a
# /readyz probe that explains a failure.
#
# Usage: deploy/setup-host.sh --public-url https://keys.example.com [--binary PATH]
#                             [--dry-run] [--root DIR]
#   --dry-run   print every action, change nothing
#   --root DIR  install below DIR (a throwaway root for tests); systemctl and the probe still
#               run, so tests put stubs first in PATH (SETUP_HOST_PROBES: probe count)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
public_url=""
binary="$here/../target/release/agentkeys"
dry_run=0
root=""

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --public-url) public_url=${2:?--public-url needs a value}; shift 2 ;;
    --binary) binary=${2:?--binary needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --root) root=${2:?--root needs a value}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
  esac
done

if [ -z "$public_url" ]; then
  echo "give --public-url (the https URL clients and AWS will use)" >&2
  exit 2
fi

etc="$root/etc/agentkeys"
data="$root/var/lib/agentkeys"
bin_dir="$root/usr/local/bin"
unit_dir="$root/etc/systemd/system"

# Runs a command, or only prints it with --dry-run.
run() {
  printf '+ %s\n' "$*"
  if [ "$dry_run" = 0 ]; then
    "$@"
  fi
}

step() { printf '\n==> %s\n' "$*"; }

step "user agentkeys"
if id agentkeys >/dev/null 2>&1; then
  echo "exists"
elif [ -n "$root" ]; then
  echo "(--root: the user is not created on this host)"
else
  run useradd --system --home-dir /var/lib/agentkeys --shell /usr/sbin/nologin agentkeys
fi
owner=agentkeys
if ! id agentkeys >/dev/null 2>&1; then
  owner=$(id -un)
fi

step "directories (0700)"
run install -d -m 0700 "$etc"
run install -d -m 0700 -o "$owner" -g "$(id -gn "$owner" 2>/dev/null || id -gn)" "$data"

step "binary"
if [ ! -x "$binary" ]; then
  echo "no binary at $binary; build it with: cargo build --release -p agentkeys-gateway" >&2
  exit 1
fi
run install -d -m 0755 "$bin_dir"
run install -m 0755 "$binary" "$bin_dir/agentkeys"

step "configuration"
config="$etc/agentkeys.toml"
if [ -f "$config" ]; then
  echo "$config exists; left as it is"
else
  contents="# AgentKeys configuration (docs/configuration.md).
listen = \"127.0.0.1:8090\"
data_dir = \"/var/lib/agentkeys\"
public_url = \"$public_url\"
registration = \"allowlist\"
trusted_proxies = \"127.0.0.1\"
"
  printf '+ write %s\n' "$config"
  if [ "$dry_run" = 0 ]; then
    (umask 077; printf '%s' "$contents" > "$config")
  fi
fi

step "master secret K3 (created once; every wallet derives from it)"
k3="$etc/k3.key"
if [ -f "$k3" ]; then
  echo "$k3 exists; never regenerated (back it up: docs/operations.md)"
elif [ -e "$data/agentkeys.redb" ]; then
  echo "a store exists in $data but $k3 does not: restore the original K3 file; a new one would change every wallet" >&2
  exit 1
else
  run "$bin_dir/agentkeys" keys init --k3-file "$k3" --public-url "$public_url"
fi

step "systemd unit"
run install -d -m 0755 "$unit_dir"
run install -m 0644 "$here/systemd/agentkeys.service" "$unit_dir/agentkeys.service"
run systemctl daemon-reload
run systemctl enable --now agentkeys.service

step "readiness"
if [ "$dry_run" = 1 ]; then
  echo "+ curl http://127.0.0.1:8090/readyz"
  exit 0
fi
for _ in $(seq 1 "${SETUP_HOST_PROBES:-50}"); do
  if answer=$(curl -fsS http://127.0.0.1:8090/readyz 2>/dev/null); then
    echo "$answer"
    echo "AgentKeys is ready. Next: nginx (deploy/nginx/agentkeys.conf) and docs/operations.md."
    exit 0
  fi
  sleep 0.2
done
echo "AgentKeys did not become ready. What systemd says:" >&2
systemctl status --no-pager agentkeys.service >&2 || true
journalctl -u agentkeys.service -n 30 --no-pager >&2 || true
cat >&2 <<'HINTS'
Likely fixes:
- "no master secret (K3)": restore /etc/agentkeys/k3.key (0600), or run setup again on a new host
- "fingerprint" / "client_id": the store belongs to another K3 or client_id; restore them
- "cannot listen": another process holds 127.0.0.1:8090 (ss -ltnp)
- "mailer" not ready: the SES identity or permission named in /readyz is missing
HINTS
exit 1
