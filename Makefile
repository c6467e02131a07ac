# Engagement Export: the commands a developer runs. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 7071

.PHONY: setup lock lock-files serve demo test test-pure bench bench-ingest chaos infra-check app data clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Idempotent: each part re-installs only when its lock file changed. What is installed is what the suite passed
# with: requirements-dev.txt and requirements.txt are locks (exact versions, hashes), made by `make lock`.
setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: $(PY) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	touch $@

# Resolves requirements.in and requirements-dev.in anew (the newest versions their ranges allow, from PyPI alone,
# whatever local package folders this machine's pip is set up with), then runs the suite on them.
PIP_COMPILE := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(VENV)/bin/pip-compile --quiet --upgrade \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url
lock: lock-files test

lock-files: $(VENV)/.installed
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

serve: setup
	PORT=$(PORT) $(PY) -m devhost serve --port $(PORT)

demo: setup
	$(PY) -m tools.demo

test: setup
	$(PY) -m pytest

# The pure tests alone (monitor, rows, quick rows and records, plans, formats, settings, layout): no Azurite, seconds.
test-pure: setup
	$(PY) -m pytest -m pure

bench: setup
	$(PY) -m bench $(if $(RECORDS),--records $(RECORDS),) $(if $(DEVICES),--devices $(DEVICES),)

# The ingestion section alone: CLIENTS concurrent clients (16) for DURATION seconds (15) each, appends then Collect.
bench-ingest: setup
	$(PY) -m bench.ingest $(if $(CLIENTS),--clients $(CLIENTS),) $(if $(DURATION),--seconds $(DURATION),)

# The soak: two hosts, kills, an Azurite restart, throttling storage, for DURATION seconds (180). See tools/chaos.py.
chaos: setup
	$(PY) -m tools.chaos $(if $(DURATION),--seconds $(DURATION),)

# infra/ and azure.yaml, checked as far as this machine can (no Bicep CLI, no Azure): see tools/infracheck.py.
infra-check: setup
	$(PY) -m tools.infracheck

app: setup
	@test -n "$(COLLECTION)" -a -n "$(APP)" || { echo "usage: make app COLLECTION=<collection> APP=<app>"; exit 2; }
	$(PY) -m tools.admin register-app --collection "$(COLLECTION)" --app "$(APP)"

data: setup
	@test -n "$(APP)" || { echo "usage: make data APP=<app> [COLLECTION=demo] DAYS=<n> DEVICES=<n> [SEED=1]"; exit 2; }
	$(PY) -m tools.generate --app "$(APP)" --collection "$(or $(COLLECTION),demo)" --days "$(or $(DAYS),1)" \
		--devices "$(or $(DEVICES),1000)" --seed "$(or $(SEED),1)"

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache
