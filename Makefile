# The README's two commands: `make run` and `make test`. Both bootstrap the machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test unit bench clean

setup:
	@./scripts/setup.sh

# The main job: the embedded seed lab in a hermetic sandbox, then its status.
run: setup
	$(VENV)/bin/bridgelab up
	$(VENV)/bin/bridgelab status

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -ra tests/unit

bench: setup
	$(PY) bench/build_teardown.py

clean:
	-$(VENV)/bin/bridgelab down
	rm -rf $(VENV)
