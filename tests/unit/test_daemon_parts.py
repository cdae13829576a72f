"""The daemon's pure parts, without root: pending-pass merging, flap backoff, drop summaries,
the collector's labels and the observation of foreign forward chains."""

from types import SimpleNamespace

import pytest

from orchestrator.adapters import forward
from orchestrator.daemon.backoff import BACKOFF_MAX, FlapTracker
from orchestrator.daemon.drop_reporter import new_drops
from orchestrator.daemon.pending import MAX_CAUSES, Pending, Ring
from orchestrator.diagnose import drops as droplog


# ---------------------------------------------------------------- pending passes

def test_rings_for_one_namespace_redump_only_it():
    p = Pending()
    p.add(Ring("newlink veth1", "bl-x-host", scope="ns"), now=1.0)
    p.add(Ring("deladdr eth1", "bl-x-c1", scope="ns"), now=1.5)
    p.add(Ring("sysctl ip_forward=0", "bl-x-host", scope="none"), now=2.0)
    run = p.take()
    assert run.only == {"bl-x-host", "bl-x-c1"}
    assert run.first == 1.0 and run.rings == 3 and not run.lost
    assert run.causes == ["bl-x-host: newlink veth1", "bl-x-c1: deladdr eth1", "bl-x-host: sysctl ip_forward=0"]
    again = p.take()  # the record starts afresh
    assert again.only == set() and again.first is None and again.rings == 0 and again.causes == []


@pytest.mark.parametrize("ring", [Ring("periodic resync"), Ring("ENOBUFS", "bl-x-host", lost=True, scope="ns")])
def test_a_full_ring_or_lost_events_redump_everything_and_stay_so(ring):
    p = Pending()
    p.add(Ring("newlink", "bl-x-host", scope="ns"), now=0)
    p.add(ring, now=1)
    p.add(Ring("newlink", "bl-x-c1", scope="ns"), now=2)  # does not narrow it again
    run = p.take()
    assert run.only is None
    assert run.lost == ring.lost


def test_causes_are_bounded_and_forgotten_after_a_pass():
    p = Pending()
    for i in range(50):
        p.add(Ring(f"event {i}", "ns", scope="ns"), now=i)
    assert len(p.causes) == MAX_CAUSES and p.rings == 50
    p.forget_causes()
    assert p.causes == [] and p.rings == 50  # the look stays pending


# ---------------------------------------------------------------- backoff

def test_five_repairs_within_the_window_back_off_exponentially():
    f = FlapTracker(heals=5, window=30)
    key = ("link", "bl-x-host", "veth2")
    delays = [f.record(key, now=t) for t in range(5)]
    assert delays[:4] == [None] * 4 and delays[4] == 1.0
    assert not f.allowed(key, now=4.5) and f.allowed(key, now=5.0)
    assert f.flapping(now=4.5) == 1 and f.flapping(now=5.1) == 0
    delays = [f.record(key, now=5 + t) for t in range(5)]
    assert delays[4] == 2.0  # next level


def test_repairs_spread_out_never_flap_and_the_level_resets():
    f = FlapTracker(heals=3, window=30)
    key = ("route", "ns", "0.0.0.0/0")
    assert [f.record(key, now=t * 20) for t in range(10)] == [None] * 10
    for t in range(3):
        f.record(key, now=1000 + t)
    assert f.flaps[key].level == 1
    f.record(key, now=1100)
    f.record(key, now=1200)
    assert f.flaps[key].level == 0


def test_backoff_is_capped():
    f = FlapTracker(heals=2, window=30)
    key = ("nft", None, "t")
    delays = []
    now = 0.0
    for _ in range(20):  # someone undoes it as soon as each backoff expires
        for _ in range(2):
            d = f.record(key, now)
            now += 0.01
        delays.append(d)
        now = f.flaps[key].until
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == BACKOFF_MAX and delays[-1] == BACKOFF_MAX


def test_other_keys_are_independent():
    f = FlapTracker(heals=2, window=30)
    f.record(("link", None, "a"), now=0)
    f.record(("link", None, "b"), now=0.1)
    assert f.allowed(("link", None, "a"), now=0.2) and f.allowed(("link", None, "b"), now=0.2)


# ---------------------------------------------------------------- drops

def test_new_drops_are_the_growth_since_the_last_report():
    prev: dict = {}
    rows = new_drops({("host", "forward", "NETFILTER_DROP", "ipv4"): 3}, prev, now=10)
    assert rows == [{"ts": 10, "node": "host", "hook": "forward", "reason": "NETFILTER_DROP", "family": "ipv4",
                     "count": 3, "total": 3}]
    assert new_drops({("host", "forward", "NETFILTER_DROP", "ipv4"): 3}, prev, now=12) == []
    rows = new_drops({("host", "forward", "NETFILTER_DROP", "ipv4"): 5, ("c1", "prerouting", "IP_INNOROUTES", "ipv6"): 1,
                      ("host", "forward", "NETFILTER_DROP", "ipv6"): 1}, prev, now=14)
    assert [(r["node"], r["family"], r["count"]) for r in rows] == [("c1", "ipv6", 1), ("host", "ipv4", 2),
                                                                     ("host", "ipv6", 1)]


def test_drop_summary_ranks_and_keeps_a_sample():
    rows = [
        {"ts": 100, "node": "host", "hook": "forward", "reason": "NETFILTER_DROP", "count": 3,
         "sample": {"proto": "icmp", "src": "172.168.1.11", "dst": "192.168.0.2"}},
        {"ts": 150, "node": "host", "hook": "forward", "reason": "NETFILTER_DROP", "count": 2, "sample": None},
        {"ts": 160, "node": "container1", "hook": "prerouting", "reason": "IP_INNOROUTES", "count": 1},
        {"ts": 10, "node": "old", "hook": "x", "reason": "OLD", "count": 99},  # before --since
    ]
    s = droplog.summarize(rows, since=120, now=200)
    assert s["total"] == 6
    assert s["by_reason"] == [{"reason": "NETFILTER_DROP", "count": 5}, {"reason": "IP_INNOROUTES", "count": 1}]
    top = s["top"][0]
    assert (top["node"], top["count"], top["last_seen"]) == ("host", 5, 150)
    assert top["sample"]["src"] == "172.168.1.11"  # a row without one does not erase it


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("1.5d", 129600), ("45", 45)])
def test_since_parses(text, seconds):
    assert droplog.parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "-5m", "m"])
def test_since_refuses_nonsense(text):
    with pytest.raises(ValueError):
        droplog.parse_since(text)


# ---------------------------------------------------------------- collector labels

class _FakeProbes:
    known_cookies = {11: "host", 22: "container1"}
    known_ifnames = {(11, 3): "br0", (11, 4): "veth1", (11, 5): "ens33", (22, 2): "eth1", (11, 9): "other"}


def _collector():
    from orchestrator.probes.collector import ProbeCollector
    return ProbeCollector(_FakeProbes(), ports={"veth1"})


def test_collector_labels_tc_and_bridged_or_routed_nf_hops():
    col = _collector()
    counter = [SimpleNamespace(packets=2, bytes=200), SimpleNamespace(packets=1, bytes=100)]  # two CPUs
    tc = col._label("tc", "tc_counts", [(SimpleNamespace(cookie=22, ifindex=2, dir=1, proto=1, family=4), counter),
                                               (SimpleNamespace(cookie=22, ifindex=2, dir=1, proto=58, family=6), counter),
                                               (SimpleNamespace(cookie=22, ifindex=2, dir=1, proto=58, family=6, ndp=1),
                                                counter),
                                               (SimpleNamespace(cookie=22, ifindex=2, dir=1, proto=0, family=0), counter)])
    assert tc["packets"] == {("container1", "eth1", "tc_egress", "egress", "icmp", "ipv4"): 3,
                             ("container1", "eth1", "tc_egress", "egress", "icmpv6", "ipv6"): 3,
                             ("container1", "eth1", "tc_egress", "egress", "ndp", "ipv6"): 3,
                             ("container1", "eth1", "tc_egress", "egress", "non_ip", ""): 3}
    assert tc["bytes"][("container1", "eth1", "tc_egress", "egress", "icmp", "ipv4")] == 300
    nf = col._label("nf", "nf_counts", [
        (SimpleNamespace(cookie=11, iif=3, oif=5, point=0, family=4), counter),   # br0 -> ens33: routed
        (SimpleNamespace(cookie=11, iif=3, oif=5, point=0, family=6), counter),   # the same, IPv6
        (SimpleNamespace(cookie=11, iif=4, oif=0, point=1, family=4), counter),   # from a bridge port: bridged
        (SimpleNamespace(cookie=99, iif=1, oif=1, point=0, family=4), counter),   # not the lab's namespace
    ])
    assert nf["packets"] == {("host", "ens33", "forward", "through", "ipv4", "ipv4"): 3,
                             ("host", "ens33", "forward", "through", "ipv6", "ipv6"): 3,
                             ("host", "veth1", "bridge_prerouting", "in", "ipv4", "ipv4"): 3}


def test_collector_reports_the_mirrored_veth_end_and_the_points_before_nat():
    from orchestrator.probes.collector import ProbeCollector
    col = ProbeCollector(_FakeProbes(), ports={"veth1"}, mirrors={("host", "veth1"): ("container1", "eth1")})
    counter = [SimpleNamespace(packets=2, bytes=196)]
    tc = col._label("tc", "tc_counts", [(SimpleNamespace(cookie=11, ifindex=4, dir=0, proto=1, family=4), counter),
                                        (SimpleNamespace(cookie=11, ifindex=5, dir=1, proto=1, family=4), counter)])
    # veth1's ingress is eth1's egress; ens33 has no peer of the lab's
    assert tc["packets"] == {("host", "veth1", "tc_ingress", "ingress", "icmp", "ipv4"): 2,
                             ("container1", "eth1", "tc_egress", "egress", "icmp", "ipv4"): 2,
                             ("host", "ens33", "tc_egress", "egress", "icmp", "ipv4"): 2}
    assert tc["bytes"][("container1", "eth1", "tc_egress", "egress", "icmp", "ipv4")] == 196
    nf = col._label("nf", "nf_counts", [(SimpleNamespace(cookie=11, iif=0, oif=5, point=8, family=4), counter),
                                        (SimpleNamespace(cookie=11, iif=5, oif=0, point=2, family=4), counter),
                                        (SimpleNamespace(cookie=11, iif=3, oif=5, point=0, family=4), counter)])
    assert nf["packets"] == {("host", "ens33", "snat", "out", "ipv4", "ipv4"): 2,
                             ("host", "ens33", "postrouting", "out", "ipv4", "ipv4"): 2,
                             ("host", "ens33", "dnat", "in", "ipv4", "ipv4"): 2,
                             ("host", "ens33", "prerouting", "in", "ipv4", "ipv4"): 2,
                             ("host", "ens33", "forward", "through", "ipv4", "ipv4"): 2}


def test_collector_labels_drops_and_nat_by_node_only():
    col = _collector()
    drops = col._label("drops", "drop_counts", [(SimpleNamespace(cookie=11, reason=2, point=0, family=6), [4, 1])])
    assert list(drops["drops"].values()) == [5] and list(drops["drops"])[0][:2] == ("host", "forward")
    assert list(drops["drops"])[0][3] == "ipv6"
    nat = col._label("nf", "nat_counts", [(SimpleNamespace(cookie=11, kind=2, family=4), [1]),
                                         (SimpleNamespace(cookie=11, kind=1, family=4), [2]),
                                         (SimpleNamespace(cookie=11, kind=2, family=6), [5])])
    assert nat["nat"] == {("host", "source", "ipv4"): 1, ("host", "destination", "ipv4"): 2,
                          ("host", "source", "ipv6"): 5}


def test_unknown_devices_are_one_bucket_never_an_ifindex():
    col = _collector()
    tc = col._label("tc", "tc_counts", [(SimpleNamespace(cookie=11, ifindex=77, dir=0, proto=6, family=4),
                                         [SimpleNamespace(packets=1, bytes=1)])])
    assert list(tc["packets"]) == [("host", "other", "tc_ingress", "ingress", "tcp", "ipv4")]


# ---------------------------------------------------------------- foreign forward chains

def _ruleset(policy: str, ours: int) -> list[dict]:
    rules = [{"rule": {"family": "inet", "table": "fw", "chain": "fwd", "handle": i + 2, "comment": "bridgelab:x"}}
             for i in range(ours)]
    return [
        {"table": {"family": "inet", "name": "fw"}},
        {"chain": {"family": "inet", "table": "fw", "name": "fwd", "hook": "forward", "policy": policy}},
        {"chain": {"family": "ip", "table": "bridgelab_x", "name": "filter_forward", "hook": "forward",
                   "policy": "drop"}},  # our own table: never a gate
        {"chain": {"family": "inet", "table": "fw", "name": "input", "hook": "input", "policy": "drop"}},
        *rules,
        {"rule": {"family": "inet", "table": "fw", "chain": "fwd", "handle": 99, "comment": "someone else"}},
    ]


def test_a_foreign_drop_forward_chain_is_a_gate_with_our_accepts_counted():
    gates = forward.observe("ns", "x", {"bridgelab_x"}, ruleset=_ruleset("drop", 2))
    assert gates == [forward.Gate("inet", "fw", "fwd", ours=2)]
    assert forward.wanted(("br0",)) == 3 and forward.wanted(("br0", "br1")) == 6


def test_an_accepting_forward_chain_is_no_gate():
    assert forward.observe("ns", "x", {"bridgelab_x"}, ruleset=_ruleset("accept", 0)) == []


# ---------------------------------------------------------------- expectations (issue #17)

def test_a_failure_during_a_heal_is_healing_then_a_violation_if_it_outlasts_it(monkeypatch):
    import asyncio as aio

    from orchestrator.daemon import checker as ck
    from orchestrator.daemon.metrics import Metrics
    from orchestrator.diagnose import check as chk
    from orchestrator.lab import spec as specmod

    s = specmod.load("examples/seed.yaml")
    m = Metrics("seed", "sandbox")
    healer = SimpleNamespace(busy=True, heal=True, dirty=aio.Event())
    failing = {"c1-gateway"}

    def fake_check(spec, d):
        return [chk.Result(e.name, e.src, e.to, e.proto, e.result, "timeout" if e.name in failing else "replied",
                           e.name not in failing, 0.001, 1) for e in spec.expect]
    monkeypatch.setattr(chk, "check", fake_check)
    monkeypatch.setattr(chk, "static_cause", lambda *a: {"cause": "ip_forward", "verdict": "v", "fix": "f"})
    clock = [100.0]
    monkeypatch.setattr(ck.time, "monotonic", lambda: clock[0])

    async def go():
        c = ck.Checker(lambda: s, lambda: None, healer, m, 10.0, lambda: ["true"])
        monkeypatch.setattr(ck.chk, "flow_of", lambda *a: None)
        await c.round()
        val = lambda name, res: m.registry.get_sample_value(  # noqa: E731
            "bridgelab_expectation_checks_total", {"expectation": name, "result": res})
        assert val("c1-gateway", "healing") == 1 and val("c1-gateway", "failed") == 0
        assert m.registry.get_sample_value("bridgelab_expectation_ok", {"expectation": "c1-c2"}) == 1
        clock[0] += 25   # the repair still not done two intervals later: a violation
        await c.round()
        assert val("c1-gateway", "failed") == 1
        assert m.registry.get_sample_value("bridgelab_expectation_ok", {"expectation": "c1-gateway"}) == 0
        healer.busy, healer.heal = False, False
        failing.clear()
        await c.round()
        assert m.registry.get_sample_value("bridgelab_expectation_ok", {"expectation": "c1-gateway"}) == 1
    aio.run(go())


def test_shared_sysctl_registry_cannot_collide_with_a_lab_and_leaves_nothing(tmp_path, monkeypatch):
    """A lab named "shared" once had the sysctl registry as its state dir, and each namespace
    left an empty "{}" file behind after its last lab went."""
    from orchestrator.lab.naming import LAB_RE
    from orchestrator.reconcile import shared
    monkeypatch.setenv("BRIDGELAB_RUN_DIR", str(tmp_path))
    shared.claim("shared", "net.ipv4.ip_forward", "0")
    shared.claim("other", "net.ipv4.ip_forward", "1")
    (d,) = [p for p in tmp_path.iterdir()]
    assert not LAB_RE.match(d.name)
    assert shared.claimed("shared") == {"net.ipv4.ip_forward"}
    assert shared.release("shared") == [("net.ipv4.ip_forward", None, ["other"])]
    assert shared.release("other") == [("net.ipv4.ip_forward", "0", [])]
    assert list(d.iterdir()) == []


def test_shared_sysctl_registry_of_an_older_version_is_adopted(tmp_path, monkeypatch):
    import json
    from orchestrator.reconcile import shared
    monkeypatch.setenv("BRIDGELAB_RUN_DIR", str(tmp_path))
    old = tmp_path / "shared"
    old.mkdir()
    (old / f"sysctls-{shared.ns_identity()}.json").write_text(
        json.dumps({"net.ipv4.ip_forward": {"original": "0", "labs": ["a"]}}))
    assert shared.claimed("a") == {"net.ipv4.ip_forward"}
    shared.claim("b", "net.ipv4.ip_forward", "1")
    assert not old.exists()
    assert shared.release("a") == [("net.ipv4.ip_forward", None, ["b"])]
    assert shared.release("b") == [("net.ipv4.ip_forward", "0", [])]


def test_a_service_gone_before_its_start_time_is_read_is_not_running(tmp_path, monkeypatch):
    """A command that exits at once could be a zombie before start() first read /proc/PID/stat;
    it was recorded without a start time, and None == None made it 'running' for ever (an `up`
    that said a failing service had started, seen once in a loaded CI run)."""
    import asyncio
    import time
    from orchestrator.adapters import services
    from orchestrator.lab.resources import ServiceProc
    monkeypatch.setenv("BRIDGELAB_RUN_DIR", str(tmp_path))
    real = services.start_time
    def late(pid, exited_too=False):  # the first read comes after the exit, as on a busy machine
        while exited_too and real(pid) is not None:
            time.sleep(0.005)
        return real(pid, exited_too)
    monkeypatch.setattr(services, "start_time", late)
    svc = ServiceProc(node="c", ns=None, name="c/sh", argv=("sh", "-c", "echo no config; exit 3"), cwd=str(tmp_path))
    rec = services.start("t1", svc)
    assert rec["start"] is not None
    assert not services.running(rec)
    with pytest.raises(services.ServiceFailed, match="exited at once: no config"):
        asyncio.run(services.settle("t1", svc, rec))
    import os
    assert not services.running({"pid": os.getpid(), "start": None})


def test_memoized_label_name_escaping_leaves_the_exposition_byte_identical():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.openmetrics import exposition as om
    from orchestrator.daemon import metrics  # noqa: F401  (memoizes on import)
    assert hasattr(om.escape_label_name, "cache_info")

    class C:
        def collect(self):
            c = CounterMetricFamily("bridgelab_x", "help", labels=["node", "interface", "weird.name", "a-b"])
            c.add_metric(["host", 'v"e\\th\n1', "x", "y"], 3)
            yield c
    reg = CollectorRegistry()
    reg.register(C())
    fast = (generate_latest(reg), om.generate_latest(reg), generate_latest(reg, escaping=om.ALLOWUTF8))
    memo = om.escape_label_name, om._escape
    om.escape_label_name, om._escape = om.escape_label_name.__wrapped__, om._escape.__wrapped__
    try:
        slow = (generate_latest(reg), om.generate_latest(reg), generate_latest(reg, escaping=om.ALLOWUTF8))
    finally:
        om.escape_label_name, om._escape = memo
    assert fast == slow and b'weird_name="x"' in fast[0] and b'v\\"e\\\\th\\n1' in fast[0]


def test_the_probe_cache_lets_go_of_objects_no_one_used_for_a_week(tmp_path):
    import os
    from orchestrator.probes import compiled
    now = 1_800_000_000
    for name, age_days in (("probes-new.json", 0), ("probes-old.json", 8), ("probes-recent.json", 2),
                           ("other.json", 30), ("probes-kept.json", 30)):
        f = tmp_path / name
        f.write_text("{}")
        os.utime(f, (now - age_days * 86400, now - age_days * 86400))
    assert compiled.prune(str(tmp_path), keep="probes-kept.json", now=now) == ["probes-old.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "probes-kept.json", "probes-new.json",
                                                          "probes-recent.json"]
