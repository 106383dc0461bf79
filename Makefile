# rigfast: `make run` starts the gateway (foreground), `make test` runs the test suite.
# Both create a virtualenv in .venv and build the Cython extensions on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rigfast-installed
EXT_SOURCES := $(wildcard rigfast/_ext/*.pyx rigfast/_ext/*.pxd)
PYTEST_ARGS ?=

.PHONY: run run-kafka test test-pure bench bench-peers install annotate clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel "Cython>=3.0"

$(STAMP): $(PY) pyproject.toml setup.py $(EXT_SOURCES)
	$(PY) -m pip install -q -e '.[test]'
	RIGFAST_REQUIRE_EXTENSIONS=$${RIGFAST_REQUIRE_EXTENSIONS:-0} $(PY) setup.py -q build_ext --inplace
	touch $@

install: $(STAMP)

# Foreground; honours every RIG environment variable and RIGFAST_WORKERS.
# RIGFAST_DIE_WITH_PARENT makes the gateway stop cleanly when make itself gets SIGTERM.
run: install
	RIGFAST_DIE_WITH_PARENT=1 exec $(PY) -m rigfast

# A local Kafka-protocol broker (Tansu) on 127.0.0.1:9092 and the gateway consuming from it.
run-kafka: install
	RIGFAST_DIE_WITH_PARENT=1 exec $(PY) -m rigfast dev-broker --with-gateway

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)
	RIGFAST_NO_EXTENSIONS=1 $(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# The plain-Python engine only (what a machine without a compiler runs).
test-pure: install
	RIGFAST_NO_EXTENSIONS=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) -m pytest -q bench -p no:cacheprovider --benchmark-enable --benchmark-columns=median,ops

# rigfast vs nginx+nchan and Pushpin (installs them with apt; takes ~15 minutes for everything).
bench-peers: install
	bench/peerbench.sh

annotate: install
	$(VENV)/bin/cython -a rigfast/_ext/*.pyx

clean:
	rm -rf build $(VENV) rigfast/_ext/*.c rigfast/_ext/*.so rigfast/_ext/*.html
