# Two commands on a fresh machine: `make serve` and `make test`.  Each creates .venv and
# installs what it needs; nothing relies on packages installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: serve test lint fmt clean install install-test demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: $(VENV)/.installed
	$(BIN)/wxreply serve

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The whole loop offline: wxreply + a fake web WeChat + a fake official-account API.
demo: $(VENV)/.installed-test
	$(BIN)/python -m tests.fakes.demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

fmt: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) *.egg-info
