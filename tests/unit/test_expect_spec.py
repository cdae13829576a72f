"""Expectations (`expect:`, issue #17): validation, names, and the report formats. Pure."""

import copy

import junitparser
import pytest
import yaml

from orchestrator.diagnose.check import Result
from orchestrator.diagnose.check import render
from orchestrator.lab import spec
from orchestrator.lab.spec.expect import split_target

SEED = yaml.safe_load(open("examples/seed.yaml"))


def with_expect(items):
    d = copy.deepcopy(SEED)
    d["expect"] = items
    return d


def problems(items) -> list[str]:
    with pytest.raises(spec.SpecError) as e:
        spec.validate(with_expect(items), "lab.yaml")
    return [f"{f}: {m} — {fix}" for f, m, fix in e.value.problems]


def test_the_seed_declares_its_own_observations():
    s = spec.validate(copy.deepcopy(SEED), "seed.yaml")
    names = {e.name for e in s.expect}
    assert {"c1-c2", "c1-gateway", "lan-8888", "lan-9999", "host-own-8888", "host-lo-9999", "hairpin-8888",
            "lan-lo-9999"} <= names
    assert {e.name: e.result for e in s.expect}["lan-lo-9999"] == "blocked"


def test_defaults_proto_from_the_port_and_a_name_from_the_flow():
    s = spec.validate(with_expect([{"from": "client", "to": "host:8888"}, {"from": "container1", "to": "internet"},
                                   {"from": "container1", "to": "container2:5353", "proto": "udp"}]), "lab.yaml")
    (a, b, c) = s.expect
    assert (a.proto, a.port, a.result, a.name) == ("tcp", 8888, "works", "client-host:8888")
    assert (b.proto, b.port, b.name) == ("icmp", None, "container1-internet")
    assert (c.proto, c.name) == ("udp", "container1-container2:5353-udp")


def test_bad_expectations_are_each_named_with_the_fix():
    got = problems([
        {"from": "nobody", "to": "container1"},
        {"from": "client", "to": "nowhere"},
        {"from": "client", "to": "host:80", "proto": "icmp"},
        {"from": "client", "to": "container1", "proto": "tcp"},
        {"from": "client", "to": "host:8888", "result": "maybe"},
        {"from": "client", "to": "host:99999"},
        {"name": "x", "from": "client", "to": "host:8888"},
        {"name": "x", "from": "host", "to": "host:9999"},
        {"from": "client", "to": "host:8888", "proto": "sctp"},
        {"from": "client"},
        {"from": "client", "to": "host:8888", "when": "always"},
    ])
    text = "\n".join(got)
    for want in ("expect[0].from: no node named 'nobody'", "expect[1].to: 'nowhere' is neither a node nor an IP",
                 "expect[2].proto: icmp has no ports", "expect[3].to: tcp needs a port",
                 "expect[4].result: unknown result 'maybe'", "expect[5].to: 'host:99999': the port must be 1-65535",
                 "expect[7].name: 'x' is already the name of expect[6]", "expect[8].proto: unknown protocol 'sctp'",
                 "expect[9].to: missing", "expect[10].when: unknown key"):
        assert want in text, (want, text)


def test_split_target():
    assert split_target("container2:5353") == ("container2", 5353)
    assert split_target("[fd00::1]:80") == ("fd00::1", 80)
    assert split_target("fd00::1") == ("fd00::1", None)
    assert split_target("internet") == ("internet", None)
    with pytest.raises(ValueError):
        split_target("host:0")


def results():
    ok = Result("lan-8888", "client", "host:8888", "tcp", "works", "connected", True, 0.004, 5)
    bad = Result("c1-gateway", "container1", "gateway", "icmp", "works", "timeout", False, 1.0, 1,
                 cause="ip_forward", verdict="host does not forward packets", fix="sysctl -w net.ipv4.ip_forward=1")
    skip = Result("lan-lo", "client", "127.0.0.1:9999", "tcp", "blocked", skipped="a sandbox node in host mode")
    return [ok, bad, skip]


def test_junit_is_read_by_a_real_junit_parser(tmp_path):
    path = tmp_path / "check.xml"
    path.write_bytes(render.junit("seed", results(), 1.5))
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    (suite,) = suites
    assert (suite.tests, suite.failures, suite.skipped) == (3, 1, 1)
    cases = {c.name: c for c in suite}
    assert cases["lan-8888"].is_passed
    (failure,) = cases["c1-gateway"].result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message == "host does not forward packets" and failure.type == "ip_forward"
    assert "fix: sysctl -w net.ipv4.ip_forward=1" in failure.text
    assert cases["lan-lo"].is_skipped
    assert cases["lan-8888"].classname == "bridgelab.seed"


def test_table_puts_failures_first_with_the_fix():
    text = render.table("seed", results(), color=False)
    lines = [x for x in text.splitlines() if "│" in x]
    assert "c1-gateway" in lines[0] and "✗" in lines[0]          # the first row
    assert "fix: sysctl -w net.ipv4.ip_forward=1" in text
    assert text.splitlines()[-1] == "1 of 3 failed, 1 skipped"


def test_an_icmp_error_counts_only_when_it_quotes_our_echo():
    """A raw ICMP socket receives every error its peer sends: one about another probe's TCP SYN
    (seen in a matrix check) made a working path 'unreachable'."""
    import struct
    from orchestrator.diagnose.check.probe import _about
    def v4(proto: int, inner: bytes) -> bytes:
        outer = bytes([0x45]) + bytes(19)
        quoted = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto]) + bytes(10)
        return outer + struct.pack("!BBHI", 3, 1, 0, 0) + quoted + inner
    echo = struct.pack("!BBHHH", 8, 0, 0, 4242, 1)
    assert _about(v4(1, echo), 28, 4, 8, 4242)
    assert not _about(v4(1, struct.pack("!BBHHH", 8, 0, 0, 4243, 1)), 28, 4, 8, 4242)  # another probe's echo
    assert not _about(v4(6, struct.pack("!HHI", 40000, 8888, 0)), 28, 4, 8, 4242)      # a TCP SYN
    assert not _about(v4(1, b""), 28, 4, 8, 4242)                                       # truncated
    quoted6 = bytes(6) + bytes([58]) + bytes(33)
    err6 = struct.pack("!BBHI", 1, 3, 0, 0) + quoted6 + struct.pack("!BBHHH", 128, 0, 0, 7, 1)
    assert _about(err6, 8, 6, 128, 7) and not _about(err6, 8, 6, 128, 8)
