# edgewatch — `make demo` shows it working, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv system-deps wheel-models models demo test lint unit integration bench clean

help:
	@echo "make demo   - build what is missing, start a throwaway broker, run the demo device"
	@echo "make test   - install everything the tests need and run lint + the whole suite"
	@echo "make models - rebuild every bundle in models/ (deterministic)"
	@echo "make bench  - run the benchmarks (not part of the tests)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,tools]"
	touch $@

venv: $(STAMP)

# The integration tests start their own Mosquitto; install it from Debian when we can.
system-deps:
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then \
	  if command -v mosquitto_sub >/dev/null; then exit 0; fi; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing mosquitto and mosquitto-clients from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; \
	else \
	  echo "error: the tests need the 'mosquitto' broker and 'mosquitto-clients';" \
	       "install them (e.g. sudo apt-get install mosquitto mosquitto-clients) and re-run" >&2; \
	  exit 1; \
	fi

models: $(STAMP)
	$(BIN)/python -m tools.demo_models --out models --overwrite

demo: $(STAMP)
	$(BIN)/python -m tools.run_demo $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS),)

lint: $(STAMP)
	$(BIN)/ruff check runtime tools tests benchmarks
	$(BIN)/ruff format --check runtime tools tests benchmarks
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# Real models shipped inside PyPI wheels (MediaPipe, silero-vad, pymicro-wakeword, scikit-image
# photos): downloaded once into build/wheel-models/, checked by sha256; tests never download.
wheel-models: $(STAMP)
	$(BIN)/python -m tools.model_wheels

integration: $(STAMP) system-deps wheel-models
	$(BIN)/pytest tests/integration -q

test: $(STAMP) system-deps wheel-models lint
	$(BIN)/pytest -q

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/camera_pipeline.py
	$(BIN)/python benchmarks/sensor_pipeline.py
	$(BIN)/python benchmarks/outbox.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
