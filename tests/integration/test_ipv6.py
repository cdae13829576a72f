"""IPv6 dual stack on the real kernel (issue #14): every seed observation again in IPv6, on
examples/seed-dualstack.yaml under a lab name of its own. Oracles: ping -6, curl, tcpdump,
ip -j, nft -j, the daemon's metrics against tcpdump's count."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, example, sh, wait_for
from tests.integration.capture import Capture
from tests.integration.test_observability import metric

pytestmark = pytest.mark.kernel

DUAL = example("seed-dualstack.yaml")
C1, C2, GW6, UP6, GATEWAY6 = "fd00:168:1::11", "fd00:168:1::12", "fd00:168:1::1", "2001:db8:0:1::10", "2001:db8:0:1::2"
INTERNET6, CLIENT6 = "2001:db8:ff::10", "2001:db8:0:1::100"


@pytest.fixture
def dual(make_lab):
    return make_lab(base=DUAL)


def table(lab) -> str:
    return f"inet bridgelab_{lab.name}"


def addrs6(lab, node: str, dev: str) -> list[str]:
    out = json.loads(lab.x(node, f"ip -j -6 addr show dev {dev}").stdout)
    return [a["local"] for a in out[0]["addr_info"] if a.get("scope") == "global"] if out else []


def explain(lab, *args):
    r = subprocess.run([sys.executable, "-m", "orchestrator", "explain", "-f", lab.path, "--json", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def test_containers_reach_each_other_the_bridge_and_the_uplink_over_ipv6(dual):
    assert dual.ping("container1", C2) and dual.ping("container2", C1)
    assert dual.ping("container1", GW6)                      # br0's gateway6: the subnet's first address
    assert dual.ping("container1", UP6)                      # the host's uplink address
    assert addrs6(dual, "host", "br0") == [GW6]
    route = json.loads(dual.x("container1", "ip -j -6 route show default").stdout)
    assert route[0]["gateway"] == GW6 and route[0]["dev"] == "eth1"
    # usable the moment `up` returned: no address still tentative (DAD off where we assign)
    flags = json.loads(dual.x("container1", "ip -j -6 addr show dev eth1").stdout)[0]["addr_info"]
    assert not [a for a in flags if a.get("tentative")], flags
    # and the IPv4 side is the seed's, untouched
    assert dual.ping("container1", "172.168.1.12") and dual.ping("container1", "203.0.113.10")


def test_nat66_upstream_sees_the_host_address_and_answers(dual):
    cap = Capture(dual.ns("gateway"), "eth0", "icmp6 and (ip6[40] == 128 or ip6[40] == 129)", count=2)
    try:
        assert dual.ping("container1", GATEWAY6)
        lines = cap.lines()
    finally:
        cap.stop()
    assert any(f"{UP6} > {GATEWAY6}: ICMP6, echo request" in x for x in lines), lines
    assert any(f"{GATEWAY6} > {UP6}: ICMP6, echo reply" in x for x in lines), lines
    assert dual.ping("container2", INTERNET6)                # two hops away, through the gateway
    rules = dual.x("host", f"nft list chain {table(dual)} nat_postrouting").stdout
    assert "fd00:168:1::/64" in rules and "masquerade" in rules


def test_without_nat66_the_upstream_sees_the_ula_source_and_no_reply(make_lab):
    def mutate(s):
        s["bridge"]["nat6"] = False
    lab = make_lab(mutate, base=DUAL)
    cap = Capture(lab.ns("internet"), "eth0", "icmp6 and (ip6[40] == 128 or ip6[40] == 129)", count=4)
    try:
        assert not lab.ping("container1", INTERNET6, count=2)
        lines = cap.lines(timeout=2)
    finally:
        cap.stop()
    requests = [x for x in lines if "echo request" in x]
    assert requests and all(f"{C1} > {INTERNET6}" in x for x in requests), lines
    # the internet stand-in answers, but the gateway has no route back to the ULA: none arrives
    assert not lab.ping("container1", INTERNET6)
    rules = lab.x("host", f"nft list chain {table(lab)} nat_postrouting").stdout.splitlines()
    assert not [x for x in rules if "fd00:168:1::/64" in x and "ens33" in x], rules   # no NAT66 out of the uplink
    assert lab.ping("container1", "203.0.113.10")                                       # IPv4's NAT unaffected


def test_lan_client_reaches_published_ports_over_ipv6(dual):
    assert dual.http("client", f"http://[{UP6}]:8888/") == "container1"
    assert dual.http("client", f"http://[{UP6}]:9999/") == "container2"


def test_host_reaches_published_ports_on_its_own_address6_and_loopback6(dual):
    assert dual.http("host", f"http://[{UP6}]:8888/") == "container1"
    assert dual.http("host", "http://[::1]:9999/") == "container2"
    assert dual.http("host", f"http://[{GW6}]:8888/") == "container1"


def test_hairpin_over_ipv6(dual):
    assert dual.http("container1", f"http://[{UP6}]:8888/") == "container1"
    assert dual.http("container1", f"http://[{UP6}]:9999/") == "container2"
    assert dual.http("container2", f"http://[{UP6}]:9999/") == "container2"


def test_loopback6_bound_port_is_the_hosts_only(make_lab):
    def mutate(s):
        s["ports"] = [{"host_port": 8080, "to": "container1:80", "host_ip": "::1"},
                      {"host_port": 8888, "to": "container1:80"}]
    lab = make_lab(mutate, base=DUAL)
    assert lab.http("host", "http://[::1]:8080/") == "container1"
    assert lab.http("client", f"http://[{UP6}]:8080/").startswith("curl exit")
    assert lab.http("host", f"http://[{UP6}]:8080/").startswith("curl exit")
    assert lab.http("container2", f"http://[{UP6}]:8080/").startswith("curl exit")
    assert lab.http("client", f"http://[{UP6}]:8888/") == "container1"   # the other port is published


def unsolicited_drops(lab) -> int:
    nft = json.loads(lab.x("host", f"nft -j list chain {table(lab)} filter_forward").stdout)["nftables"]
    return sum(e["counter"]["packets"] for i in nft if "rule" in i and "unsolicited" in i["rule"].get("comment", "")
               for e in i["rule"]["expr"] if "counter" in e)


def test_unsolicited_ipv6_into_the_lab_is_dropped_like_ipv4(dual):
    nft = json.loads(dual.x("host", f"nft -j list table {table(dual)}").stdout)["nftables"]
    assert next(i["table"] for i in nft if "table" in i)["family"] == "inet"   # one table, both families
    # a LAN host that routes the lab's ULA to the host gets nowhere (only published ports are in)
    dual.x("client", f"ip -6 route replace fd00:168:1::/64 via {UP6}")
    before = unsolicited_drops(dual)
    assert not dual.ping("client", C1, count=2)
    assert unsolicited_drops(dual) >= before + 2
    assert dual.http("client", f"http://[{UP6}]:8888/") == "container1"
    assert dual.up("--dry-run")["changed"] == 0       # nothing of ours was touched by the test


def test_daemon_heals_a_flushed_ipv6_address_and_a_deleted_ipv6_default_route(dual, start_daemon):
    d = start_daemon(dual, "--no-probes")
    sh(["ip", "-n", dual.ns("container2"), "-6", "addr", "flush", "dev", "eth2", "scope", "global"])
    assert wait_for(lambda: addrs6(dual, "container2", "eth2") == [C2], timeout=10), "address not healed"
    assert wait_for(lambda: dual.ping("container1", C2), timeout=5)
    sh(["ip", "-n", dual.ns("container1"), "-6", "route", "del", "default"])
    assert wait_for(lambda: json.loads(dual.x("container1", "ip -j -6 route show default").stdout), timeout=10)
    assert wait_for(lambda: dual.ping("container1", INTERNET6), timeout=5)
    sh(["ip", "-n", dual.ns("host"), "-6", "addr", "flush", "dev", "br0", "scope", "global"])
    assert wait_for(lambda: addrs6(dual, "host", "br0") == [GW6], timeout=10)
    dual.x("host", "sysctl -qw net.ipv6.conf.all.forwarding=0")
    assert wait_for(lambda: dual.x("host", "sysctl -n net.ipv6.conf.all.forwarding").stdout.strip() == "1",
                    timeout=10)
    assert wait_for(lambda: dual.ping("container1", INTERNET6), timeout=5)
    kinds = {k: v for k, v in d.metrics().items() if k.startswith("bridgelab_heal_actions_total")
             and 'outcome="applied"' in k}
    assert sum(v for k, v in kinds.items() if 'kind="address"' in k) >= 2, kinds
    assert sum(v for k, v in kinds.items() if 'kind="route"' in k) >= 1, kinds
    assert sum(v for k, v in kinds.items() if 'kind="sysctl"' in k) >= 1, kinds


def test_trace_of_a_nat66_ping_shows_both_sides(dual):
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "trace", "-f", dual.path, "--node", "container1",
                             "--proto", "icmp", "--count", "2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        # the trace is ready once it says what it traces (its probes are attached)
        assert wait_for(lambda: _said(proc, "tracing lab"), timeout=60), "trace did not start"
        assert dual.ping("container1", INTERNET6)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    packets = [json.loads(x) for x in out.splitlines() if x.startswith('{"packet"')]
    assert len(packets) == 2, (out, err)
    req, rep = packets
    assert req["tuple"]["family"] == "ipv6" and req["tuple"]["icmp"] == "echo-request"
    assert req["tuple"]["src"] == C1 and req["verdict"] == "delivered to internet", req["verdict"]
    snat = [h for h in req["hops"] if h.get("rewrite") and h["node"] == "host"]
    assert snat and snat[0]["rewrite"] == f"source {C1} → {UP6}", snat
    assert rep["tuple"]["icmp"] == "echo-reply" and rep["tuple"]["dst"] == UP6
    dnat = [h for h in rep["hops"] if h.get("rewrite") and h["node"] == "host"]
    assert dnat and dnat[0]["rewrite"] == f"destination {UP6} → {C1}", dnat
    assert rep["verdict"].startswith("delivered to container1")


_STDERR: dict = {}


def _said(proc, text: str) -> bool:
    import os
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        chunk = os.read(proc.stderr.fileno(), 65536).decode()
    except BlockingIOError:
        chunk = ""
    _STDERR[proc.pid] = _STDERR.get(proc.pid, "") + chunk
    return text in _STDERR[proc.pid]


def test_per_hop_counters_equal_tcpdump_for_ipv6(dual, start_daemon):
    d = start_daemon(dual)
    assert wait_for(lambda: metric(d.metrics(), "bridgelab_probe_attached", probe="tc") == 1, timeout=30)
    sel = {"node": "host", "family": "ipv6"}
    n = 9
    cap_in = Capture(dual.ns("host"), "veth1", "icmp6 and ip6[40] == 128")
    cap_out = Capture(dual.ns("host"), "ens33", "icmp6 and ip6[40] == 128")
    before = d.metrics()
    try:
        assert dual.ping("container1", INTERNET6, count=n)
    finally:
        seen_in, seen_out = len(cap_in.lines(timeout=1)), len(cap_out.lines(timeout=1))
    after = d.metrics()

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)
    assert seen_in == seen_out == n
    assert delta("bridgelab_datapath_packets_total", interface="veth1", hook="tc_ingress", protocol="icmpv6",
                 **sel) == seen_in
    assert delta("bridgelab_datapath_packets_total", interface="ens33", hook="tc_egress", protocol="icmpv6",
                 **sel) == seen_out
    # and the replies the other way; each ping's request and reply are forwarded once each way
    assert delta("bridgelab_datapath_packets_total", interface="ens33", hook="forward", **sel) == n
    assert delta("bridgelab_datapath_packets_total", interface="br0", hook="forward", **sel) == n
    if metric(after, "bridgelab_probe_degraded", probe="nf") == 0:
        assert delta("bridgelab_nat_translations_total", node="host", rewrite="source", family="ipv6") == n
        assert delta("bridgelab_nat_translations_total", node="host", rewrite="destination", family="ipv6") == n
    # neighbour discovery is counted as such, and a healthy lab shows no drop of either family
    m = d.metrics()
    assert sum(v for k, v in m.items() if k.startswith("bridgelab_datapath_packets_total")
               and 'protocol="ndp"' in k) > 0
    assert not [k for k, v in m.items() if k.startswith("bridgelab_drops_total") and v], \
        [k for k in m if k.startswith("bridgelab_drops_total")]


def test_explain_a_broken_ipv6_route(dual):
    dual.x("container1", "ip -6 route del default")
    code, out = explain(dual, "-6", "container1", "internet")
    assert code == 1, out
    assert out["flow"]["dst_addr"] == INTERNET6
    text = json.dumps(out["verdict"])
    assert "route" in text and "container1" in text, out["verdict"]


def test_explain_ipv6_forwarding_off(dual):
    dual.x("host", "sysctl -qw net.ipv6.conf.all.forwarding=0")
    code, out = explain(dual, "-6", "container1", "internet")
    assert code == 1, out
    text = json.dumps(out["verdict"])
    assert "forwarding" in text, out["verdict"]
    code4, _ = explain(dual, "container1", "internet")     # IPv4 forwarding is another switch
    assert code4 == 0
