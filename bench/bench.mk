# `make bench`: Weft against its peers, written to docs/BENCHMARKS.md.
#
# BENCH_MODE=short (default): small sizes, one run of each cell, two to three
# minutes; `make test` runs it as bench-check. BENCH_MODE=full: the published
# sizes, three runs of each cell (BENCH_REPEATS overrides), by hand.
#
# The peers (@y/websocket-server, @hocuspocus/server, its Redis extension)
# are installed from npm into bench/peers, pinned by its package-lock.json.
# Hocuspocus's two-node runs start their own redis-server (Debian's
# `redis-server`) on a free loopback port; Weft's start Apache Kafka brokers
# (tests/kafka/kafka.sh: jars from Maven Central, cached), fresh for each run.

BENCH_MODE ?= short
BENCH_REPEATS ?=
# Weft's --kafka-fetch-wait-ms in cluster runs; empty keeps Weft's default
# (Kafka answers a waiting fetch as soon as a record is readable).
BENCH_KAFKA_FETCH_WAIT_MS ?=
# The brokers' heap in benchmarks: what Kafka's own start script gives a
# broker, so numbers compare with a stock broker's.
BENCH_KAFKA_HEAP ?= -Xms1g -Xmx1g
REDIS_SERVER ?= $(or $(shell command -v redis-server),/usr/bin/redis-server)
# Scenario 5's editing trace (automerge-paper, gzip JSON in the
# editing-traces format). By default the copy beside the repository, if
# there is one; without a trace, scenario 5 is skipped (and says so in the
# report), the rest of the bench runs.
BENCH_TRACE ?= $(wildcard ../shared/data/traces/automerge-paper.json.gz)
BENCH_PEERS_BUILT := bench/peers/node_modules/.weft-bench-lock

$(BENCH_PEERS_BUILT): bench/peers/package.json bench/peers/package-lock.json
	mkdir -p $(NPM_CACHE)
	cd bench/peers && npm ci --no-audit --no-fund --cache $(NPM_CACHE) --prefer-offline
	touch $@

# The driver's command line, less where it writes.
BENCH_RUN = ulimit -n "$$(ulimit -Hn)"; KAFKA_HEAP_OPTS="$(BENCH_KAFKA_HEAP)" ./target/release/weft-bench run \
	  --weft ./target/release/weft --peers-dir bench/peers \
	  --kafka $(CURDIR)/tests/kafka/kafka.sh --redis-server $(REDIS_SERVER) \
	  $(if $(BENCH_KAFKA_FETCH_WAIT_MS),--kafka-fetch-wait-ms $(BENCH_KAFKA_FETCH_WAIT_MS)) \
	  $(if $(BENCH_TRACE),--trace $(BENCH_TRACE))

.PHONY: bench
# web/.built: the editor page the weft binary embeds (the Makefile defines
# WEB_BUILT after this file is included, so it is named here).
bench: web/.built build-deps kafka $(BENCH_PEERS_BUILT) redis-server-bin ## Weft vs its peers -> docs/BENCHMARKS.md (BENCH_MODE=short|full)
	$(CARGO) build --release --locked -p weft-server -p weft-bench
	$(BENCH_RUN) --mode $(BENCH_MODE) $(if $(BENCH_REPEATS),--repeats $(BENCH_REPEATS)) \
	  --results target/bench/results-$(BENCH_MODE).json \
	  --markdown docs/BENCHMARKS.md --plots docs/bench

.PHONY: bench-check
# Part of `make test`: the short mode, every scenario against every server,
# with each run's correctness check (every update delivered exactly once,
# replicas equal). It fails if a run of Weft fails; the report goes under
# target/, so the committed full report stays as it is.
bench-check: web/.built build-deps kafka $(BENCH_PEERS_BUILT) redis-server-bin ## the short benchmark as a check; report in target/bench/check/
	$(CARGO) build --release --locked -p weft-server -p weft-bench
	$(BENCH_RUN) --mode short --scratch target/bench/check/work \
	  --results target/bench/check/results.json \
	  --markdown target/bench/check/BENCHMARKS.md --plots target/bench/check/bench

.PHONY: redis-server-bin
redis-server-bin: ## Debian's redis-server for Hocuspocus's two-node runs, unless REDIS_SERVER is there
	@if [ ! -x "$(REDIS_SERVER)" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	fi
