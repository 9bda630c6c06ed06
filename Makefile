# fxchat: `make serve` runs the server, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
INSTALLED = $(VENV)/.installed

.PHONY: install serve migrate test lint format fuzz bench bench-report clean

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[testing]"
	touch $@

install: $(INSTALLED)

migrate: install
	$(BIN)/alembic -c development.ini upgrade head

serve: migrate
	$(BIN)/pserve development.ini

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Schemathesis against a live server on a fresh database (sqlite or postgresql).
FUZZ_EXAMPLES ?= 200
FUZZ_DATABASE ?= sqlite
fuzz: install
	$(BIN)/python -m tests.fuzz.run_schemathesis --examples $(FUZZ_EXAMPLES) --database $(FUZZ_DATABASE)

lint: install
	$(BIN)/ruff check fxchat tests migrations bench
	$(BIN)/ruff format --check fxchat tests migrations bench

format: install
	$(BIN)/ruff format fxchat tests migrations bench
	$(BIN)/ruff check --fix fxchat tests migrations bench

# Benchmarks (docs/performance.rst): wrk and the bench's Python packages first.
BENCH_INSTALLED = $(VENV)/.bench-installed

$(BENCH_INSTALLED): $(INSTALLED) bench/requirements.txt bench/setup.sh
	bash bench/setup.sh $(BIN)/pip
	touch $@

bench: $(BENCH_INSTALLED)
	$(BIN)/python -m bench run

bench-report: $(BENCH_INSTALLED)
	$(BIN)/python -m bench report

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .ruff_cache fxchat.sqlite*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
