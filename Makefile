# The two Quick start commands live here so that README, CI and users run exactly the same thing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: demo test lint clean

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## demo: set up .venv and run the embedded default (digits, tiny ResNets) end to end on the CPU
demo: $(BIN)/snakemake
	$(BIN)/snakemake --profile profiles/default --configfile config/embedded.yaml --cores $(CORES) all report_html
	$(BIN)/python -m fullspectrum.summary --config config/embedded.yaml

## test: set up .venv and run the test suite
test: $(BIN)/snakemake
	$(BIN)/python -m pytest -q

## lint: Snakemake's linter on the paper grid and the embedded default
lint: $(BIN)/snakemake
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/embedded.yaml

clean:
	rm -rf results .snakemake report.html
