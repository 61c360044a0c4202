# Funduscope: `make run` starts the whole app on this machine, `make test` runs the full test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)

# Offline defaults: weights, demo data and the feature store come from settings (environment).
export FUNDUS_WEIGHTS_DIR ?= $(SHARED)/weights
export FUNDUS_DEMO_DIR ?= $(if $(wildcard $(SHARED)/datasets/fundus),$(SHARED)/datasets/fundus,)
export FUNDUS_SHARED_DIR ?= $(SHARED)
export PYTHONUNBUFFERED := 1

.PHONY: run test test-fast venv migrate bootstrap web worker lint typecheck format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(BIN)/python manage.py migrate --noinput

bootstrap: migrate
	$(BIN)/python manage.py bootstrap

run: bootstrap
	bin/run-dev

web: venv
	$(BIN)/python manage.py runserver 127.0.0.1:8000

worker: venv
	$(BIN)/celery -A grading worker -Q ml --pool solo --concurrency 1 -n ml@%h -l info

# Tests use their own Redis database so a running dev worker never picks up their tasks.
test: venv
	REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/15} $(BIN)/pytest

# Everything but the browser tests, the tests that start a real Celery worker and the few marked
# slow (the whole shared dataset, cross-validation): the loop while editing. CI runs all.
test-fast: venv
	REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/15} $(BIN)/pytest -m "not browser and not worker and not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# mypy reads `strict` only globally, so mlcore's strictness is checked by a second run as well.
typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy --strict --no-warn-unused-configs mlcore

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
