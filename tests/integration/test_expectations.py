"""Expectations on the real kernel (issue #17): `bridgelab check` on the seed's own expectations,
explain's broken-lab scenarios making the right one fail with the right cause, the daemon's
metric and log event, restoration by a healing daemon, the JUnit file read by junitparser, and
the reachability matrix against one made by hand with ping and curl."""

import json
import re
import subprocess
import sys

import junitparser
import pytest

from tests.conftest import ROOT, wait_for
from tests.integration.test_observability import metric

pytestmark = pytest.mark.kernel


def check(lab, *args):
    r = subprocess.run([sys.executable, "-m", "orchestrator", "check", "-f", lab.path, "--json", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.stdout, r.stderr
    return r.returncode, {x["name"]: x for x in json.loads(r.stdout)["results"]}


def test_the_seeds_expectations_all_hold_and_leave_no_conntrack_entries(lab, tmp_path):
    lab.x("host", "conntrack -F", check=False)
    junit = tmp_path / "check.xml"
    code, res = check(lab, "--junit", str(junit))
    assert code == 0, {k: v for k, v in res.items() if v["status"] != "ok"}
    assert len(res) == 12 and all(r["status"] == "ok" for r in res.values())
    assert res["lan-lo-9999"]["expected"] == "blocked" and res["lan-lo-9999"]["state"] == "refused"
    suite = next(iter(junitparser.JUnitXml.fromfile(str(junit))))
    assert (suite.tests, suite.failures) == (12, 0)
    # the checks leave the lab's conntrack table as they found it (the kernel's own IGMP
    # reports from the bridge are not theirs)
    left = [x for x in lab.x("host", "conntrack -L 2>/dev/null").stdout.splitlines() if x.split()[:1] != ["unknown"]]
    assert left == [], left


def _nat_rule(lab, chain, pattern):
    listing = lab.x("host", f"nft -a list chain ip bridgelab_{lab.name} {chain}").stdout
    return re.findall(pattern + r".*# handle (\d+)", listing)


def _kill_http(lab, node):
    for pid in subprocess.run(["ip", "netns", "pids", lab.ns(node)], capture_output=True, text=True).stdout.split():
        try:
            if "http.server" in open(f"/proc/{pid}/cmdline").read():
                subprocess.run(["kill", pid])
        except FileNotFoundError:
            pass


SCENARIOS = {
    # name: (break it, the expectation that must fail, explain's cause)
    "ip_forward": (lambda lab: lab.x("host", "sysctl -qw net.ipv4.ip_forward=0"), "c1-gateway", "ip_forward"),
    "masquerade": (lambda lab: [lab.x("host", f"nft delete rule ip bridgelab_{lab.name} nat_postrouting handle {h}")
                                for h in _nat_rule(lab, "nat_postrouting", 'oifname "ens33" masquerade')],
                   "c2-internet", "masquerade_missing"),
    "local_dnat": (lambda lab: [lab.x("host", f"nft delete rule ip bridgelab_{lab.name} nat_output handle {h}")
                                for h in _nat_rule(lab, "nat_output", "jump publish")],
                   "host-own-8888", "local_dnat_missing"),
    "default_route": (lambda lab: lab.x("container1", "ip route del default"), "c1-gateway", "default_route_missing"),
    "veth_down": (lambda lab: lab.x("host", "ip link set veth1 down"), "c1-c2", "link_down"),
    "not_listening": (lambda lab: _kill_http(lab, "container1"), "lan-8888", "not_listening"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_broken_lab_fails_the_right_expectation_with_explains_cause(lab, scenario):
    brk, name, cause = SCENARIOS[scenario]
    brk(lab)
    code, res = check(lab)
    assert code == 1
    r = res[name]
    assert r["status"] == "failed" and r["cause"] == cause, r
    assert r["fix"], r
    # the ones the fault does not touch still hold
    assert res["host-lo-9999" if scenario not in ("local_dnat", "not_listening") else "c2-c1"]["status"] == "ok"


def test_a_blocked_expectation_that_starts_to_work_is_a_failure(lab):
    # the client routes the lab subnet to the host and the host forwards it: only published
    # ports were meant to come in
    lab.x("client", "ip route add 172.168.1.0/24 via 192.168.0.10")
    for h in _nat_rule(lab, "filter_forward", "unsolicited"):
        lab.x("host", f"nft delete rule ip bridgelab_{lab.name} filter_forward handle {h}")
    code, res = check(lab)
    assert code == 1
    r = res["lan-direct"]
    assert r["status"] == "failed" and r["state"] == "connected" and r["cause"] == "works_but_blocked_expected", r


def test_the_daemon_reports_a_violation_with_the_cause_and_a_healing_daemon_restores_it(lab, start_daemon):
    watcher = start_daemon(lab, "--no-heal", "--no-probes", "--check-interval", "1")
    assert wait_for(lambda: metric(watcher.metrics(), "bridgelab_expectation_ok", expectation="c1-gateway") == 1,
                    timeout=15)
    lab.x("host", "sysctl -qw net.ipv4.ip_forward=0")
    assert wait_for(lambda: metric(watcher.metrics(), "bridgelab_expectation_ok", expectation="c1-gateway") == 0,
                    timeout=15)
    # explain's answer follows the failure (its static checks, in a thread)
    info = wait_for(lambda: [k for k, v in watcher.metrics().items() if v == 1 and 'expectation="c1-gateway"' in k
                             and k.startswith("bridgelab_expectation_failing_info")], timeout=15)
    assert info and 'cause="ip_forward"' in info[0], info
    m = watcher.metrics()
    assert metric(m, "bridgelab_expectation_checks_total", expectation="c1-gateway", result="failed") >= 1
    assert metric(m, "bridgelab_expectation_ok", expectation="c1-c2") == 1      # bridged: no forwarding needed
    ev = wait_for(lambda: [e for e in watcher.events() if e.get("event") == "expectation violated"
                           and e.get("expectation") == "c1-gateway"], timeout=10)
    assert ev and ev[0]["cause"] == "ip_forward" and "ip_forward=1" in ev[0]["fix"], ev
    watcher.stop()
    healer = start_daemon(lab, "--no-probes", "--check-interval", "1")
    # healed at start; restored within two check intervals of the first round
    assert wait_for(lambda: metric(healer.metrics(), "bridgelab_expectation_ok", expectation="c1-gateway") == 1,
                    timeout=2 * 1.1 + 5)
    assert lab.x("host", "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
    assert not [k for k, v in healer.metrics().items()
                if k.startswith("bridgelab_expectation_failing_info") and v == 1]


def test_the_matrix_matches_one_made_by_hand(lab):
    r = subprocess.run([sys.executable, "-m", "orchestrator", "check", "-f", lab.path, "--matrix", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert set(m["rows"]) == {"host", "container1", "container2", "gateway", "client", "internet"}
    wrong = []
    for src in m["rows"]:
        for col in m["columns"]:
            state = m["cells"][src].get(col)
            if state is None:
                continue
            addr = m["addresses"][src][col]
            if "/tcp" in col:   # curl, an independent client
                port = col.split(":")[1].split("/")[0]
                ok = lab.x(src, f"curl -s -o /dev/null -m 2 http://{addr}:{port}/", check=False).returncode == 0
            else:
                ok = lab.ping(src, addr)
            if ok != (state in ("replied", "connected")):
                wrong.append((src, col, addr, state, ok))
    assert not wrong, wrong
    # the picture the seed is about: the LAN reaches published ports, not the containers
    assert m["cells"]["client"]["host:8888/tcp"] == "connected"
    assert m["cells"]["client"]["container1"] != "replied"
    assert m["cells"]["container1"]["internet"] == "replied"
