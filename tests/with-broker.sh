#!/usr/bin/env bash
# Runs a command with a Kafka-API broker for the tests.
#
# Starts Tansu (a Kafka-API broker; `make` installs it under the cache) on a
# free loopback port with in-memory storage, exports WEFT_TEST_KAFKA (its
# address) and WEFT_TANSU_BIN (for tests that start brokers of their own),
# runs the command, and stops the broker however the command ends. With
# WEFT_TEST_KAFKA already set, it only runs the command against that broker.
set -euo pipefail

if [ -n "${WEFT_TEST_KAFKA:-}" ]; then
  exec "$@"
fi
tansu=${WEFT_TANSU_BIN:?WEFT_TANSU_BIN must name the tansu binary}
workdir=$(mktemp -d "${TMPDIR:-/tmp}/weft-broker.XXXXXX")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

# The storage path is relative to the broker's working directory.
(cd "$workdir" && exec "$tansu" broker \
  --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"$workdir/broker.log" 2>&1) &
broker=$!
stop_broker() {
  kill "$broker" 2>/dev/null || true
  wait "$broker" 2>/dev/null || true
  rm -rf "$workdir"
}
trap stop_broker EXIT

# Bounded wait for the listener (the broker is ready in milliseconds).
for _ in $(seq 1 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    break
  fi
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "tansu exited at start-up:" >&2
    cat "$workdir/broker.log" >&2
    exit 1
  fi
  sleep 0.05
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "tansu did not listen on 127.0.0.1:$port within 10 s" >&2
  cat "$workdir/broker.log" >&2
  exit 1
fi

echo "test broker: tansu on 127.0.0.1:$port"
export WEFT_TEST_KAFKA="127.0.0.1:$port"
export WEFT_TANSU_BIN="$tansu"
status=0
"$@" || status=$?
if [ "$status" -ne 0 ] && [ -s "$workdir/broker.log" ]; then
  echo "---- last broker output ----" >&2
  tail -n 40 "$workdir/broker.log" >&2
fi
exit "$status"
