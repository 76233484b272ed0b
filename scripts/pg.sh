#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (no containers): installs the distribution's
# PostgreSQL when it is missing (as root), runs initdb in a fresh temporary directory as the
# `postgres` user when run as root (initdb refuses root) or as the current user otherwise, and
# starts it on a free loopback port, trust authentication, fsync off (test data only).
# Usage: url=$(scripts/pg.sh start)   prints postgres://postgres@127.0.0.1:PORT/postgres
#        scripts/pg.sh restart        crashes the cluster (immediate stop) and starts it again
#        scripts/pg.sh stop           stops the cluster started last and deletes its directory
# PG_STATE names the state file (default target/pg-cluster), so a test can run a cluster of its
# own beside the suite's.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${PG_STATE:-target/pg-cluster}

bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/pg_ctl" ]; then
    pg_config --bindir
    return
  fi
  find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
start)
  bin=$(bindir)
  if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      bin=$(bindir)
    fi
  fi
  if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "pg.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
  fi
  dir=$(mktemp -d /tmp/agentkeys-pg.XXXXXX)
  chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bin/initdb" --no-sync -A trust -U postgres -D "$dir/data" >/dev/null
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -h 127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  mkdir -p "$(dirname "$state")"
  printf '%s %s %s\n' "$dir" "$bin" "$port" > "$state"
  echo "postgres://postgres@127.0.0.1:$port/postgres"
  ;;
restart)
  read -r dir bin port < "$state"
  as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -h 127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  ;;
stop)
  [ -f "$state" ] || exit 0
  read -r dir bin _ < "$state"
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir" "$state"
  ;;
*)
  echo "usage: scripts/pg.sh start|restart|stop" >&2
  exit 2
  ;;
esac
