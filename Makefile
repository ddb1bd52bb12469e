# paysync: every target sets up what it needs (Python 3.11+ and the package registries).
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
CHECKOV_VENV := .venv-checkov
PORT ?= 3000
# The local S3 endpoint's port: fixed, so that env.local.json (sam local invoke) can name it.
S3_PORT ?= 4566
SIZE ?= M
export SAM_CLI_TELEMETRY := 0

.PHONY: install run test bench lint format build smoke invoke lock validate clean python312

# The Lambda runtime's interpreter: python3.12 from PATH, else pyenv's 3.12 (a pyenv shim that
# cannot run it does not count). Used by build, smoke, invoke and lock.
PY312_DIR = $(shell python3.12 -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null \
	|| ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.12.*/bin 2>/dev/null | tail -n 1)
PY312 = $(PY312_DIR)/python3.12
SMOKE_VENV := .venv-smoke
LOCK_VENV := .venv-lock
FN ?= GetPatientsFunction
EVENT ?= events/get_patients.json

install: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements-cli.txt layers/paysync/requirements.txt layers/migrations/requirements.txt pyproject.toml
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

# checkov pins many libraries of its own too: a third virtualenv.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	@touch $@

## run: the whole stack on 127.0.0.1:$(PORT), S3 on $(S3_PORT) (embedded PostgreSQL unless DATABASE_URL is set)
run: install
	@$(PY) -m devserver --port $(PORT) --s3-port $(S3_PORT)

## test: lint, the test suite (real PostgreSQL, moto S3), `sam validate --lint` and checkov (.checkov.yaml)
test: install $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest
	$(SAM) validate --lint --region us-east-1
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml

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

## build: `sam build` for the Lambda runtime (python3.12, no Docker): .aws-sam/build, bytecode compiled
build: python312 $(SAM_VENV)/.installed
	PATH="$(PY312_DIR):$$PATH" $(SAM) build
	@# The functions' own code (the layers compile theirs in layers/*/Makefile).
	$(PY312) -m compileall -q --invalidation-mode unchecked-hash .aws-sam/build/*Function

python312:
	@test -n "$(PY312_DIR)" && test -x "$(PY312)" || { \
	  echo "sam build needs python3.12 (the Lambda runtime) on PATH or in pyenv:"; \
	  echo "  pyenv install 3.12 (make then finds it), or put a python3.12 on PATH (PATH=/path/to/3.12/bin:\$$PATH)"; \
	  exit 1; }

$(SMOKE_VENV)/.installed: smoke/requirements.txt smoke/lambda-runtime.lock | python312
	$(PY312) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/pip install --quiet -r smoke/requirements.txt
	rm -rf $(SMOKE_VENV)/lambda-runtime
	$(SMOKE_VENV)/bin/pip install --quiet --no-deps --require-hashes --target $(SMOKE_VENV)/lambda-runtime \
		-r smoke/lambda-runtime.lock
	@touch $@

## smoke: build, then run every function from .aws-sam/build only (python3.12) with each of its events
smoke: build $(SMOKE_VENV)/.installed
	$(SMOKE_VENV)/bin/python -m smoke

## invoke: one function with one event: `sam local invoke` with Docker, else the smoke runner
# On Linux the container shares the host's network, where `make run` listens on 127.0.0.1.
DOCKER_HOST_FLAGS = $(if $(filter Linux,$(shell uname -s)),--docker-network host --add-host host.docker.internal:127.0.0.1)
invoke: build
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "sam local invoke $(FN) -e $(EVENT) --env-vars env.local.json"; \
	  AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-testing} \
	  AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	  $(SAM) local invoke $(FN) -e $(EVENT) --env-vars env.local.json $(DOCKER_HOST_FLAGS); \
	else \
	  echo "Docker is not available: running $(FN) from .aws-sam/build with the smoke runner"; \
	  $(MAKE) --no-print-directory $(SMOKE_VENV)/.installed && \
	  $(SMOKE_VENV)/bin/python -m smoke --function $(FN) --event $(EVENT); \
	fi

## lock: regenerate the layers' requirements.lock files (hashes) from their requirements.txt
lock: python312
	$(PY312) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet pip-tools==7.6.2
	cd layers/paysync && ../../$(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras \
		--unsafe-package boto3 --unsafe-package botocore --unsafe-package s3transfer --unsafe-package urllib3 \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock requirements.txt
	cd layers/migrations && ../../$(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock requirements.txt
	cd smoke && ../$(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file lambda-runtime.lock lambda-runtime.txt

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(SMOKE_VENV) $(LOCK_VENV) .aws-sam .pytest_cache
