# aigate: build, lint and test plumbing.
#
#   make test        toolchain + lint + unit + e2e (what CI runs)
#   make run         mock provider on :8001 + Envoy with the filter on :10000
#   make e2e PYTEST_ARGS='-k smoke -x'
#   make release     size-optimised filter (wasm-opt) in dist/plugin.wasm;  make oci  its OCI image layout
#   make cli         the native `aigate` CLI (check / explain) in target/release/aigate
#   make soak        minutes of mixed traffic through Envoy, memory figures (not part of `test`)
#   make bench       plain Envoy vs Envoy + aigate, side by side (BENCH_QUICK=1: ~1 minute)
#
# Python tooling lives in .venv (created from integration/requirements.txt); wasm-opt in
# tools/binaryen/node_modules (npm's binaryen, pinned by tools/binaryen/package-lock.json).
# Nothing else is needed beyond rustup, python3, make, a C compiler and node/npm.

SHELL        := bash
.SHELLFLAGS  := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON       ?= python3
VENV         := .venv
VENV_PY      := $(VENV)/bin/python
VENV_STAMP   := $(VENV)/.requirements.stamp
REQUIREMENTS := integration/requirements.txt
WASM_TARGET  := wasm32-wasip1
WASM         := target/$(WASM_TARGET)/release/aigate.wasm
PYTEST_ARGS  ?=

BENCH_TARGET := target/bench

.PHONY: venv toolchain wasm lint unit e2e test run cli binaryen wasm-opt release oci soak bench bench-tools bench-profile wrk agents

## venv: .venv with the e2e requirements (re-installs only when they change)
venv: $(VENV_STAMP)

$(VENV_STAMP): $(REQUIREMENTS)
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS)
	touch $@

## toolchain: the wasm target and lint components for the toolchain pinned in rust-toolchain.toml
toolchain:
	rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install "$$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
	rustup target add $(WASM_TARGET)
	rustup component add clippy rustfmt

## wasm: the filter crate (filter/, package aigate) as target/wasm32-wasip1/release/aigate.wasm
##   (what the standard `cargo build --release --target wasm32-wasip1` at the root builds too)
wasm:
	cargo build --release --target $(WASM_TARGET) -p aigate
	@ls -l $(WASM)

## cli: the native aigate CLI (cli/, package aigate-cli: aigate check CONFIG.json, aigate explain CONFIG.json REQUEST.json)
cli:
	cargo build --release -p aigate-cli --bin aigate
	@ls -l target/release/aigate

# wasm-opt from npm's binaryen package, installed into tools/binaryen by `npm ci` (the version
# is pinned in tools/binaryen/package-lock.json; it runs on node, no system package needed).
# The features are those rustc enables for wasm32-wasip1 (`rustc --print cfg --target
# wasm32-wasip1`); without them wasm-opt refuses memory.copy.
DIST           := dist
RELEASE_WASM   := $(DIST)/plugin.wasm
BINARYEN_DIR   := tools/binaryen
BINARYEN_STAMP := $(BINARYEN_DIR)/node_modules/.installed.stamp
WASM_OPT       ?= $(BINARYEN_DIR)/node_modules/.bin/wasm-opt
WASM_OPT_FLAGS := -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
                  --enable-nontrapping-float-to-int --enable-mutable-globals --enable-reference-types --enable-multivalue
OCI_IMAGE      ?= aigate
OCI_TAG        ?= $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
OCI_LAYOUT     := $(DIST)/oci

## binaryen: wasm-opt in tools/binaryen/node_modules (npm ci; re-installs only when the lock changes)
binaryen: $(BINARYEN_STAMP)

$(BINARYEN_STAMP): $(BINARYEN_DIR)/package.json $(BINARYEN_DIR)/package-lock.json
	npm ci --prefix $(BINARYEN_DIR) --no-audit --no-fund --loglevel=error
	touch $@

## wasm-opt: dist/plugin.wasm, the filter shrunk by wasm-opt
wasm-opt: wasm binaryen
	mkdir -p $(DIST)
	$(WASM_OPT) $(WASM_OPT_FLAGS) $(WASM) -o $(RELEASE_WASM)
	@echo "size: $$(stat -c %s $(WASM)) bytes (cargo) -> $$(stat -c %s $(RELEASE_WASM)) bytes ($(RELEASE_WASM))"

## release: the size-optimised filter plus its sha256, ready for `make oci` or a plain Envoy
release: wasm-opt
	cd $(DIST) && sha256sum plugin.wasm > plugin.wasm.sha256 && cat plugin.wasm.sha256

## oci: dist/oci, an OCI image layout of dist/plugin.wasm (no Docker: deploy/oci_image.py); push it with
##   skopeo copy oci:dist/oci:TAG docker://REGISTRY/aigate:TAG   (or crane push dist/oci REGISTRY/aigate:TAG)
oci: release
	rm -rf $(OCI_LAYOUT)
	$(PYTHON) deploy/oci_image.py $(RELEASE_WASM) $(OCI_LAYOUT) --tag $(OCI_TAG)

## lint: formatting, clippy on every crate (native; the filter and core for wasm, with and
##   without phase-profile), and the one-way layer check (tools/layers.py, with its self-test).
##   The wasm clippy names no package: it checks what the standard `cargo build --target
##   wasm32-wasip1` at the root selects (core + filter), and fails if the native-only CLI joins.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p aigate --features phase-profile -- -D warnings
	$(PYTHON) tools/layers.py --self-test
	$(PYTHON) tools/layers.py

## unit: native Rust tests of every crate (core, filter, CLI)
unit:
	cargo test --workspace

# The real coding agents the e2e tests drive (Claude Code, Codex), pinned in
# integration/agents/package-lock.json and installed project-locally by `npm ci`.
AGENTS_DIR   := integration/agents
AGENTS_STAMP := $(AGENTS_DIR)/node_modules/.installed.stamp

## agents: claude and codex in integration/agents/node_modules/.bin (re-installs only when the lock changes)
agents: $(AGENTS_STAMP)

$(AGENTS_STAMP): $(AGENTS_DIR)/package.json $(AGENTS_DIR)/package-lock.json
	npm ci --prefix $(AGENTS_DIR) --no-audit --no-fund --loglevel=error
	touch $@

## e2e: real Envoy + mocks + real clients (binaryen: the wasm-opt build is tested too)
e2e: venv wasm bench-tools binaryen agents
	AIGATE_WASM_OPT=$(if $(findstring /,$(WASM_OPT)),$(abspath $(WASM_OPT)),$(WASM_OPT)) $(VENV_PY) -m pytest integration/tests -q $(PYTEST_ARGS)

## soak: minutes of mixed traffic through Envoy; prints RSS and Wasm memory over time (SOAK_ARGS='--seconds 300')
SOAK_ARGS ?=
soak: venv wasm
	$(VENV_PY) -m integration.soak $(SOAK_ARGS)

## test: everything, in order
test:
	$(MAKE) --no-print-directory toolchain
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory e2e

define RUN_BANNER

  aigate: Envoy on http://127.0.0.1:10000 (admin http://127.0.0.1:9901), mock provider on 127.0.0.1:8001

  curl:
    curl -s http://127.0.0.1:10000/v1/chat/completions -H 'content-type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'

  Python (pip install openai):
    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:10000/v1", api_key="anything")
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}])
    print(r.choices[0].message.content, r.usage)

  Stats: curl -s http://127.0.0.1:9901/stats/prometheus     Stop: Ctrl-C

endef
export RUN_BANNER

## run: mock provider in the background, Envoy with envoy/envoy.yaml in the foreground
run: venv wasm
	@echo "$$RUN_BANNER"
	@$(VENV_PY) -m integration.mocks --port 8001 & mock_pid=$$!; \
	trap 'kill $$mock_pid 2>/dev/null || true; wait $$mock_pid 2>/dev/null || true' EXIT; \
	trap 'exit 130' INT TERM; \
	for _ in $$(seq 50); do \
	  $(VENV_PY) -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=1)" 2>/dev/null && break; \
	  kill -0 $$mock_pid 2>/dev/null || { echo "mock provider failed to start (port 8001 busy?)" >&2; exit 1; }; \
	  sleep 0.1; \
	done; \
	$(VENV)/bin/envoy -c envoy/envoy.yaml --concurrency 2 --log-level info --component-log-level wasm:info

## bench-tools: the do-nothing Wasm filter and the upstream server of the benchmark
bench-tools:
	cargo build --release --target $(WASM_TARGET) --manifest-path integration/bench/noop/Cargo.toml --target-dir $(BENCH_TARGET)
	cargo build --release --manifest-path integration/bench/upstream/Cargo.toml --target-dir $(BENCH_TARGET)

## bench-profile: aigate with per-phase timing inside the VM (the bench's "where the time goes" pass)
bench-profile:
	cargo build --release --target $(WASM_TARGET) -p aigate --features phase-profile --target-dir $(BENCH_TARGET)/profile

## wrk: the load generator, from Debian's packages when missing
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "bench: installing wrk"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends wrk; }

## bench: the filter's cost against plain Envoy; prints the tables and updates BENCHMARKS.md
##   (knobs: BENCH_QUICK=1, BENCH_ROUTE=..., BENCH_ROUNDS=..., see integration/bench/run.py)
bench: venv wasm bench-tools bench-profile wrk
	$(VENV_PY) -m integration.bench

## fuzz: each cargo-fuzz target in fuzz/ for FUZZ_SECONDS (needs the nightly toolchain; installs cargo-fuzz if missing)
FUZZ_SECONDS ?= 30
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --locked
	cd fuzz && for target in config request sse flow; do \
	  cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 || exit 1; \
	done
