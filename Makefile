# aigate: build, lint and test plumbing.
#
#   make test        toolchain + lint + unit + e2e (what CI runs)
#   make run         mock provider on :8001 + Envoy with the filter on :10000
#   make e2e PYTEST_ARGS='-k smoke -x'
#
# Python tooling lives in .venv (created from integration/requirements.txt).

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

.PHONY: venv toolchain wasm lint unit e2e test run

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

## wasm: the filter
wasm:
	cargo build --release --target $(WASM_TARGET)
	@ls -l $(WASM)

## lint: formatting and clippy, native and wasm
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) --lib -- -D warnings

## unit: native Rust tests
unit:
	cargo test

## e2e: real Envoy + mocks + real clients
e2e: venv wasm
	$(VENV_PY) -m pytest integration/tests -q $(PYTEST_ARGS)

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
