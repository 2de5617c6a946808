# The two Quick start commands live here so that README, CI and users run exactly the same thing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)
GPUS ?= 1

.PHONY: demo test lint plan clean

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

EMBEDDED := --configfile config/embedded.yaml
REPORT := results/embedded/report.html
# The rules' shell commands find the project's python first, as in an activated venv.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

## demo: set up .venv and run the embedded default (digits, tiny ResNets) end to end on the CPU
demo: $(BIN)/snakemake
	$(RUN) $(BIN)/snakemake all $(EMBEDDED) --cores $(CORES)
	$(RUN) $(BIN)/snakemake all $(EMBEDDED) --report $(REPORT)
	$(BIN)/python -m fullspectrum.summary $(EMBEDDED) --report $(REPORT)

## test: set up .venv and run the test suite
test: $(BIN)/snakemake
	$(RUN) $(BIN)/python -m pytest -q

## lint: Snakemake's linter on the paper grid and the embedded default
lint: $(BIN)/snakemake
	$(RUN) $(BIN)/snakemake --lint
	$(RUN) $(BIN)/snakemake --lint $(EMBEDDED)

## plan: what the paper grid (config.yaml) costs on $(GPUS) GPUs: jobs, trainings, epochs, GPU-hours, wall-clock
plan: $(BIN)/snakemake
	$(BIN)/python -m fullspectrum.plan --configfile config.yaml --gpus $(GPUS)

## clean: remove everything the workflow wrote (not the .venv)
clean:
	rm -rf results .snakemake report.html
