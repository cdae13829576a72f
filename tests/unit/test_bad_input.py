"""Bad input gets a clear error naming the field and the fix, and nothing else (issue #11): files
that are not UTF-8, YAML bombs, endless files, deep nesting, duplicate keys, names that pass
and then break nft or sysctl paths, argv that cannot be exec'd, ports that are not ports,
host_ip that is not the host's. Pure: no root, no kernel."""

import copy
import time

import pytest
import yaml

from orchestrator.lab import spec
from orchestrator.lab.spec import SpecError

SEED = yaml.safe_load(open("examples/seed.yaml"))


def problems_of(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(SpecError) as ei:
        spec.parse(text, "bad.yaml")
    return ei.value.problems


def fields(d) -> dict[str, str]:
    with pytest.raises(SpecError) as ei:
        spec.validate(d, "bad.yaml")
    return {f: f"{m} — {x}" for f, m, x in ei.value.problems}


def test_an_alias_bomb_is_refused_at_once():
    bomb = ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
            'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
            'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
            'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n')
    t0 = time.monotonic()
    (p,) = problems_of(bomb)
    assert time.monotonic() - t0 < 1.0
    assert "anchor" in p[1] or "alias" in p[1]
    assert p[0].startswith("line 1")


def test_deep_nesting_is_refused_not_a_recursion_error():
    (p,) = problems_of("a: " + "[" * 5000 + "]" * 5000)
    assert "nested more than" in p[1] or "nested too deeply" in p[1]


def test_duplicate_keys_are_refused_not_silently_overridden():
    text = open("examples/seed.yaml").read() + "lab: other\n"
    (p,) = problems_of(text)
    assert "duplicate key 'lab'" in p[1] and p[0].startswith("line ")


@pytest.mark.parametrize("name", ['b"#', "br.0", "all", "default", "lo", "eth 0", "x;y", "é"])
def test_interface_names_that_break_nft_or_sysctl_paths(name):
    d = copy.deepcopy(SEED)
    d["bridge"]["name"] = name
    got = fields(d)
    assert "bridge.name" in got and "not a usable interface name" in got["bridge.name"], got


def test_every_service_problem_is_reported_at_once():
    d = copy.deepcopy(SEED)
    d["containers"][0]["services"] = [
        {"kind": "command", "argv": []},
        {"kind": "command", "argv": ["sh", 5]},
        {"kind": "command", "argv": ["", "-c"]},
        {"kind": "command", "argv": ["sleep\0x"]},
        {"kind": "command", "argv": ["iperf3", "-s"], "port": True},
        {"kind": "http", "port": "eighty"},
    ]
    got = fields(d)
    base = "containers[0].services"
    assert {f"{base}[0].argv", f"{base}[1].argv", f"{base}[2].argv", f"{base}[3].argv", f"{base}[4].port",
            f"{base}[5].port"} <= set(got), got
    assert "true is not a port number" in got[f"{base}[4].port"]     # YAML's spelling, not Python's True
    assert "'eighty' is not a port number" in got[f"{base}[5].port"]


def test_two_commands_with_the_same_program_get_distinct_names():
    d = copy.deepcopy(SEED)
    d["containers"][0]["services"] = [{"kind": "command", "argv": ["sleep", "100"]},
                                      {"kind": "command", "argv": ["/bin/sleep", "200"]}]
    s = spec.validate(d, "x.yaml")
    assert [x.name for x in s.containers[0].services] == ["sleep", "sleep#2"]


@pytest.mark.parametrize("host_ip,ok", [("127.0.0.1", True), ("192.168.0.10", True), ("172.168.1.1", True),
                                        ("0.0.0.0", True), ("10.9.9.9", False), ("192.168.0.2", False)])
def test_host_ip_must_be_an_address_of_the_host(host_ip, ok):
    d = copy.deepcopy(SEED)
    d["ports"][0]["host_ip"] = host_ip
    if ok:
        spec.validate(d, "x.yaml")
    else:
        got = fields(d)
        assert "not an address of the host" in got["ports[0].host_ip"]


def test_python_never_leaks_into_messages():
    d = copy.deepcopy(SEED)
    d["ports"][0]["host_port"] = True
    d["containers"][0]["address"] = None
    d["containers"][1]["forwarding"] = "yes"
    got = fields(d)
    assert "true is not a port number" in got["ports[0].host_port"]
    assert "'yes' is not true or false" in got["containers[1].forwarding"]
    for word in ("True", "None", "NoneType", "<class"):
        assert word not in " ".join(got.values()), (word, got)


def test_the_message_counts_in_words():
    d = copy.deepcopy(SEED)
    d["lab"] = "BAD"
    with pytest.raises(SpecError) as ei:
        spec.validate(d, "x.yaml")
    assert "1 problem in the topology" in ei.value.render()
