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

.PHONY: setup lock browser demo release report test test-fast lint pull checkout docs

# constraints.txt pins every package to the version the demo's table was measured with (`make lock` rewrites it from
# the venv): a newer transformers, numpy or soxr may move the fourth decimal. torch is pinned by TORCH above.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | sed '/^WARNING: Location/d'
	$(BIN)/python -m pip install -q $(TORCH) 2>&1 | sed '/^WARNING: Location/d'
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,docs,lint]' 2>&1 | sed '/^WARNING: Location/d'
	$(BIN)/python -c "import torch, transformers, peft, snakemake, dvc, asrflow"
	touch $@

# n-gram LM decoding: KenLM's lmplz/build_binary compiled from PyPI's kenlm sources (apt build deps), the kenlm
# module, and pyctcdecode without its numpy<2 pin. About 5 minutes on 2 cores the first time; skipped when present.
$(VENV)/.kenlm: scripts/install_kenlm.sh $(VENV)/.installed
	bash scripts/install_kenlm.sh $(VENV)
	touch $@

setup: $(VENV)/.installed $(VENV)/.kenlm

# After a deliberate upgrade (then re-measure the demo's table): the venv's versions, less what is not from PyPI.
lock: $(VENV)/.installed
	$(BIN)/python -m pip freeze --exclude-editable | grep -v ' @ ' | grep -Ev '^(torch|asrflow)==' > constraints.txt

# The tests open the HTML report in a real headless browser: Debian's chromium (apt; nothing when it is there).
browser:
	bash scripts/install_chromium.sh

demo: setup
	snakemake --cores $(CORES) --printshellcmds --show-failed-logs results/summary.csv

# After the demo's cross-validation: the best method refitted on every speaker (results/release, see docs/release.md).
release: setup
	snakemake --cores $(CORES) --printshellcmds --show-failed-logs results/release

# One page to look at (docs/report.md): the results it shows, then Snakemake's HTML report of them, which opens
# offline in any browser. `snakemake --report` reports the targets it is given, and every one must have been made.
REPORT_TARGETS ?= results/summary.csv results/data_report.md results/training_curves.png results/suspects.html
report: setup
	snakemake --cores $(CORES) --printshellcmds --show-failed-logs $(REPORT_TARGETS)
	snakemake --report results/report.html $(REPORT_TARGETS)

# Two workers, a test file each (module fixtures are shared within a file): about half the time on 2 cores. The
# longest files go first (tests/conftest.py, LONGEST_FILES), in that order.
test: setup browser
	pytest -q -ra -n $(CORES) --dist loadfile --no-loadscope-reorder

# The inner loop (under 3 minutes): every test but the end-to-end engine runs, the SLURM cluster and the slow layout
# runs (`-m slow`); `make test` runs them all, as CI does.
test-fast: setup browser
	pytest -q -ra -m "not slow and not slurm"

# Data, models and results from the DVC remote (or, after `git checkout`, the local cache), then Snakemake's view of
# them aligned, so that neither engine recomputes anything (see scripts/pull.sh and docs/engines.md).
pull: setup
	bash scripts/pull.sh pull

checkout: setup
	bash scripts/pull.sh checkout

# The documentation site in site/ (open site/index.html): docs/*.md, the parameters reference generated from the
# params schema, CONTRIBUTING.md. --strict: a broken link, anchor or nav entry fails the build.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict   # without mkdocs-material's end-of-life banner

# ruff (lint and format) on the Python, snakefmt and `snakemake --lint` on the workflow, dvc.yaml as the stage table
# writes it. `ruff format .` and `snakefmt .` fix what the checks find.
lint: $(VENV)/.installed
	ruff check .
	ruff format --check .
	snakefmt --check .
	snakemake --lint
	asrflow dvc-yaml --check
