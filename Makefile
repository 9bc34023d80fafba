# The two commands of the README: `make run` (train on the bundled corpus, then sample)
# and `make test` (lint + the test suite). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,onnx]'
	touch $(STAMP)

# The main job: train the language model with the defaults (180 s of training on the bundled tiny
# Shakespeare; --force replaces an earlier runs/shakespeare), then sample 500 characters from it.
run: $(STAMP)
	$(BIN)/scratchrnn train --out runs/shakespeare --force
	$(BIN)/scratchrnn sample --checkpoint runs/shakespeare/checkpoint.pt --length 500

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# The benchmark with its peers (JAX, oneDNN; the bench extra) into benchmarks/RESULTS.md.
bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/scratchrnn bench --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
