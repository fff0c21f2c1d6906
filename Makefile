# ladderlab: two commands from a fresh clone.
#   make lab    set everything up, then start JupyterLab on 127.0.0.1 on your workspace (+ the grading service)
#   make test   set everything up, then run every test (lint, types, unit, integration, labs)
#
# "Set everything up" = a virtualenv in .venv with ladderlab installed, a Docker
# engine that answers (installed and started when we are root with apt), the
# Debian base image (bootstrapped when no registry answers) and every lab image.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
PORT   ?= 8888

.PHONY: lab test setup venv lint unit integration bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,hub]'
	# jsonschema's format-nongpl extra (asked for by jupyter_events) pulls rfc3987-syntax, which builds a Lark
	# grammar when imported: about 1.5 s of CPU in every process that imports nbformat (each ladderlab and nbgrader
	# command, the lab and hub servers). No schema they check uses its "iri" formats; jsonschema skips it when absent.
	$(BIN)/pip uninstall --quiet -y rfc3987-syntax
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

setup: venv
	$(BIN)/ladderlab setup

lab: setup
	$(BIN)/ladderlab lab --port $(PORT)

lint: venv
	$(BIN)/ruff check src graders tests benchmarks
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

test: setup lint
	$(BIN)/ladderlab setup --no-images --browser --hub
	$(BIN)/pytest tests --durations=40

bench: setup
	$(BIN)/python benchmarks/env_startup.py
	$(BIN)/python benchmarks/grade_one.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/submit.py

clean:
	-$(BIN)/ladderlab env reap
	rm -rf $(VENV) .cache
