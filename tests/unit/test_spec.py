"""Spec validation: every bad input gets an error naming the field and the fix; never a traceback."""

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.lab import desired as plan
from orchestrator.lab import spec
from orchestrator.lab.spec import SpecError

SEED = yaml.safe_load(open("examples/seed.yaml"))


def mutate(fn):
    d = copy.deepcopy(SEED)
    fn(d)
    return d


def setp(path, value):
    def f(d):
        cur = d
        for k in path[:-1]:
            cur = cur[k]
        cur[path[-1]] = value
    return f


def delp(path):
    def f(d):
        cur = d
        for k in path[:-1]:
            cur = cur[k]
        del cur[path[-1]]
    return f


def dup_container(d):
    d["containers"].append(copy.deepcopy(d["containers"][0]) | {"address": "172.168.1.20", "host_interface": "veth9"})


def dup_port(d):
    d["ports"].append({"host_port": 8888, "to": "container2:80"})


BAD = [
    # (id, mutation, field, words in the message)
    ("top-not-mapping", lambda d: d.clear() or d.update({"x": 1}), "x", "unknown key"),
    ("typo-top", setp(["contaners"], []), "contaners", "did you mean 'containers'"),
    ("missing-lab", delp(["lab"]), "lab", "missing"),
    ("bad-lab-name", setp(["lab"], "Seed Lab!"), "lab", "not a valid lab name"),
    ("subnet-not-cidr", setp(["bridge", "subnet"], "172.168.1.0/33"), "bridge.subnet", "not an IPv4 network"),
    ("subnet-host-bits", setp(["bridge", "subnet"], "172.168.1.5/24"), "bridge.subnet", "172.168.1.0/24"),
    ("subnet-garbage", setp(["bridge", "subnet"], "banana"), "bridge.subnet", "not an IPv4 network"),
    ("gateway-outside", setp(["bridge", "gateway"], "10.0.0.1"), "bridge.gateway", "outside bridge.subnet"),
    ("gateway-broadcast", setp(["bridge", "gateway"], "172.168.1.255"), "bridge.gateway", "broadcast"),
    ("container-outside", setp(["containers", 0, "address"], "172.168.2.11"), "containers[0].address", "outside bridge.subnet"),
    ("container-is-gateway", setp(["containers", 1, "address"], "172.168.1.1"), "containers[1].address", "gateway address"),
    ("container-same-address", setp(["containers", 1, "address"], "172.168.1.11"), "containers[1].address", "already used"),
    ("container-bad-address", setp(["containers", 0, "address"], "172.168.1.300"), "containers[0].address", "not an IPv4 address"),
    ("duplicate-name", dup_container, "containers[2].name", "duplicate container name"),
    ("reserved-name", setp(["containers", 0, "name"], "gateway"), "containers[0].name", "reserved"),
    ("ifname-too-long", setp(["containers", 0, "host_interface"], "veth-container-1"), "containers[0].host_interface", "15"),
    ("ifname-too-long-inside", setp(["containers", 1, "interface"], "a-very-long-name0"), "containers[1].interface", "bytes"),
    ("ifname-slash", setp(["containers", 0, "interface"], "eth/1"), "containers[0].interface", "not a usable interface name"),
    ("host-if-is-bridge", setp(["containers", 0, "host_interface"], "br0"), "containers[0].host_interface", "already used by bridge.name"),
    ("host-if-dup", setp(["containers", 1, "host_interface"], "veth1"), "containers[1].host_interface", "already used"),
    ("typo-container-key", lambda d: d["containers"][0].update({"adress": "x"}), "containers[0].adress", "did you mean 'address'"),
    ("duplicate-host-port", dup_port, "ports[2].host_port", "already published"),
    ("port-unknown-container", setp(["ports", 0, "to"], "container9:80"), "ports[0].to", "no container named 'container9'"),
    ("port-out-of-range", setp(["ports", 0, "host_port"], 70000), "ports[0].host_port", "not a port number"),
    ("port-bad-to", setp(["ports", 0, "to"], "container1"), "ports[0].to", "CONTAINER:PORT"),
    ("port-bad-proto", setp(["ports", 0, "protocol"], "sctp"), "ports[0].protocol", "tcp or udp"),
    ("uplink-no-prefix", setp(["uplink", "address"], "192.168.0.10"), "uplink.address", "prefix length"),
    ("uplink-overlaps-lab", setp(["uplink", "address"], "172.168.1.200/16"), "uplink.address", "overlaps"),
    ("uplink-gw-outside", setp(["uplink", "gateway"], "10.1.1.1"), "uplink.gateway", "outside the uplink network"),
    ("service-unknown-kind", setp(["containers", 0, "services"], [{"kind": "ftp"}]), "containers[0].services[0].kind", "unknown service kind"),
    ("service-bad-port", setp(["containers", 0, "services"], [{"kind": "http", "port": 0}]), "containers[0].services[0].port", "not a port"),
    ("containers-not-list", setp(["containers"], {"name": "a"}), "containers", "expected a list"),
    ("sandbox-client-off-lan", setp(["sandbox", "client"], "10.9.9.9/24"), "sandbox.client", "not on the uplink network"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_spec_names_field_and_fix(case):
    _, fn, field, words = case
    with pytest.raises(SpecError) as ei:
        spec.validate(mutate(fn), "lab.yaml")
    problems = ei.value.problems
    hit = [p for p in problems if p[0] == field]
    assert hit, f"no problem reported for {field}: {problems}"
    fld, msg, fix = hit[0]
    assert words in msg + fix, (msg, fix)
    assert fix, "every problem says how to fix it"
    text = ei.value.render()
    assert text.startswith("lab.yaml: ") and f"lab.yaml: {field}: " in text


def test_yaml_syntax_error_names_line():
    with pytest.raises(SpecError) as ei:
        spec.parse("lab: a\nbridge: [\n", "x.yaml")
    assert ei.value.problems[0][0].startswith("line ")


def test_all_problems_reported_at_once():
    d = mutate(setp(["lab"], "BAD"))
    d["containers"][0]["address"] = "9.9.9.9"
    d["ports"][0]["protocol"] = "sctp"
    with pytest.raises(SpecError) as ei:
        spec.validate(d, "f.yaml")
    assert {p[0] for p in ei.value.problems} >= {"lab", "containers[0].address", "ports[0].protocol"}


def test_seed_is_valid_and_warns_about_public_space():
    s = spec.load("examples/seed.yaml")
    assert s.lab == "seed" and [c.name for c in s.containers] == ["container1", "container2"]
    assert str(s.networks[0].subnet) == "172.168.1.0/24" and str(s.networks[0].gateway) == "172.168.1.1"
    assert [(p.host_port, p.container, p.container_port) for p in s.ports] == [(8888, "container1", 80), (9999, "container2", 80)]
    assert any("not private address space" in w for w in s.warnings)
    assert spec.load(None) == s.__class__(**{**s.__dict__, "source": "<embedded seed.yaml>"})


def test_private_subnet_does_not_warn():
    d = mutate(setp(["bridge", "subnet"], "172.18.0.0/16"))
    d["bridge"]["gateway"] = "172.18.0.1"
    for i, c in enumerate(d["containers"]):
        c["address"] = f"172.18.0.{11 + i}"
    assert spec.validate(d, "x").warnings == ()


# ---------------------------------------------------------------- property: never a traceback

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=20),
                    st.sampled_from(["172.168.1.11", "172.168.1.0/24", "10.0.0.1/8", "br0", "veth1",
                                     "container1:80", "tcp", "udp", "http", "x" * 16]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def perturbed(draw):
    d = copy.deepcopy(SEED)
    for _ in range(draw(st.integers(1, 4))):
        paths = [["lab"], ["bridge", "subnet"], ["bridge", "gateway"], ["bridge", "name"], ["uplink", "address"],
                 ["uplink", "gateway"], ["uplink", "name"], ["containers"], ["containers", 0, "address"],
                 ["containers", 0, "name"], ["containers", 1, "host_interface"], ["ports"], ["ports", 0, "to"],
                 ["ports", 1, "host_port"], ["sandbox", "client"], ["containers", 0, "services"]]
        path = draw(st.sampled_from(paths))
        try:
            setp(path, draw(values))(d)
        except (KeyError, IndexError, TypeError):
            pass
    return d


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(perturbed())
def test_random_specs_validate_or_fail_cleanly(d):
    try:
        s = spec.validate(d, "fuzz.yaml")
    except SpecError as e:
        assert e.problems and all(isinstance(p[0], str) and p[1] for p in e.problems)
        return
    # a valid spec always plans (pure) without errors, in both modes
    for mode in (plan.SANDBOX, plan.HOST):
        desired = plan.desired(s, mode)
        assert desired.lab == s.lab
