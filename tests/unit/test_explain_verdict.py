"""explain's verdict from typed objects, on live checks recorded from real runs
(tests/golden/explain/*.json, recorded by breaking a sandbox lab each way), and its pure helpers:
nft facts from the table's JSON, the nftables trace parser, what lies on a flow's path."""

import dataclasses
import json
import pathlib

import pytest

from orchestrator.diagnose.explain.flow import Flow
from orchestrator.diagnose.explain.live import Live, parse_trace
from orchestrator.diagnose.explain.flow import design
from orchestrator.diagnose.explain.static import nft_facts, path_devices, relevant
from orchestrator.diagnose.explain.verdict import verdict
from orchestrator.lab import desired as plan
from orchestrator.lab import spec
from orchestrator.reconcile.kinds import Action, Finding

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "explain"
SEED = spec.load("examples/seed.yaml")
S = dataclasses.replace(SEED, lab="rec")
D = plan.desired(S, plan.SANDBOX)


def recorded(name: str):
    r = json.loads((GOLDEN / f"{name}.json").read_text())
    lv = r["live"]
    return (r, Flow(**r["flow"]), [Finding(**f) for f in r["static"]],
            Live(lv["result"], lv["packets"], lv["nft_trace_drops"], lv["degraded"]))


@pytest.mark.parametrize("name,works,cause", [
    ("healthy_container1_gateway", True, None),
    ("healthy_client_published", True, None),
    ("filter_rule", False, "filter_rule"),
    ("masquerade_missing", False, "masquerade_missing"),
    ("default_route_missing", False, "default_route_missing"),
    ("no_route_drop", False, "dropped"),
])
def test_verdict_from_recorded_runs(name, works, cause):
    r, flow, findings, lv = recorded(name)
    v = verdict(flow, findings, lv, D)
    assert (v["works"], v["cause"]) == (works, cause)
    assert v["verdict"] == r["verdict"] and v["fix"] == r["fix"]


def test_a_static_finding_outranks_what_the_trace_saw():
    _, flow, _, lv = recorded("filter_rule")
    f = Finding("ip_forward", "host", "host does not forward packets", "sysctl -w net.ipv4.ip_forward=1")
    assert verdict(flow, [f], lv, D)["cause"] == "ip_forward"


def test_masquerade_verdict_says_what_left_the_uplink():
    _, flow, findings, lv = recorded("masquerade_missing")
    v = verdict(flow, findings, lv, D)
    assert "left ens33 with source 172.168.1.11 and no reply came back" in v["verdict"]
    assert "left ens33" not in verdict(flow, findings, Live(lv.result, [], [], ""), D)["verdict"]


def test_refused_and_unreachable_without_findings_or_drops():
    _, flow, _, _ = recorded("healthy_client_published")
    assert verdict(flow, [], Live("refused"), D)["cause"] == "not_listening"
    assert verdict(flow, [], Live("unreachable"), D)["cause"] == "unreachable"
    assert verdict(flow, [], Live("timeout"), D)["cause"] == "no_reply"


def _table(masquerade: bool, local: bool) -> list[dict]:
    post = [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ens33"}}, {"masquerade": None}]
    return [
        {"table": {"family": "ip", "name": "bridgelab_rec"}},
        {"rule": {"chain": "nat_postrouting", "expr": post if masquerade else post[:1] + [{"accept": None}]}},
        {"rule": {"chain": "nat_output", "expr": [{"jump": {"target": "publish"}}] if local else [{"accept": None}]}},
    ]


def test_nft_facts_from_the_tables_json():
    assert nft_facts(None, "ens33") == {"present": False}
    assert nft_facts(_table(True, True), "ens33") == {"present": True, "masquerade": True, "local_dnat": True}
    assert nft_facts(_table(False, True), "ens33")["masquerade"] is False
    assert nft_facts(_table(True, False), "ens33")["local_dnat"] is False
    assert nft_facts(_table(True, True), "eth9")["masquerade"] is False  # another uplink


def test_nft_trace_lines_with_a_drop_verdict():
    out = ("trace id 1a2b inet bltest fw packet: iif \"br0\" ...\n"
           "trace id 1a2b inet bltest fw rule ip daddr 192.168.0.2 icmp type echo-request drop # handle 2 (verdict drop)\n"
           "trace id 3c4d ip filter FORWARD policy drop\n"
           "trace id 5e6f ip bridgelab_x nat_output rule fib daddr type local jump publish # handle 9 (verdict jump publish)\n")
    assert parse_trace(out) == [
        {"family": "inet", "table": "bltest", "chain": "fw", "rule": "ip daddr 192.168.0.2 icmp type echo-request drop",
         "handle": 2, "verdict": "drop"},
        {"family": "ip", "table": "filter", "chain": "FORWARD", "rule": None, "handle": None, "verdict": "policy drop"},
    ]


def test_what_lies_on_the_path():
    _, flow, _, _ = recorded("healthy_container1_gateway")
    devs = path_devices(D, *design(S, D, flow))
    assert {("bl-rec-host", "br0"), ("bl-rec-host", "ens33"), ("bl-rec-host", "veth1"),
            ("bl-rec-container1", "eth1")} <= devs
    assert relevant(Action(4, "set-up", D.host_ns, "veth1"), flow, D, devs)
    assert not relevant(Action(4, "set-up", D.host_ns, "veth2"), flow, D, devs)  # another container's port
    assert not relevant(Action(10, "start-service", "x", "container2/http:80"), flow, D, devs)
