# Two commands on a fresh machine: `make repro` and `make test` (both run `make setup` first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stages run `python ...`: put the venv first on PATH so dvc finds the right interpreter.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: setup repro test export bench-exp bench-zoo sweep sweep-quick clean-venv

setup: $(STAMP)

# Re-installs only when the pins change; otherwise `make setup` is a no-op.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required: run make with PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

repro: setup
	$(RUN) dvc repro

test: setup
	$(RUN) python -m pytest

# On demand, verified: the whole fine-tuned model and the merged one (a plain RichBoyNet) that models/lora stands for.
# Experiments store only the adapter; these are 11 MB each. Needs `make repro` (or `dvc pull`) first.
export: setup
	PYTHONPATH=src $(RUN) python -m lora_mnist.export models/pretrained.safetensors models/lora models/snapshot.json exports

# One new / revisited / queued DVC experiment vs the seed's cells in a warm process (bench/README.md).
bench-exp: setup
	$(RUN) python bench/experiments.py

# Swapping a zoo adapter into a live model vs loading a full fine-tuned checkpoint (needs `make repro` first).
bench-zoo: setup
	$(RUN) python bench/zoo_switch.py

# Ranks 1, 4, 16 x replay 0 / 0.1 over 3 x 5 seeds, as DVC experiments; writes experiments/sweep.csv,
# sweep_runs.csv and sweep.png. Needs `make repro` first. Here: DVC's queue, one worker per core. With
# SCHEDULER=tcp://host:8786: Dask tasks on that scheduler's workers, each in its own clone (docs/scale.md).
SCHEDULER ?=
sweep: setup
	$(RUN) python experiments/sweep.py $(if $(SCHEDULER),--scheduler $(SCHEDULER))

sweep-quick: setup
	$(RUN) python experiments/sweep.py --quick $(if $(SCHEDULER),--scheduler $(SCHEDULER))

clean-venv:
	rm -rf $(VENV)
