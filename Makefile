# Two commands do everything: `make run` (the workbench on data_samples/) and `make test` (the whole suite).
# `make test-fast`: lint and every test not marked slow (no notebooks, browser, workflow runs, kill/resume, torchrun),
# on two processes (pytest-xdist; the tests run torch on one thread each). `make test` runs everything on two
# processes too, each test file whole in one of them (--dist loadfile: module fixtures and the notebooks' write
# budget stay in one process).
# Both create .venv on first use and reinstall only when requirements.txt or pyproject.toml change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lab install browser lint format bench clean

run: $(STAMP)
	$(BIN)/streamlit run app/main.py

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow" -n 2

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

install: $(STAMP)

# The browser test drives Debian's chromium; install it when missing and possible (root with apt), else it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "make: no chromium (needs root and apt-get): the browser test will be skipped"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/data_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
