#!/usr/bin/env bash
# Checks of the container image's files that need no container engine
# (`make deploy-check`; no engine runs where the tests run, so the image
# itself is not built here).
#
#   check-docker.sh HADOLINT
#
# - hadolint lints the Dockerfile.
# - The HEALTHCHECK script (deploy/docker/healthcheck.sh) is run against a
#   stand-in HTTP server on 127.0.0.1: 0 for a 200 on /healthz, non-zero
#   for a 404 and for a closed port.
set -euo pipefail

hadolint=$1
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
healthcheck=$repo/deploy/docker/healthcheck.sh
out=$(mktemp -d "${TMPDIR:-/tmp}/weft-docker.XXXXXX")
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$out"
}
trap cleanup EXIT

echo "== hadolint Dockerfile"
"$hadolint" --failure-threshold warning "$repo/Dockerfile"
echo "ok: no warnings"

echo "== the HEALTHCHECK script against a stand-in server"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
mkdir -p "$out/www"
echo ok >"$out/www/healthz"
port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$out/www" "$port" >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.05
done
# `$$` is this script, whose command line does not say `persist`.
run_healthcheck() { WEFT_HEALTHCHECK_PID=$$ timeout 10 "$healthcheck"; }

WEFT_LISTEN="0.0.0.0:$port" run_healthcheck
echo "ok: 200 on /healthz is healthy"
closed=$(free_port)
# A process whose command line says `persist` is checked on WEFT_PERSIST_LISTEN.
python3 -c 'import time; time.sleep(30)' persist &
worker=$!
if ! WEFT_HEALTHCHECK_PID=$worker WEFT_PERSIST_LISTEN="0.0.0.0:$port" WEFT_LISTEN="0.0.0.0:$closed" timeout 10 "$healthcheck"; then
  kill "$worker"; echo "FAIL: the worker's port was not the one checked"; exit 1
fi
kill "$worker"; wait "$worker" 2>/dev/null || true
echo "ok: \`weft persist\` is checked on WEFT_PERSIST_LISTEN"
rm "$out/www/healthz"
if WEFT_LISTEN="0.0.0.0:$port" run_healthcheck; then echo "FAIL: a 404 passed"; exit 1; fi
echo "ok: 404 is unhealthy"
if WEFT_LISTEN="0.0.0.0:$closed" run_healthcheck 2>/dev/null; then echo "FAIL: a closed port passed"; exit 1; fi
echo "ok: a closed port is unhealthy"
# A TLS node: its port accepting is the check (no TLS in bash).
WEFT_TLS_CERT=/etc/weft/tls/tls.crt WEFT_LISTEN="0.0.0.0:$port" run_healthcheck
echo "ok: with WEFT_TLS_CERT, an accepting port is healthy"
if WEFT_TLS_CERT=/etc/weft/tls/tls.crt WEFT_LISTEN="0.0.0.0:$closed" run_healthcheck 2>/dev/null; then echo "FAIL: a closed TLS port passed"; exit 1; fi
echo "ok: with WEFT_TLS_CERT, a closed port is unhealthy"
