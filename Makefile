# The README's two commands: `make run` and `make test`. Both bootstrap the machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test unit bench clean install

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

# Host mode as a service: the unit, an environment file and (if absent) a topology to edit.
install: setup
	sed 's|@PREFIX@|$(CURDIR)|g' systemd/bridgelab.service.in > /etc/systemd/system/bridgelab.service
	install -d -m 0755 /etc/bridgelab
	[ -e /etc/bridgelab/topology.yaml ] || install -m 0644 examples/seed.yaml /etc/bridgelab/topology.yaml
	[ -e /etc/bridgelab/bridgelab.env ] || install -m 0644 systemd/bridgelab.env /etc/bridgelab/bridgelab.env
	install -D -m 0644 orchestrator/data/rt_protos.d/bridgelab.conf /etc/iproute2/rt_protos.d/bridgelab.conf
	systemctl daemon-reload
	@echo "edit /etc/bridgelab/topology.yaml (uplink!), then: systemctl enable --now bridgelab"
