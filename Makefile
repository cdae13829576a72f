# The README's two commands: `make run` and `make test`. Both bootstrap the machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test unit bench clean

setup:
	@./scripts/setup.sh

# The main job: the daemon on the embedded seed lab, in a hermetic sandbox. Ctrl-C stops the
# daemon and leaves the lab up (`.venv/bin/bridgelab down` removes it).
run: setup
	$(VENV)/bin/bridgelab run

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -ra tests/unit

bench: setup
	$(PY) bench/build_teardown.py
	$(PY) bench/heal_latency.py

clean:
	-$(VENV)/bin/bridgelab down
	rm -rf $(VENV)
