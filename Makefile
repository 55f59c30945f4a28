# The targets a newcomer guesses. `make test` and `make run` set everything up first when needed:
# the system packages (`make deps`: redis-server, Fashion-MNIST) and the virtual environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA ?= demo/data
DEMO_RUN ?= demo/run

# Label Studio for tests/service/review/label_studio, in its own environment (its dependencies
# conflict with ours), outside the repository: built once per version, from pip's cache after
# the first time.
LABEL_STUDIO_VERSION := 1.23.2
LS_VENV ?= $(HOME)/.cache/labelclean/label-studio-$(LABEL_STUDIO_VERSION)
LABEL_STUDIO := $(LS_VENV)/bin/label-studio

.PHONY: deps install test run lint bench clean label-studio

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[service,train,dev]'
	touch $(STAMP)

# System packages: apt-get installs what is missing when run as root, else it names the command.
deps:
	@scripts/system-deps

install: $(STAMP)

$(LABEL_STUDIO):
	$(PY) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)

label-studio: $(LABEL_STUDIO)

test: deps $(STAMP) $(LABEL_STUDIO)
	TEST_LABEL_STUDIO=$(LABEL_STUDIO) $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# `make run`: the service on the demo bundle, built first when missing (data, then training).
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_BUNDLE := $(DEMO_RUN)/bundle

$(DEMO_BUNDLE)/bundle.json: | deps $(STAMP)
	test -f $(DEMO_DATA)/class-descriptions.csv || $(BIN)/labelclean demo-data --out $(DEMO_DATA)
	$(BIN)/labelclean train --data $(DEMO_DATA) --out $(DEMO_RUN)

run: deps $(STAMP) $(DEMO_BUNDLE)/bundle.json
	@img=$$(ls $(DEMO_DATA)/images | head -n 1); url=http://$(HOST):$(PORT); \
	echo; echo "Serving $(DEMO_BUNDLE) on $$url (Ctrl-C stops). In another shell:"; \
	echo "  curl -s -F image=@$(DEMO_DATA)/images/$$img $$url/classify"; \
	echo "  curl -s -F image=@$(DEMO_DATA)/images/$$img -F 'labels=[\"/lc/shirt\",\"/lc/tops\"]' $$url/clean"; \
	echo "  curl -s $$url/model    # classes, thresholds, provider"; echo
	$(BIN)/labelclean serve --model $(DEMO_BUNDLE) --host $(HOST) --port $(PORT)

bench: deps $(STAMP)
	$(BIN)/labelclean demo-data --out benchmarks/out/data
	$(BIN)/labelclean benchmark --data benchmarks/out/data --out benchmarks/out/bench --seeds 0,1

clean:
	rm -rf $(VENV) demo benchmarks/out
