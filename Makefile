# Two commands for a fresh machine: `make demo` and `make test`.
# `make test` includes the Kafka tests (tests/integration): a session fixture resolves Apache
# Kafka's jars from Maven Central (once, into ~/.cache/tidal/kafka), starts one broker on
# free loopback ports and stops it at the end, so Java 17+ and Maven must be on PATH; with
# TIDAL_KAFKA=host:port they use that cluster instead. Without Java or Maven they fail, saying
# what to install. `make test ARGS='-m "not integration"'` leaves them out.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.core-installed
FULL := $(VENV)/.test-installed
# Everything the test suite exercises: the core plus the optional model backends.
# PyTorch from PyPI is a large (CUDA) build: it is only installed for tests, never for the demo.
TEST_EXTRAS ?= dev,sklearn,river,torch,kafka,formats,learn

.PHONY: demo test lint typecheck bench clean browser

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

demo: $(CORE)
	$(BIN)/tidal demo $(ARGS)

lint: $(FULL)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

test: $(FULL) lint browser
	$(BIN)/python -m pytest $(ARGS)

bench: $(FULL)
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
