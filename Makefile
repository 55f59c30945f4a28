# The targets a newcomer guesses. `make test` and `make run` install first when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA ?= demo/data
DEMO_RUN ?= demo/run

.PHONY: install test run lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[service,train,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

run: $(STAMP)
	$(BIN)/labelclean demo --data $(DEMO_DATA) --run $(DEMO_RUN)

bench: $(STAMP)
	$(BIN)/labelclean demo-data --out benchmarks/out/data
	$(BIN)/labelclean benchmark --data benchmarks/out/data --out benchmarks/out/bench --seeds 0,1

clean:
	rm -rf $(VENV) demo benchmarks/out
