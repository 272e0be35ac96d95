# Weft: the two commands are `make run` and `make test`.
#
# Both install what they need on a fresh Debian machine with Rust, Node 20
# and Python 3.11, and cache what is slow to build under $(WEFT_CACHE), so a
# second run is fast.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

WEFT_CACHE ?= $(HOME)/.cache/weft
TOOLS := $(WEFT_CACHE)/tools
CARGO ?= cargo
NPM_CACHE := $(WEFT_CACHE)/npm
CARGO_DENY := $(TOOLS)/bin/cargo-deny
CARGO_DENY_VERSION := 0.20.2
# The tests' broker: Apache Kafka (KRaft), jars from Maven Central resolved
# once by tests/kafka/kafka.sh and cached, run with Java 17+.
KAFKA_SH := $(CURDIR)/tests/kafka/kafka.sh
# The services the tests run against: an Apache Kafka broker and PostgreSQL.
WITH_SERVICES := $(CURDIR)/tests/with-postgres.sh $(CURDIR)/tests/with-broker.sh
ADVISORY_URL := https://github.com/RustSec/advisory-db
# Where cargo-deny looks for that database given deny.toml's db-path.
ADVISORY_DIR := $(WEFT_CACHE)/advisory-dbs/advisory-db-3157b0e258782691

# `make run` flags for the node; override, e.g. `make run ARGS="--listen 0.0.0.0:1234"`.
ARGS ?=

include deploy/deploy.mk
include bench/bench.mk

.PHONY: help
help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The editor page a node serves at GET / (web/: CodeMirror 6 + Yjs, bundled
# by esbuild). Cargo compiles web/dist into the binary, so every target that
# runs cargo builds it first.
WEB_BUILT := web/.built
$(WEB_BUILT): web/package-lock.json web/build.mjs $(wildcard web/src/*)
	mkdir -p $(NPM_CACHE)
	cd web && npm ci --no-audit --no-fund --cache $(NPM_CACHE) --prefer-offline
	cd web && npm run build
	touch $@

# librdkafka is built with TLS (Kafka's SSL and SASL_SSL) against the
# system's OpenSSL: its headers and pkg-config, from Debian, once.
.PHONY: build-deps
build-deps: ## Debian packages the Rust build needs: OpenSSL headers (libssl-dev) and pkg-config; and the openssl command the TLS tests make their CAs with
	@if ! pkg-config --exists openssl 2>/dev/null || ! command -v openssl >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config openssl >/dev/null; \
	fi

.PHONY: web
web: $(WEB_BUILT) ## build the editor page's assets (npm, pinned by web/package-lock.json)

.PHONY: run
run: $(WEB_BUILT) build-deps ## build and run a node on the embedded default (127.0.0.1:1234, ./weft-data); open http://127.0.0.1:1234/
	$(CARGO) build --release --locked -p weft-server
	./target/release/weft serve $(ARGS)

.PHONY: build
build: $(WEB_BUILT) build-deps ## debug build of the weft binary
	$(CARGO) build --locked -p weft-server

.PHONY: test
test: lint unit e2e fault e2e-python bench-check deploy-check deny ## everything: lints, unit and gateway tests, end-to-end with real clients, the short benchmark, dependency checks

.PHONY: lint
lint: $(WEB_BUILT) build-deps ## rustfmt, clippy and rustdoc (warnings are errors), and no module that imports one importing it back
	$(CARGO) fmt --all -- --check
	python3 -m unittest -q tests/lint/test_module_cycles.py
	python3 tests/lint/module_cycles.py .
	$(CARGO) clippy --locked --workspace --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --workspace --all-features

.PHONY: unit
unit: $(WEB_BUILT) build-deps kafka postgres-server ## unit, property, store, gateway and bus tests (against an Apache Kafka broker and PostgreSQL)
	$(WITH_SERVICES) $(CARGO) test --locked --workspace --all-features

tests/node_modules/.weft-lock: tests/package-lock.json
	mkdir -p $(NPM_CACHE)
	cd tests && npm ci --no-audit --no-fund --cache $(NPM_CACHE) --prefer-offline
	cp tests/package-lock.json $@

.PHONY: e2e
e2e: build tests/node_modules/.weft-lock chromium nginx kafka postgres-server ## end-to-end: the weft binary with unmodified npm Yjs clients and the editor page in Chromium, one node and clusters over a real broker
	cd tests && WEFT_BIN=$(CURDIR)/target/debug/weft $(WITH_SERVICES) node --test --test-concurrency=1 --test-force-exit e2e/

.PHONY: fault
fault: build tests/node_modules/.weft-lock kafka postgres-server ## Apache Kafka under stress and faults (short): convergence of 3 nodes loading 30 documents at once (WEFT_STRESS_RUNS, default 3), then broker faults on 3 brokers at RF 3 under editing clients (leader kill, stopped broker, rolling restart, lost quorum, worker kill; WEFT_FAULT_REPORT=FILE)
	cd tests && WEFT_BIN=$(CURDIR)/target/debug/weft $(CURDIR)/tests/with-postgres.sh node --test --test-concurrency=1 --test-force-exit fault/

.PHONY: test-long
test-long: ## the long stress and fault runs in full: 50 convergence runs, the faults at full length, 19,000 half-open requests (about 45-75 minutes)
	WEFT_SLOWLORIS_CONNECTIONS=19000 $(CARGO) test --locked -p weft-server --test slowloris
	$(MAKE) fault WEFT_STRESS_RUNS=$${WEFT_STRESS_RUNS:-50} WEFT_FAULT_LONG=1

.PHONY: chromium
chromium: ## Debian's Chromium for the editor page's browser tests, unless one is there (WEFT_CHROMIUM names another)
	@if [ -z "$${WEFT_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

.PHONY: screenshot
screenshot: build tests/node_modules/.weft-lock chromium kafka postgres-server ## retake docs/editor.png: two editor pages on two nodes of a cluster
	cd tests && WEFT_BIN=$(CURDIR)/target/debug/weft WEFT_SCREENSHOT=$(CURDIR)/docs/editor.png $(WITH_SERVICES) \
	  node --test --test-force-exit --test-name-pattern 'two pages on two nodes' e2e/editor.test.mjs

.PHONY: kafka
kafka: ## Apache Kafka's jars for the test brokers (Maven resolves them from Maven Central once; cached), checking Java 17+ and mvn
	@command -v java >/dev/null || { echo "make kafka: the test broker (Apache Kafka 4) runs on Java 17 or later, and no 'java' is on PATH (Debian: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@java_version=$$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p'); \
	  if [ -z "$$java_version" ] || [ "$${java_version%%.*}" -lt 17 ]; then \
	    echo "make kafka: the test broker (Apache Kafka 4) needs Java 17 or later; 'java' is $${java_version:-of an unknown version}" >&2; exit 1; \
	  fi
	@command -v mvn >/dev/null || ls $(WEFT_CACHE)/kafka-*/lib/.complete >/dev/null 2>&1 || { \
	  echo "make kafka: Maven (mvn) is needed once to resolve Apache Kafka's jars from Maven Central (Debian: apt-get install maven)" >&2; exit 1; }
	@jars=$$($(KAFKA_SH) classpath); echo "test broker: Apache Kafka $$($(KAFKA_SH) version), jars in $$jars"

.PHONY: postgres-server
postgres-server: ## PostgreSQL server binaries for the tests (Debian package), unless a server already answers on 127.0.0.1:5432
	@if ! psql postgres://postgres@127.0.0.1:5432/test -qtAc 'SELECT 1' >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

# Python clients (pycrdt, pycrdt-websocket, httpx-ws, pytest) in a virtual
# environment under the cache, rebuilt when the pinned requirements change.
PY_REQUIREMENTS := tests/python/requirements.txt
PY_VENV := $(WEFT_CACHE)/venv-$(shell sha256sum $(PY_REQUIREMENTS) | cut -c1-12)

$(PY_VENV)/.installed: $(PY_REQUIREMENTS)
	python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(PY_REQUIREMENTS)
	touch $@

.PHONY: e2e-python
e2e-python: build tests/node_modules/.weft-lock $(PY_VENV)/.installed kafka postgres-server ## end-to-end: unmodified pycrdt clients (and a y-websocket peer) against the weft binary
	cd tests && WEFT_BIN=$(CURDIR)/target/debug/weft $(WITH_SERVICES) $(PY_VENV)/bin/python -m pytest -q python

$(CARGO_DENY):
	$(CARGO) install cargo-deny --version $(CARGO_DENY_VERSION) --locked --root $(TOOLS)

.PHONY: deny
deny: $(CARGO_DENY) ## licenses, bans, sources, and RustSec advisories (cached database, else fetched, else reported as skipped)
	$(CARGO) fetch --locked  # every platform's crates, so the offline check below can read them
	$(CARGO_DENY) --log-level error check bans licenses sources
	@if [ -d "$(ADVISORY_DIR)" ]; then \
	  $(CARGO_DENY) --log-level error --offline check advisories && echo "advisories ok (database of $$(git -C $(ADVISORY_DIR) log -1 --format=%cs))"; \
	elif timeout 20 git ls-remote $(ADVISORY_URL) HEAD >/dev/null 2>&1; then \
	  $(CARGO_DENY) --log-level error check advisories && echo "advisories ok"; \
	else \
	  echo "advisories SKIPPED: the RustSec database is unreachable here; run 'make advisories WEFT_ADVISORY_DB=<clone>' once"; \
	fi

.PHONY: advisories
advisories: $(CARGO_DENY) ## install a RustSec database from a local clone or URL (WEFT_ADVISORY_DB) and check against it
	mkdir -p $(dir $(ADVISORY_DIR))
	rm -rf $(ADVISORY_DIR)
	git clone --quiet --depth 1 $${WEFT_ADVISORY_DB:-$(ADVISORY_URL)} $(ADVISORY_DIR)
	$(CARGO) fetch --locked
	$(CARGO_DENY) --log-level error --offline check advisories

.PHONY: fuzz
fuzz: ## fuzz the frame decoder and update application for FUZZ_SECONDS each (default 60; nightly + cargo-fuzz)
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd crates/protocol/fuzz && \
	  $(CARGO) +nightly fuzz run decode_frame -- -max_total_time=$${FUZZ_SECONDS:-60} && \
	  ASAN_OPTIONS=allocator_may_return_null=1 $(CARGO) +nightly fuzz run -O apply_update -- \
	    -max_total_time=$${FUZZ_SECONDS:-60} -malloc_limit_mb=1000000000 -rss_limit_mb=4096

.PHONY: measure-idle
measure-idle: tests/node_modules/.weft-lock ## server RSS per idle synced connection (release build, N=1000)
	$(CARGO) build --release --locked -p weft-server
	cd tests && WEFT_BIN=$(CURDIR)/target/release/weft node measure/idle-rss.mjs


.PHONY: clean
clean:
	$(CARGO) clean
	rm -rf tests/node_modules web/node_modules web/dist $(WEB_BUILT)
