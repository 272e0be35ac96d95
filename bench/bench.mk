# `make bench`: Weft against its peers, written to docs/BENCHMARKS.md.
#
# BENCH_MODE=short (default): small sizes, one run of each cell, a minute or
# two; what CI could afford. BENCH_MODE=full: the published sizes, three runs
# of each cell (BENCH_REPEATS overrides), by hand.
#
# The peers (@y/websocket-server, @hocuspocus/server, its Redis extension)
# are installed from npm into bench/peers, pinned by its package-lock.json.
# Hocuspocus's two-node runs start their own redis-server (Debian's
# `redis-server`) on a free loopback port; Weft's start a Tansu broker.

BENCH_MODE ?= short
BENCH_REPEATS ?=
# Weft's --kafka-fetch-wait-ms in two-node runs: Tansu answers a fetch only
# after the full wait, so this is a floor under cross-node latency.
BENCH_KAFKA_FETCH_WAIT_MS ?= 1
REDIS_SERVER ?= $(shell command -v redis-server)
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

.PHONY: bench
# web/.built: the editor page the weft binary embeds (the Makefile defines
# WEB_BUILT after this file is included, so it is named here).
bench: web/.built $(TANSU) $(BENCH_PEERS_BUILT) ## Weft vs its peers -> docs/BENCHMARKS.md (BENCH_MODE=short|full)
	@test -n "$(REDIS_SERVER)" || { echo "make bench needs redis-server (Debian package redis-server)"; exit 1; }
	$(CARGO) build --release --locked -p weft-server -p weft-bench
	ulimit -n "$$(ulimit -Hn)"; ./target/release/weft-bench run \
	  --mode $(BENCH_MODE) $(if $(BENCH_REPEATS),--repeats $(BENCH_REPEATS)) \
	  --weft ./target/release/weft --peers-dir bench/peers \
	  --tansu $(TANSU) --redis-server $(REDIS_SERVER) \
	  --kafka-fetch-wait-ms $(BENCH_KAFKA_FETCH_WAIT_MS) \
	  $(if $(BENCH_TRACE),--trace $(BENCH_TRACE)) \
	  --results target/bench/results-$(BENCH_MODE).json \
	  --markdown docs/BENCHMARKS.md --plots docs/bench
