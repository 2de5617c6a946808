# The two Quick start commands live here so that README, CI and users run exactly the same thing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)
GPUS ?= 1

.PHONY: demo study test browser lint plan clean

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

STUDY_CONFIG := config/study.yaml
STUDY_RESULTS := results/study
STUDY := --configfile $(STUDY_CONFIG)
STUDY_LOG := $(STUDY_RESULTS)/snakemake.log

## study: set up .venv and run the pre-registered CPU study of the paper's claim (config/study.yaml; about an
## hour on 2 cores): progress on screen, Snakemake's output in results/study/snakemake.log, the verdict last
study: $(BIN)/snakemake
	@mkdir -p $(STUDY_RESULTS)
	@echo "make study: Snakemake's job output goes to $(STUDY_LOG)"
	@$(RUN) bash -o pipefail -c '$(BIN)/snakemake study $(STUDY) --cores $(CORES) 2>&1 | tee $(STUDY_LOG) \
		| $(BIN)/python -m fullspectrum.summary --follow' \
		|| (echo "make study failed: the end of $(STUDY_LOG):"; tail -n 25 $(STUDY_LOG); exit 1)
	@$(RUN) $(BIN)/snakemake study $(STUDY) --report $(STUDY_RESULTS)/report.html >> $(STUDY_LOG) 2>&1
	@echo "$(STUDY_RESULTS)/study.md: the verdict table, Figures 1-2's claim, the curves, every seed;" \
		"report: $(STUDY_RESULTS)/report.html"
	@$(BIN)/python -m fullspectrum.analysis.study $(STUDY_RESULTS)/study.csv

## test: set up .venv (and, as root on Debian/Ubuntu, Chromium for the report's browser test) and run the test suite
test: $(BIN)/snakemake browser
	$(RUN) $(BIN)/python -m pytest -q

## browser: Debian's Chromium, which the report's headless-browser test drives through Playwright (installed by
## apt-get when run as root; otherwise it says how, and that test skips outside CI)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make: installing Chromium for the report's browser test (apt-get install chromium)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "make: no Chromium; the report's browser test will skip (install: sudo apt-get install chromium)"; \
		fi; }

## lint: Snakemake's linter on the paper grid, the embedded default and the study
lint: $(BIN)/snakemake
	$(RUN) $(BIN)/snakemake --lint
	$(RUN) $(BIN)/snakemake --lint $(EMBEDDED)
	$(RUN) $(BIN)/snakemake --lint $(STUDY)

## plan: what the paper grid (config.yaml) costs on $(GPUS) GPUs: jobs, trainings, epochs, GPU-hours, wall-clock
plan: $(BIN)/snakemake
	$(BIN)/python -m fullspectrum.plan --configfile config.yaml --gpus $(GPUS)

## clean: remove everything the workflow wrote (not the .venv)
clean:
	rm -rf results .snakemake report.html
