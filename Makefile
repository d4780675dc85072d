# Every target installs what it needs: a fresh clone needs nothing but Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLUSTER_STAMP := $(VENV)/.cluster-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: setup run smoke test test-ui bench lint ui clean gpu-kit gpu-check-cpu cluster-up cluster-down test-cluster mutate

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> 1/4 a virtual environment in $(VENV) (once: later targets reuse it)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> 2/4 pip"
	$(BIN)/python -m pip install --progress-bar on --upgrade pip
	@echo "==> 3/4 torch 2.13.0, the largest download (about a minute)"
	$(BIN)/python -m pip install --progress-bar on torch==2.13.0
	@echo "==> 4/4 ecopipe and its pinned stack (MLflow, transformers, scikit-learn, Hydra...)"
	$(BIN)/python -m pip install --progress-bar on -e ".[dev]"
	touch $(STAMP)
	@echo "==> set up; next: $(BIN)/python -m ecopipe --help, make smoke, make ui"

run: $(STAMP)  ## the default job, offline, into ./mlflow.db
	$(BIN)/python -m ecopipe

smoke: $(STAMP)  ## a quick check (under a minute): the default job with short windows, then its aggregation
	rm -rf .smoke && mkdir .smoke
	cd .smoke && ../$(BIN)/python -m ecopipe monitor=quick
	cd .smoke && ../$(BIN)/python -m ecopipe.aggregate --experiment ecopipe

test: $(STAMP)
	$(BIN)/python -m pytest

# The MLflow UI in a real headless browser: Debian's chromium (apt-get, as root, where it is missing) and
# playwright to drive it. Screenshots go to .ui-screenshots/ (git-ignored).
$(VENV)/.ui-installed: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python -m pip install --quiet -e ".[dev,ui]"
	touch $@

test-ui: $(VENV)/.ui-installed
	ECOPIPE_UI_TESTS=required ECOPIPE_UI_SCREENSHOTS=.ui-screenshots $(BIN)/python -m pytest -m ui tests/test_ui.py

$(VENV)/.bench-installed: $(STAMP)  ## CodeCarbon, for the comparison table only
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench

gpu-kit: $(STAMP)  ## wheels a bare GPU machine needs beyond its image, into .gpu-kit/ (needs the index)
	$(BIN)/python -m bench.gpu.kit

gpu-check-cpu: $(STAMP)  ## rehearse bench/gpu_check.sh on the CPU with a simulated GPU
	bash bench/gpu_check.sh --cpu bench/results/gpu-cpu

$(CLUSTER_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,cluster]"
	touch $(CLUSTER_STAMP)

cluster-up: $(CLUSTER_STAMP)  ## one-node SLURM, PostgreSQL, MLflow server (basic-auth) as root: cluster/up.sh
	bash cluster/up.sh

cluster-down:  ## stop what cluster-up started, by PID
	bash cluster/down.sh

test-cluster: $(CLUSTER_STAMP)  ## cluster-up, the cluster tests, cluster-down (also when a test fails)
	bash cluster/up.sh
	status=0; $(BIN)/python -m pytest -m cluster tests/test_cluster.py || status=$$?; \
	bash cluster/down.sh; exit $$status

# Mutation score of the formula modules ([tool.mutmut] in pyproject.toml) against their tests; resumes
# where it stopped. MUTANTS narrows it, e.g. make mutate MUTANTS='ecopipe.stages.impact*'.
MUTANTS ?=
mutate: $(STAMP)
	$(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results
	$(BIN)/mutmut export-cicd-stats
	$(BIN)/python -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); \
	dead = s["killed"] + s["timeout"]; \
	run = dead + sum(s[k] for k in ("survived", "suspicious", "no_tests", "segfault")); \
	total = s["total"]; print(f"mutation score: {dead}/{run} killed = {100 * dead / max(run, 1):.1f}%", \
	f"({total - run} of {total} mutants not run: MUTANTS narrowed the run, or it stopped)")'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Any SQLite store: make ui STORE=.smoke/mlflow.db
STORE ?= mlflow.db
ui: $(STAMP)  ## browse every run of a store (default ./mlflow.db)
	@test -f "$(STORE)" || { echo "make ui: no store at $(STORE) (make run writes ./mlflow.db; STORE=path picks another)"; exit 2; }
	@echo "MLflow UI of $(STORE): http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	@echo "  open an experiment, then 'Open the headline view' at the top of its description"
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$$(realpath "$(STORE)")" --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) outputs multirun/*/ mlflow.db mlartifacts .pytest_cache .smoke mutants
