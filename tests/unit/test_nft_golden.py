"""The rendered nftables table per configuration, compared exactly with a reviewed dump
(like moby's iptabler testdata). Regenerate after an intended change with UPDATE_GOLDEN=1."""

import copy
import os
import pathlib

import pytest
import yaml

from orchestrator.lab import spec
from orchestrator.lab.nft_table import render_table

GOLDEN = pathlib.Path(__file__).parent.parent / "golden"
SEED = yaml.safe_load(open("examples/seed.yaml"))


def variant_loopback_udp():
    d = copy.deepcopy(SEED)
    d.pop("expect")
    d["lab"] = "lo_udp"
    d["ports"] = [
        {"host_port": 8080, "to": "container1:80", "host_ip": "127.0.0.1"},
        {"host_port": 5353, "to": "container2:53", "protocol": "udp"},
        {"host_port": 8443, "to": "container2:443", "host_ip": "192.168.0.10"},
    ]
    return d


def variant_no_ports():
    d = copy.deepcopy(SEED)
    d.pop("expect")
    d["lab"] = "private"
    d["bridge"] = {"name": "docker0", "subnet": "172.18.0.0/16", "gateway": "172.18.0.1"}
    d["uplink"]["name"] = "enp1s0"
    d["containers"] = [{"name": "web", "address": "172.18.0.2", "host_interface": "vethweb"}]
    d["ports"] = []
    return d


def example(name):
    return lambda: yaml.safe_load(open(f"examples/{name}.yaml"))


def variant_dualstack_routed():
    d = yaml.safe_load(open("examples/seed-dualstack.yaml"))
    d["lab"] = "routed6"
    d["bridge"]["nat6"] = False
    d["ports"] = [{"host_port": 8080, "to": "container1:80", "host_ip": "::1"},
                  {"host_port": 5353, "to": "container2:53", "protocol": "udp"}]
    return d


CASES = {"seed": lambda: copy.deepcopy(SEED), "loopback_udp": variant_loopback_udp, "no_ports": variant_no_ports,
         "dualstack": example("seed-dualstack"), "dualstack_routed": variant_dualstack_routed,
         "multi_network": example("multi-network"), "routers": example("routers")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ruleset_matches_golden(name):
    text = render_table(spec.validate(CASES[name](), f"{name}.yaml"))
    path = GOLDEN / f"{name}.nft"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"ruleset for {name} changed; review and UPDATE_GOLDEN=1"
