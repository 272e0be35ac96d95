#!/usr/bin/env bash
# Runs a command with a PostgreSQL server for the tests.
#
# Uses the machine's server when one answers on 127.0.0.1:5432 (trust auth,
# database `test`); otherwise starts a throwaway cluster on a free loopback
# port (initdb as the `postgres` user, which PostgreSQL requires when run as
# root), and removes it afterwards. Exports WEFT_TEST_POSTGRES_URL, an admin
# URL: each test creates and drops a database of its own. With the variable
# already set, it only runs the command.
set -euo pipefail

if [ -n "${WEFT_TEST_POSTGRES_URL:-}" ]; then
  exec "$@"
fi

local_url="postgres://postgres@127.0.0.1:5432/test"
if command -v psql >/dev/null && psql "$local_url" -qtAc 'SELECT 1' >/dev/null 2>&1; then
  echo "test postgres: the machine's server on 127.0.0.1:5432"
  export WEFT_TEST_POSTGRES_URL="$local_url"
  exec "$@"
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "no PostgreSQL server binaries (install the Debian package postgresql: make does)" >&2
  exit 1
fi
workdir=$(mktemp -d "${TMPDIR:-/tmp}/weft-postgres.XXXXXX")
chmod 755 "$workdir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$workdir"
fi
as_postgres "$bindir/initdb" -D "$workdir/data" -U postgres --auth=trust >"$workdir/initdb.log" 2>&1 || {
  cat "$workdir/initdb.log" >&2
  exit 1
}
stop_postgres() {
  as_postgres "$bindir/pg_ctl" -D "$workdir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap stop_postgres EXIT
as_postgres "$bindir/pg_ctl" -D "$workdir/data" -l "$workdir/server.log" -w -t 30 \
  -o "-h 127.0.0.1 -p $port -k $workdir -c fsync=off" start >/dev/null
as_postgres "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres test
echo "test postgres: throwaway cluster on 127.0.0.1:$port"
export WEFT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/test"
"$@"
