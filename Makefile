# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lock clean

# The runtime set from the lock, every file checked against its hash (as Azure's remote build
# installs it); then the development tools, in a second pip run: pip checks hashes for every
# requirement of a run once any line has one, and the tools are not locked.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

demo: $(STAMP)
	$(BIN)/python -m devhost demo

bench: $(STAMP)
	$(BIN)/python -m bench

# Regenerates requirements.txt from requirements.in, keeping the locked versions that still fit;
# `make lock UPGRADE=--upgrade` takes the newest versions instead.
lock: $(STAMP)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links $(UPGRADE) \
		--output-file requirements.txt requirements.in

clean:
	rm -rf $(VENV)
