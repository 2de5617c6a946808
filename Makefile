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

DEMO_LOG := results/embedded/snakemake.log

## demo: set up .venv and run the embedded default (digits, tiny ResNets) end to end on the CPU: progress on one
## line, Snakemake's job output in results/embedded/snakemake.log, the summary and the verdict table last
demo: $(BIN)/snakemake
	@mkdir -p $(dir $(DEMO_LOG))
	@echo "make demo: the embedded default on $(CORES) cores; Snakemake's job output goes to $(DEMO_LOG)"
	@$(RUN) bash -o pipefail -c '$(BIN)/snakemake all $(EMBEDDED) --cores $(CORES) 2>&1 | tee $(DEMO_LOG) \
		| $(BIN)/python -m fullspectrum.summary --follow' \
		|| (echo "make demo failed: the end of $(DEMO_LOG):"; tail -n 25 $(DEMO_LOG); exit 1)
	@$(RUN) $(BIN)/snakemake all $(EMBEDDED) --report $(REPORT) >> $(DEMO_LOG) 2>&1 \
		|| (echo "make demo: the report failed: the end of $(DEMO_LOG):"; tail -n 25 $(DEMO_LOG); exit 1)
	@$(BIN)/python -m fullspectrum.summary $(EMBEDDED) --report $(REPORT) --log $(DEMO_LOG)

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
