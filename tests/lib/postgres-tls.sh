#!/usr/bin/env bash
# A throw-away PostgreSQL server that accepts TLS connections only, for the
# TLS tests:
#
#   postgres-tls.sh up DIR     initdb in DIR, a test CA and server certificate
#                              (make-test-ca.sh, in DIR/tls), ssl=on, pg_hba
#                              `hostssl` only; prints the port
#   postgres-tls.sh down DIR   stop it (immediate) and remove DIR
#
# Uses the Debian package's server binaries (`make postgres-server`), run
# as the `postgres` user when started as root (PostgreSQL refuses root).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "postgres-tls.sh: $*" >&2; exit 1; }
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || die "no PostgreSQL server binaries (Debian package postgresql)"

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

up() {
  local dir=$1 port
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  chmod 755 "$dir"
  "$here/make-test-ca.sh" "$dir/tls" server
  chmod 644 "$dir/tls/ca.pem" "$dir/tls/other-ca.pem"
  [ "$(id -u)" -ne 0 ] || chown postgres "$dir"
  as_postgres "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  # The key must belong to the server's user and be private.
  cp "$dir/tls/server.pem" "$dir/tls/server.key" "$dir/data/"
  [ "$(id -u)" -ne 0 ] || chown postgres "$dir/data/server.pem" "$dir/data/server.key"
  chmod 600 "$dir/data/server.key"
  printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  as_postgres "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key" \
    start >/dev/null || { cat "$dir/server.log" >&2; die "the server did not start"; }
  echo "$port" >"$dir/port"
  echo "$port"
}

down() {
  local dir=$1
  [ -d "$dir/data" ] && as_postgres "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  up) [ $# -eq 2 ] || die "usage: postgres-tls.sh up DIR"; up "$2" ;;
  down) [ $# -eq 2 ] || die "usage: postgres-tls.sh down DIR"; down "$2" ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
