# The two newcomer commands: `make demo` (set up, then run the demo to results/summary.csv) and `make test`.
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
# The CPU wheel that lies on this machine's disk. Install torch first so no dependency pulls a multi-GB CUDA build;
# on a GPU machine set TORCH to the CUDA build you want, e.g. `make demo TORCH="torch==2.13.0 --index-url ..."`.
TORCH ?= torch==2.13.0
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
SHELL := bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: setup demo release test pull checkout

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | sed '/^WARNING: Location/d'
	$(BIN)/python -m pip install -q $(TORCH) 2>&1 | sed '/^WARNING: Location/d'
	$(BIN)/python -m pip install -q -e '.[test]' 2>&1 | sed '/^WARNING: Location/d'
	$(BIN)/python -c "import torch, transformers, peft, snakemake, dvc, asrflow"
	touch $@

# n-gram LM decoding: KenLM's lmplz/build_binary compiled from PyPI's kenlm sources (apt build deps), the kenlm
# module, and pyctcdecode without its numpy<2 pin. About 5 minutes on 2 cores the first time; skipped when present.
$(VENV)/.kenlm: scripts/install_kenlm.sh $(VENV)/.installed
	bash scripts/install_kenlm.sh $(VENV)
	touch $@

setup: $(VENV)/.installed $(VENV)/.kenlm

demo: setup
	snakemake --cores $(CORES) --printshellcmds --show-failed-logs results/summary.csv

# After the demo's cross-validation: the best method refitted on every speaker (results/release, see the README).
release: setup
	snakemake --cores $(CORES) --printshellcmds --show-failed-logs results/release

test: setup
	pytest -q -ra

# Data, models and results from the DVC remote (or, after `git checkout`, the local cache), then Snakemake's view of
# them aligned, so that neither engine recomputes anything (see scripts/pull.sh and the README).
pull: setup
	bash scripts/pull.sh pull

checkout: setup
	bash scripts/pull.sh checkout
