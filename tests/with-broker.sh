#!/usr/bin/env bash
# Runs a command with an Apache Kafka broker for the tests.
#
# Starts one Apache Kafka broker (KRaft; tests/kafka/kafka.sh resolves its
# jars from Maven Central once and caches them) on free loopback ports,
# exports WEFT_TEST_KAFKA (its address), runs the command, and stops the
# broker however the command ends. Tests that need brokers of their own
# (restarts, a three-node cluster) start them with the same launcher. With
# WEFT_TEST_KAFKA already set, it only runs the command against that broker.
set -euo pipefail

if [ -n "${WEFT_TEST_KAFKA:-}" ]; then
  exec "$@"
fi
kafka=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka/kafka.sh
workdir=$(mktemp -d "${TMPDIR:-/tmp}/weft-broker.XXXXXX")
stop_broker() {
  "$kafka" down "$workdir" || true
  rm -rf "$workdir"
}
trap stop_broker EXIT

started=$SECONDS
bootstrap=$("$kafka" up "$workdir" 1)
echo "test broker: Apache Kafka $("$kafka" version) on $bootstrap (ready in $((SECONDS - started)) s)"
export WEFT_TEST_KAFKA="$bootstrap"
status=0
"$@" || status=$?
if [ "$status" -ne 0 ] && [ -s "$workdir/n1/broker.log" ]; then
  echo "---- last broker output ----" >&2
  tail -n 40 "$workdir/n1/broker.log" >&2
fi
exit "$status"
