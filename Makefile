# hamdex: `make serve` runs the demo service, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test lint format eval container-test clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,milvus,ray,sentence]'
	# the client generator of tests/test_openapi_tools.py, without its dependencies: it asks typer<0.28, for its
	# own command line only (the test calls it as a library), and the hamdex CLI runs on typer 0.29
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt openapi-python-client ruamel.yaml
	touch $(STAMP)

install: $(STAMP)

## The service on the 20 Newsgroups demo model and collection (built under var/ when missing).
serve: $(STAMP)
	$(BIN)/hamdex serve --demo --model var/model --collection var/collection --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## precision@100 of the demo model beside LSH and ITQ on the 20 Newsgroups test split.
eval: $(STAMP)
	$(BIN)/hamdex eval --model var/model --database demo:train --queries demo:test --json var/eval.json

## Builds the Dockerfile with podman and checks the image end to end (root; installs podman when missing).
container-test: $(STAMP)
	VENV_BIN=$(BIN) scripts/container_test.sh

clean:
	rm -rf var/ $(VENV) *.egg-info
