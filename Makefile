# Clinic: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS    := .local/tools
BUF      := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
# Integration tests mostly wait on sockets; more threads than cores keeps both cores busy.
TEST_THREADS ?= 8

.PHONY: help test lint fmt postgres-bins tools clean

help: ## List the commands
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

test: postgres-bins lint ## The whole suite: fmt check, clippy, buf lint, unit + integration tests on real Postgres
	cargo test --workspace --locked -- --test-threads=$(TEST_THREADS)

lint: $(BUF) ## Check formatting, clippy (-D warnings) and buf lint, changing nothing
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cd proto && ../$(BUF) lint

fmt: ## Fix what can be fixed: rustfmt and clippy's machine-applicable suggestions
	cargo clippy --workspace --all-targets --fix --allow-dirty --allow-staged
	cargo fmt --all

postgres-bins: ## Make sure the PostgreSQL server binaries are installed (apt as root, else instructions)
	@scripts/ensure-postgres.sh

tools: $(BUF) ## Install the project's tools into .local/tools

$(BUF):
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-audit --no-fund --silent @bufbuild/buf@$(BUF_VERSION)

clean: ## Remove build output and local tools and data
	cargo clean
	rm -rf .local
