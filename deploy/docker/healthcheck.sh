#!/usr/bin/env bash
# The container image's HEALTHCHECK: GET /healthz on the process's own
# listener, through bash's /dev/tcp (the image carries no curl).
#
# The port is taken from WEFT_PERSIST_LISTEN when the container runs
# `weft persist`, else from WEFT_LISTEN (the image sets both); a `--listen`
# flag on the command line is not seen here, so set the variables instead.
# WEFT_HEALTHCHECK_PID names the process to look at (default 1, the
# entrypoint). A node serving TLS (WEFT_TLS_CERT set) cannot be asked in
# plain HTTP, and bash speaks no TLS: its listener accepting a connection
# is the check then (Kubernetes' probes use HTTPS, see the Helm chart).
set -euo pipefail

pid=${WEFT_HEALTHCHECK_PID:-1}
tls=${WEFT_TLS_CERT:-}
if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qw persist; then
  address=${WEFT_PERSIST_LISTEN:-127.0.0.1:9464}
  tls="" # the worker's listener is plain HTTP
else
  address=${WEFT_LISTEN:-127.0.0.1:1234}
fi
port=${address##*:}

exec 3<>"/dev/tcp/127.0.0.1/$port"
[ -z "$tls" ] || exit 0
printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
read -r -t 3 _version status _reason <&3
[ "$status" = 200 ]
