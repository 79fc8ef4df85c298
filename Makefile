# Two commands on a fresh machine: `make serve` and `make test`.  Each creates .venv and
# installs what it needs; nothing relies on packages installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: serve test lint fmt clean lock install install-test demo browser reliability bench bench-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: $(VENV)/.installed
	$(BIN)/wxreply serve

test: $(VENV)/.installed-test browser
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The browser tests (tests/e2e/test_browser.py) drive Debian's Chromium; they fail, never
# skip, without it.  Installed here when missing: as root directly (CI: root, no stdin),
# otherwise through a password-less sudo.  A CJK font makes the screenshots readable.
CHROMIUM ?= chromium
CHROMIUM_PACKAGES := chromium fonts-wqy-microhei
APT := env DEBIAN_FRONTEND=noninteractive apt-get -qq
browser:
	@command -v $(CHROMIUM) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi; \
	  echo "installing $(CHROMIUM_PACKAGES) for the browser tests"; \
	  { $$sudo $(APT) update && $$sudo $(APT) install -y $(CHROMIUM_PACKAGES); } \
	    </dev/null >/dev/null || { \
	    echo "could not install $(CHROMIUM_PACKAGES); install Chromium yourself"; exit 1; }; }

# The long versions of the reliability suite; rewrites docs/RELIABILITY.md with their figures.
RELIABILITY_TESTS := tests/reliability tests/e2e/test_failover.py tests/web_min/test_api_corpus.py
reliability: $(VENV)/.installed-test
	rm -rf test-artifacts/reliability
	WXR_RELIABILITY=long $(BIN)/python -m pytest -m "slow or not slow" --timeout 900 $(RELIABILITY_TESTS)
	$(BIN)/python -m tests.reliability.report

# The three benchmarks against their baselines (tens of minutes); rewrites the generated
# part of docs/PERFORMANCE.md.  bench-quick: the same in a minute, nothing written.
$(VENV)/.installed-bench: setup.cfg pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[test,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

# DENSITY_K="500 1000": the density run at these session counts only.
DENSITY_K ?=
bench: $(VENV)/.installed-bench
	mkdir -p test-artifacts
	$(BIN)/python -m bench --json test-artifacts/bench.json $(foreach k,$(DENSITY_K),--density-k $(k))

bench-quick: $(VENV)/.installed-bench
	$(BIN)/python -m bench --quick

# The whole loop offline: wxreply + a fake web WeChat + a fake official-account API.
# MP_KIND=subscription: the fake account is a personal subscription account (48001).
MP_KIND ?= service
demo: $(VENV)/.installed-test
	$(BIN)/python -m sandbox.demo --mp-kind $(MP_KIND)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .

# constraints.txt from the newest releases setup.cfg allows, resolved in a scratch venv.
LOCK_VENV := $(shell mktemp -u /tmp/wxreply-lock.XXXXXX)
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip --disable-pip-version-check -q install '.[test,bench]'
	{ sed -n '1,3p' constraints.txt; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude wxreply; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV) build
	@echo "constraints.txt rewritten; run make test before committing it"

clean:
	rm -rf $(VENV) *.egg-info
