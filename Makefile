# paysync: every target sets up what it needs (Python 3.11+ and the package registries).
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
PORT ?= 3000
SIZE ?= M
export SAM_CLI_TELEMETRY := 0

.PHONY: install run test bench lint format build validate clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements-cli.txt layers/paysync/requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "paysync needs Python 3.11+; set PYTHON=python3.12 (for example)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

# aws-sam-cli pins boto3/click/pydantic, so it gets a virtualenv of its own.
$(SAM_VENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet -r requirements-sam.txt
	@touch $@

## run: the whole stack on 127.0.0.1:$(PORT) (embedded PostgreSQL unless DATABASE_URL is set)
run: install
	@$(PY) -m devserver --port $(PORT)

## test: lint, the test suite (real PostgreSQL, moto S3) and `sam validate --lint`
test: install $(SAM_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest
	$(SAM) validate --lint --region us-east-1

## bench: generate SIZE=S|M|L snapshots and measure sync and read performance
bench: install
	$(PY) -m bench.run --size $(SIZE)

lint: install $(SAM_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(SAM) validate --lint --region us-east-1

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint --region us-east-1

## build: `sam build` needs python3.12 on PATH (no Docker needed)
build: $(SAM_VENV)/.installed
	@command -v python3.12 >/dev/null || { echo "sam build needs python3.12 on PATH (the Lambda runtime)"; exit 1; }
	$(SAM) build

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache
