# Two commands for a fresh machine: `make demo` and `make test`.
# `make test` includes the Kafka tests (tests/integration): a session fixture resolves Apache
# Kafka's jars from Maven Central (once, into ~/.cache/tidal/kafka), starts one broker on
# free loopback ports and stops it at the end, so Java 17+ and Maven must be on PATH; with
# TIDAL_KAFKA=host:port they use that cluster instead. Without Java or Maven they fail, saying
# what to install. `make test ARGS='-m "not integration"'` leaves them out.
# The schema-registry tests (tests/integration/test_schema_registry.py) likewise build Apicurio
# Registry from Maven Central with Maven, once, into ~/.cache/tidal/registry (a few minutes;
# decision 0048); TIDAL_SCHEMA_REGISTRY=URL uses a running Confluent-compatible registry.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.core-installed
FULL := $(VENV)/.test-installed
# PyFlink pins numpy<2.2, pyarrow<17 and pandas<2.3, so Tidal-inside-Flink gets its own
# environment: PyFlink + Tidal's core (its wide ranges install beside the pins) + the Kafka
# extra (the example's test talks to the broker) + pytest, resolved in ONE pip call so the
# pins hold. `make test` runs the Flink tests there after the main suite.
FLINK_VENV := .venv-flink
FLINK_BIN := $(FLINK_VENV)/bin
FLINK := $(FLINK_VENV)/.flink-installed
PYFLINK ?= apache-flink==2.3.*
FLINK_TESTS ?= tests/flink tests/integration/test_flink_job.py src/tidal/flink
# Everything the test suite exercises: the core plus the optional model backends.
# PyTorch from PyPI is a large (CUDA) build: it is only installed for tests, never for the demo.
TEST_EXTRAS ?= dev,sklearn,river,torch,kafka,formats,learn

.PHONY: demo test lint typecheck bench clean browser flink-env flink-test flink-bench

# The dashboard's browser test (tests/integration/test_dashboard_browser.py) drives Debian's
# headless Chromium; `make test` installs chromium and chromium-driver when they are missing
# and it runs as root with apt-get, and otherwise that one test is skipped, saying why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing chromium and chromium-driver (apt-get) for the dashboard's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium chromium-driver >/dev/null) \
	      || echo "make: could not install chromium; the browser test will be skipped"; \
	  else \
	    echo "make: chromium/chromium-driver missing and not root: the browser test will be skipped"; \
	  fi; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(CORE): pyproject.toml | $(BIN)/python
	@echo "make: installing Tidal's core into $(VENV) (numpy, pyarrow, orjson, rich, onnxruntime; no PyTorch)"
	$(BIN)/python -m pip install --quiet -e .
	touch $(CORE)

$(FULL): pyproject.toml | $(BIN)/python
	@echo "make: installing Tidal with the test extras ($(TEST_EXTRAS)) into $(VENV)."
	@echo "make: the first time this downloads about 6 GB (PyPI's PyTorch is the CUDA build,"
	@echo "make: with NVIDIA's libraries) and takes several minutes; pip shows its progress."
	$(BIN)/python -m pip install --progress-bar on -e '.[$(TEST_EXTRAS)]'
	touch $(FULL) $(CORE)

$(FLINK): pyproject.toml
	@echo "make: building $(FLINK_VENV) ($(PYFLINK) + Tidal's core + pytest; about 700 MB, a few minutes)"
	test -x $(FLINK_BIN)/python || $(PY) -m venv $(FLINK_VENV)
	$(FLINK_BIN)/python -m pip install --quiet --upgrade pip
	$(FLINK_BIN)/python -m pip install --progress-bar on '$(PYFLINK)' -e '.[kafka]' 'pytest>=8'
	$(FLINK_BIN)/python -m pip check
	touch $(FLINK)

flink-env: $(FLINK)

# The Flink tests on PyFlink's local mini-cluster (Java 17; the example's test also starts
# the project's Kafka broker and fetches Flink's Kafka connector jar with Maven, once).
# Flink's Python workers are started as `python` from PATH: the venv goes first.
flink-test: $(FLINK)
	PATH="$(abspath $(FLINK_BIN)):$$PATH" TIDAL_FLINK_TESTS=1 \
		$(FLINK_BIN)/python -m pytest $(FLINK_TESTS) $(FLINK_ARGS)

flink-bench: $(FLINK)
	PATH="$(abspath $(FLINK_BIN)):$$PATH" $(FLINK_BIN)/python bench/flink.py $(ARGS)

demo: $(CORE)
	$(BIN)/tidal demo $(ARGS)

lint: $(FULL)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

test: $(FULL) lint browser
	$(BIN)/python -m pytest $(ARGS)
	$(MAKE) flink-test

bench: $(FULL)
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) $(FLINK_VENV) .pytest_cache .mypy_cache .ruff_cache
