# The two commands a user needs: `make demo` runs the main job on the embedded defaults,
# `make test` runs the checks and the tests. Both set up what they need, idempotently.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS  := .jars/.fetched
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
UV_VERSION := 0.13.9

.PHONY: help setup java maven browser db demo test lint stop

help:
	@echo "make demo   run the main job end to end on the embedded defaults"
	@echo "make test   lint, type-check and run the tests (starts what they need)"
	@echo "make stop   stop everything the project started (precompute down)"

# Reinstall only when the dependency pins change; a second run costs nothing.
$(STAMP): pyproject.toml requirements.lock
	@echo "==> creating $(VENV) and installing the locked dependencies"
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(PY) -r requirements.lock
	$(BIN)/uv pip install -q --python $(PY) --no-deps -e .
	touch $@

setup: $(STAMP) java $(JARS)

# Spark needs a JVM, and the profile aggregate a compiler: install Java 17's JDK from Debian
# when either is missing from the PATH.
java:
	@command -v java >/dev/null && command -v javac >/dev/null || { \
	  echo "==> java or javac not found: installing openjdk-17-jdk-headless"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jdk-headless; }

# The pinned JVM artifacts (jvm/<set>/pom.xml, checked against jvm/<set>/jars.sha256), fetched
# once with Maven into .jars/: jobs never download at run time. The same step builds the
# profile aggregate (jvm/profile/*.java) with javac, again when its source or PySpark changes.
$(JARS): $(wildcard jvm/*/pom.xml jvm/*/jars.sha256 jvm/profile/*.java) $(STAMP) | java maven
	$(PY) -m jobs.jars fetch
	touch $@

maven:
	@command -v mvn >/dev/null || { \
	  echo "==> mvn not found: installing maven"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq maven; }

# The browser tests drive Debian's Chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  echo "==> chromium not found: installing Debian's chromium"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

db: setup
	$(BIN)/precompute db start

demo: setup
	$(BIN)/precompute demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cli local precompute jobs lookup_api tests dags bench

test: lint db browser
	$(BIN)/pytest

stop:
	@[ -x $(BIN)/precompute ] && $(BIN)/precompute down || true
