# Two commands for a fresh machine with Python 3.11+: `make run` and `make test`.
# Each creates .venv and installs the project from pyproject.toml when it changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast demo email-previews config-reference docs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,local]'
	@touch $(STAMP)

## Start the Procfile's seven processes: web, four workers, beat and Flower (embedded Redis when REDIS_URL is unset).
run: $(STAMP)
	$(BIN)/python -m devkit.run

## The whole suite: unit tests, then real Redis + real celery worker + the Salla sandbox.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal

## Unit tests only (seconds).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow"

## See the product work: the sandbox, signed webhooks, and the reminders that come out.
demo: $(STAMP)
	$(BIN)/python -m devkit.demo

## The Arabic and English reminder e-mails rendered by headless Chromium into docs/ (docs/templates.md shows them).
email-previews: $(STAMP)
	$(BIN)/python -m devkit.email_preview docs

## docs/configuration.md from the settings module (tests/unit/test_config_reference.py checks it is current).
config-reference: $(STAMP)
	$(BIN)/python -m service.config.reference docs/configuration.md

## The docs site into site/ (mkdocs-material; --strict: a broken link or anchor fails, as in the tests).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) var site .pytest_cache .hypothesis *.egg-info
