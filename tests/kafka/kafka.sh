#!/usr/bin/env bash
# Apache Kafka brokers for Weft's tests and benchmarks: KRaft mode, jars from
# Maven Central, run with the machine's Java 17, on free loopback ports.
#
#   kafka.sh classpath            resolve the broker's jars once (Maven), print their directory
#   kafka.sh version              the Kafka version the jars are
#   kafka.sh up DIR [NODES]       format and start a cluster of NODES (1 or 3) in DIR; prints its bootstrap servers
#   kafka.sh start DIR N          (re)start node N of the cluster in DIR, and wait until it serves clients
#   kafka.sh signal DIR N SIG     send SIG (KILL, STOP, CONT, TERM) to node N
#   kafka.sh down DIR             stop every node of DIR (TERM, then KILL after a grace period)
#   kafka.sh up-sasl-ssl DIR USER PASSWORD
#                                 one node with a SASL_SSL listener (SCRAM-SHA-256/512 user
#                                 USER) and an SSL listener that requires a client certificate,
#                                 a test CA in DIR/tls (client.pem/.key signed by it); prints
#                                 the SASL_SSL address (the SSL one is in DIR/ssl_bootstrap)
#
# DIR holds, per node N: nN/server.properties, nN/data, nN/broker.log,
# nN/pid, nN/port; and DIR/bootstrap (host:port,...). The jars are cached
# under $WEFT_CACHE (~/.cache/weft), so only the first run needs Maven
# Central. KAFKA_HEAP_OPTS overrides the test heap (-Xms256m -Xmx512m).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${WEFT_CACHE:-$HOME/.cache/weft}
pom=$here/pom.xml
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
lib=$cache/kafka-$kafka_version-$(sha256sum "$pom" | cut -c1-8)/lib
java=${JAVA:-java}
# The time a node gets to open its client port (the broker's own
# registration timeout is 60 s; three JVMs starting on two cores are slow).
ready_timeout_s=${WEFT_KAFKA_READY_TIMEOUT_S:-180}

die() { echo "kafka.sh: $*" >&2; exit 1; }

classpath() {
  if [ ! -f "$lib/.complete" ]; then
    command -v mvn >/dev/null || die "Maven (mvn) is needed once to resolve Apache Kafka's jars"
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/weft-kafka-cp.XXXXXX")
    cp "$pom" "$work/pom.xml"
    echo "kafka.sh: resolving Apache Kafka $kafka_version from Maven Central (once)" >&2
    (cd "$work" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime) >&2 \
      || die "mvn could not resolve org.apache.kafka:kafka_2.13:$kafka_version"
    rm -rf "$lib"
    mkdir -p "$(dirname "$lib")"
    mv "$work/lib" "$lib"
    rm -rf "$work"
    touch "$lib/.complete"
  fi
  echo "$lib"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# A Kafka Uuid: 16 random bytes, base64url without padding, never starting
# with '-' (what StorageTool random-uuid prints), made without a JVM.
cluster_id() {
  python3 -c '
import base64, os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not s.startswith("-") and s not in ("AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAQ"):
        print(s); break'
}

jvm_opts() {
  # shellcheck disable=SC2206
  local heap=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m})
  echo "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$here/log4j2.properties"
}

write_config() { # DIR N NODES VOTERS PORT CPORT
  local dir=$1 n=$2 nodes=$3 voters=$4 port=$5 cport=$6 rf isr
  if [ "$nodes" -ge 3 ]; then rf=3; isr=2; else rf=1; isr=1; fi
  mkdir -p "$dir/n$n/data"
  cat >"$dir/n$n/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/n$n/data

offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
share.coordinator.state.topic.num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$isr
num.partitions=1
auto.create.topics.enable=true
unclean.leader.election.enable=false

group.initial.rebalance.delay.ms=0
group.coordinator.append.linger.ms=0
log.initial.task.delay.ms=100
log.cleaner.dedupe.buffer.size=2097152
num.network.threads=2
background.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
controller.quorum.append.linger.ms=5

# Failures are found in seconds, not the production defaults' tens of seconds.
controlled.shutdown.enable=false
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
replica.lag.time.max.ms=5000
replica.fetch.backoff.ms=100
group.min.session.timeout.ms=1000
EOF
  echo "$port" >"$dir/n$n/port"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ready() { # DIR N
  local dir=$1 n=$2 port pid deadline
  port=$(cat "$dir/n$n/port")
  pid=$(cat "$dir/n$n/pid")
  deadline=$((SECONDS + ready_timeout_s))
  # The client port opens only once the broker is registered and unfenced.
  until port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/n$n/broker.log" >&2
      die "node $n exited while starting (log: $dir/n$n/broker.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$dir/n$n/broker.log" >&2
      die "node $n did not serve 127.0.0.1:$port within ${ready_timeout_s}s"
    fi
    sleep 0.1
  done
}

launch() { # DIR N: start node N in the background
  local dir=$1 n=$2 cp
  cp=$(classpath)
  # shellcheck disable=SC2046
  nohup "$java" $(jvm_opts) "-Dkafka.logs.dir=$dir/n$n/logs" -cp "$cp/*" kafka.Kafka \
    "$dir/n$n/server.properties" >>"$dir/n$n/broker.log" 2>&1 </dev/null &
  echo $! >"$dir/n$n/pid"
}

up() { # DIR NODES
  local dir=$1 nodes=${2:-1} voters="" n cid cp
  [ "$nodes" = 1 ] || [ "$nodes" = 3 ] || die "a cluster has 1 or 3 nodes, not $nodes"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  cp=$(classpath)
  declare -a ports cports
  for n in $(seq 1 "$nodes"); do
    ports[n]=$(free_port)
    cports[n]=$(free_port)
    voters+="${voters:+,}$n@127.0.0.1:${cports[n]}"
  done
  cid=$(cluster_id)
  for n in $(seq 1 "$nodes"); do
    write_config "$dir" "$n" "$nodes" "$voters" "${ports[n]}" "${cports[n]}"
    # shellcheck disable=SC2046
    "$java" -Xmx256m "-Dlog4j2.configurationFile=$here/log4j2.properties" -cp "$cp/*" \
      kafka.tools.StorageTool format -t "$cid" -c "$dir/n$n/server.properties" >"$dir/n$n/format.log" 2>&1 &
  done
  for n in $(seq 1 "$nodes"); do
    wait -n || { cat "$dir"/n*/format.log >&2; die "formatting the storage failed"; }
  done
  # Started together: a controller needs a majority of the voters.
  for n in $(seq 1 "$nodes"); do launch "$dir" "$n"; done
  for n in $(seq 1 "$nodes"); do wait_ready "$dir" "$n"; done
  local bootstrap=""
  for n in $(seq 1 "$nodes"); do bootstrap+="${bootstrap:+,}127.0.0.1:${ports[n]}"; done
  echo "$bootstrap" >"$dir/bootstrap"
  echo "$bootstrap"
}

# One node whose clients may also use SASL_SSL: a test CA and the broker's
# certificate (tests/lib/make-test-ca.sh, as PKCS#12 for the broker), the
# SCRAM credentials written into the storage by the format
# (`--add-scram`), a SASL_SSL listener and an SSL listener that requires
# a client certificate from the same CA (mutual TLS), beside the plain
# ones (which the controller and the readiness probe keep using).
up_sasl_ssl() { # DIR USER PASSWORD
  local dir=$1 user=$2 password=$3 port cport sport tport cid cp store_password
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  cp=$(classpath)
  "$here/../lib/make-test-ca.sh" "$dir/tls" broker
  "$here/../lib/make-test-ca.sh" "$dir/tls" client
  store_password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  openssl pkcs12 -export -in "$dir/tls/broker.pem" -inkey "$dir/tls/broker.key" -name broker \
    -passout "pass:$store_password" -out "$dir/tls/broker.p12"
  port=$(free_port); cport=$(free_port); sport=$(free_port); tport=$(free_port)
  write_config "$dir" 1 1 "1@127.0.0.1:$cport" "$port" "$cport"
  sed -i \
    -e "s|^listeners=.*|listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$tport|" \
    -e "s|^advertised.listeners=.*|advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$tport|" \
    -e "s|^listener.security.protocol.map=.*|listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL|" \
    "$dir/n1/server.properties"
  cat >>"$dir/n1/server.properties" <<EOF

sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=$store_password
ssl.key.password=$store_password
listener.name.ssl.ssl.client.auth=required
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.location=$dir/tls/ca.pem
EOF
  cid=$(cluster_id)
  "$java" -Xmx256m "-Dlog4j2.configurationFile=$here/log4j2.properties" -cp "$cp/*" \
    kafka.tools.StorageTool format -t "$cid" -c "$dir/n1/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=$user,password=$password]" \
    --add-scram "SCRAM-SHA-512=[name=$user,password=$password]" >"$dir/n1/format.log" 2>&1 \
    || { cat "$dir/n1/format.log" >&2; die "formatting the storage failed"; }
  launch "$dir" 1
  wait_ready "$dir" 1
  local deadline=$((SECONDS + ready_timeout_s))
  until port_open "$sport" && port_open "$tport"; do
    [ "$SECONDS" -lt "$deadline" ] || die "the SASL_SSL and SSL listeners did not open"
    sleep 0.1
  done
  echo "127.0.0.1:$port" >"$dir/bootstrap"
  echo "127.0.0.1:$tport" >"$dir/ssl_bootstrap"
  echo "127.0.0.1:$sport" >"$dir/sasl_ssl_bootstrap"
  echo "127.0.0.1:$sport"
}

signal_node() { # DIR N SIG
  local pid
  pid=$(cat "$1/n$2/pid")
  kill -s "$3" "$pid" 2>/dev/null || true
  if [ "$3" = KILL ]; then
    # Reaped by init; wait until it is gone so a restart can bind its ports.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  fi
}

down() { # DIR
  local dir=$1 pidfile pid alive
  for pidfile in "$dir"/n*/pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    alive=0
    for pidfile in "$dir"/n*/pid; do
      [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for pidfile in "$dir"/n*/pid; do
    [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
  done
}

cmd=${1:-}
case "$cmd" in
  classpath) classpath ;;
  version) echo "$kafka_version" ;;
  up) [ $# -ge 2 ] || die "usage: kafka.sh up DIR [NODES]"; up "$2" "${3:-1}" ;;
  start) [ $# -eq 3 ] || die "usage: kafka.sh start DIR N"; launch "$2" "$3"; wait_ready "$2" "$3" ;;
  signal) [ $# -eq 4 ] || die "usage: kafka.sh signal DIR N SIG"; signal_node "$2" "$3" "$4" ;;
  down) [ $# -eq 2 ] || die "usage: kafka.sh down DIR"; down "$2" ;;
  up-sasl-ssl) [ $# -eq 4 ] || die "usage: kafka.sh up-sasl-ssl DIR USER PASSWORD"; up_sasl_ssl "$2" "$3" "$4" ;;
  *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
