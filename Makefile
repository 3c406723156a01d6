# The README's two set-up commands:
#   make run DATA=<cifar10 | path to the CIFAR-10 tarball / python archive / image-folder tree>
#   make test
# Both create .venv when missing. torch/torchvision come from pip (pinned ranges in pyproject.toml).

PYTHON ?= python3
VENV   ?= .venv
DATA   ?= cifar10
BIN    := $(abspath $(VENV))/bin
# dvc.yaml calls `autoaug ...`: make the venv's console scripts visible to it.
export PATH := $(BIN):$(PATH)

.PHONY: run test lint install install-dev bench clean

$(VENV)/.stamp-base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.stamp-base

install: $(VENV)/.stamp-base
install-dev: $(VENV)/.stamp-dev

## run: ingest DATA into the raw store, then run every DVC stage that is out of date
run: install
	test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/autoaug ingest $(DATA)
	$(BIN)/dvc repro

## test: the whole test suite (PostgreSQL tests need AUTOAUG_TEST_POSTGRES_URL, else they skip)
test: install-dev
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check pipeline service tests bench
	$(BIN)/mypy pipeline service bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
