"""Several networks, point-to-point links, routers and link impairments (issue #13), on the real
kernel: examples/multi-network.yaml and examples/routers.yaml, each under a lab name of its own."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, example, sh, wait_for

pytestmark = pytest.mark.kernel

MULTI = example("multi-network.yaml")
ROUTERS = example("routers.yaml")


@pytest.fixture
def multi(make_lab):
    return make_lab(base=MULTI)


@pytest.fixture
def routers(make_lab):
    return make_lab(base=ROUTERS)


def forward_rule(lab, comment: str) -> int:
    """Packets counted by the lab's forward rule whose comment is COMMENT (nft -j: an
    independent reading of the kernel's counters)."""
    out = json.loads(lab.x("host", f"nft -j list chain ip bridgelab_{lab.name} filter_forward").stdout)
    for item in out["nftables"]:
        r = item.get("rule")
        if r and r.get("comment") == comment:
            return next(x["counter"]["packets"] for x in r["expr"] if "counter" in x)
    raise AssertionError(f"no rule {comment!r}")


def explain(lab, *args):
    r = subprocess.run([sys.executable, "-m", "orchestrator", "explain", "-f", lab.path, "--json", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


# ---------------------------------------------------------------- networks

def test_same_network_and_a_container_on_two_networks(multi):
    assert multi.ping("web", "172.21.0.20")            # web and db share back
    assert multi.ping("db", "172.21.0.10")
    assert multi.ping("web", "172.20.0.1")             # web's front gateway
    assert multi.http("db", "http://172.21.0.10/") == "web"
    assert multi.ping("web", "203.0.113.10")           # front is not internal: out through NAT
    assert multi.http("client", "http://192.168.0.10:8080/") == "web"
    links = {x["ifname"]: x for x in json.loads(multi.x("web", "ip -j link").stdout)}
    assert {"eth0", "eth1"} <= set(links)              # eth0, eth1 in the order of its networks
    addrs = json.loads(multi.x("web", "ip -j addr show dev eth1").stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs if a["family"] == "inet"] == ["172.21.0.10"]


def test_networks_are_isolated_by_the_isolation_rule(multi):
    before = forward_rule(multi, "networks are isolated from each other")
    assert not multi.ping("other", "172.20.0.10")                       # ICMP to web on front
    assert multi.http("other", "http://172.20.0.10/").startswith("curl exit")   # TCP too
    assert forward_rule(multi, "networks are isolated from each other") >= before + 2
    assert multi.ping("other", "172.22.0.1") and multi.ping("other", "203.0.113.10")  # its own way out works


def test_an_internal_network_has_no_way_out_and_no_way_in(multi):
    assert not multi.ping("db", "203.0.113.10")
    assert not multi.ping("db", "172.20.0.10")         # web's other address: not through the host
    routes = json.loads(multi.x("db", "ip -j route").stdout)
    assert not [r for r in routes if r["dst"] == "default"], "an internal network gives no default route"
    table = multi.x("host", f"nft list chain ip bridgelab_{multi.name} nat_postrouting").stdout
    assert "172.21.0.0/24" not in table                # no masquerade for it


def test_a_network_sets_its_mtu(multi):
    br = json.loads(multi.x("host", "ip -j link show brside").stdout)[0]
    eth = json.loads(multi.x("other", "ip -j link show eth0").stdout)[0]
    assert br["mtu"] == 1400 and eth["mtu"] == 1400


# ---------------------------------------------------------------- routers and links

def test_routing_over_two_links_through_a_router(routers):
    assert routers.ping("r1", "10.0.23.2") and routers.ping("r3", "10.0.12.1")
    assert routers.ping("r3", "172.20.0.11")           # r3 -> r2 -> r1's front address
    hops = routers.x("r3", "traceroute -n -q1 -w1 10.0.12.1", check=False).stdout \
        if sh("command -v traceroute", check=False).returncode == 0 else ""
    if hops:
        assert "10.0.23.1" in hops                     # through r2
    fwd = routers.x("r2", "sysctl -n net.ipv4.ip_forward").stdout.strip()
    assert fwd == "1"


def test_netem_delay_shows_in_the_ping_rtt_both_ways(routers):
    rtt, _ = routers.rtt("r1", "10.0.12.2", 20)        # 20 ms ± 2 ms each way
    assert 36 <= rtt <= 48, rtt
    rtt, _ = routers.rtt("r2", "10.0.23.2", 10)        # the second link is not impaired
    assert rtt < 5, rtt


def test_netem_loss_over_a_few_hundred_packets(make_lab):
    def lossy(spec):
        spec["links"][0]["netem"] = {"loss": "10%", "at": "r1:eth1"}   # one direction only
    lab = make_lab(lossy, base=ROUTERS)
    _, loss = lab.rtt("r1", "10.0.12.2", 400)
    assert 0.04 <= loss <= 0.17, loss                  # 10 % ± 4 sigma over 400
    _, loss_back = lab.rtt("r2", "10.0.12.1", 200)     # a reply lost counts too: about the same
    assert loss_back <= 0.2


def test_netem_changed_in_the_file_changes_in_place(routers):
    before = json.loads(routers.x("r1", "ip -j link show eth1").stdout)[0]["ifindex"]
    routers.spec["links"][0]["netem"] = {"delay": "5ms"}
    routers.save()
    r = routers.up()
    assert r["actions"] and {a["verb"] for a in r["actions"]} == {"set-impairment"}, r["actions"]
    assert json.loads(routers.x("r1", "ip -j link show eth1").stdout)[0]["ifindex"] == before, "not recreated"
    rtt, _ = routers.rtt("r1", "10.0.12.2", 10)
    assert 9 <= rtt <= 14, rtt
    del routers.spec["links"][0]["netem"]
    routers.save()
    routers.up()
    rtt, _ = routers.rtt("r1", "10.0.12.2", 10)
    assert rtt < 5, rtt
    assert routers.up()["actions"] == []


# ---------------------------------------------------------------- healing

def drift(lab) -> list:
    r = subprocess.run([sys.executable, "-m", "orchestrator", "status", "-f", lab.path, "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    return json.loads(r.stdout)["drift"]


ROUTER_FAULTS = {
    "link-deleted": (lambda lab: lab.x("r1", "ip link del eth1"), "link"),
    "qdisc-deleted": (lambda lab: lab.x("r1", "tc qdisc del dev eth1 root"), "impairment"),
    "qdisc-changed": (lambda lab: lab.x("r1", "tc qdisc replace dev eth1 root tbf rate 1mbit burst 4k latency 10ms"),
                      "impairment"),
    "delay-rule-deleted": (lambda lab: lab.x("r2", "iptables -t mangle -F PREROUTING"), "impairment"),
    "container-route-deleted": (lambda lab: lab.x("r1", "ip route del 10.0.23.0/30"), "route"),
    "router-forwarding-off": (lambda lab: lab.x("r2", "sysctl -qw net.ipv4.ip_forward=0"), "sysctl"),
}


@pytest.mark.parametrize("fault", sorted(ROUTER_FAULTS))
def test_the_daemon_heals_routers_links_and_impairments(make_lab, start_daemon, fault):
    lab = make_lab(up=False, base=ROUTERS)
    d = start_daemon(lab, "--no-probes")
    assert wait_for(lambda: lab.ping("r1", "10.0.23.2"), timeout=10)
    inject, kind = ROUTER_FAULTS[fault]
    before = d.metrics().get(f'bridgelab_heal_actions_total{{kind="{kind}",outcome="applied"}}', 0)
    inject(lab)
    assert wait_for(lambda: not drift(lab), timeout=15), drift(lab)
    assert wait_for(lambda: lab.ping("r1", "10.0.23.2"), timeout=5)
    assert d.metrics()[f'bridgelab_heal_actions_total{{kind="{kind}",outcome="applied"}}'] > before
    rtt, _ = lab.rtt("r1", "10.0.12.2", 5)
    assert rtt >= 30, f"the link is impaired again after the heal ({rtt} ms)"


def test_the_daemon_restarts_the_delay_line(make_lab, start_daemon):
    lab = make_lab(up=False, base=ROUTERS)
    start_daemon(lab, "--no-probes")
    assert wait_for(lambda: lab.rtt("r1", "10.0.12.2", 3)[0] >= 30, timeout=10)
    st = json.load(open(f"/run/bridgelab/{lab.name}/state.json"))
    pid = st["impair"]["delayline"]["pid"]
    sh(["kill", "-9", str(pid)])
    assert wait_for(lambda: json.load(open(f"/run/bridgelab/{lab.name}/state.json"))["impair"]
                    .get("delayline", {}).get("pid") not in (None, pid), timeout=10)
    assert wait_for(lambda: lab.rtt("r1", "10.0.12.2", 3)[0] >= 30, timeout=10)


def test_the_daemon_heals_a_deleted_network_bridge_with_all_its_ports(make_lab, start_daemon):
    lab = make_lab(up=False, base=MULTI)
    start_daemon(lab, "--no-probes")
    assert wait_for(lambda: lab.http("client", "http://192.168.0.10:8080/") == "web", timeout=10)
    lab.x("host", "ip link del brfront")
    assert wait_for(lambda: not drift(lab), timeout=15), drift(lab)
    ports = json.loads(lab.x("host", "ip -j link show master brfront").stdout)
    assert [p["ifname"] for p in ports] == ["veth1"]
    assert wait_for(lambda: lab.http("client", "http://192.168.0.10:8080/") == "web", timeout=5)
    assert lab.ping("web", "172.20.0.1")


# ---------------------------------------------------------------- explain

def test_explain_isolation(multi):
    code, r = explain(multi, "other", "web")
    assert code == 1 and r["cause"] == "isolated", r["verdict"]
    assert "share no network" in r["verdict"] and "attach other to front" in r["verdict"]


def test_explain_a_missing_route_back(make_lab):
    def no_routes(spec):
        spec["containers"][2]["routes"] = []        # r3 knows only its own link
    lab = make_lab(no_routes, base=ROUTERS)
    code, r = explain(lab, "r1", "r3")
    assert code == 1 and r["cause"] == "no_route_back", r["verdict"]
    assert "r3 has no route back to 10.0.12.0/30" in r["verdict"]
    assert r["live"]["result"] == "timeout"       # and it does not work indeed


def test_explain_a_router_not_forwarding(routers):
    routers.x("r2", "sysctl -qw net.ipv4.ip_forward=0")
    code, r = explain(routers, "r1", "r3")
    assert code == 1 and r["cause"] == "ip_forward", r["verdict"]
    assert r["verdict"].startswith("r2 does not forward packets") and "ip_forward=0" in r["verdict"]


def test_explain_reports_the_impairment_on_the_path(routers):
    code, r = explain(routers, "r1", "r3")
    assert code == 0 and r["works"], r["verdict"]
    notes = [f for f in r["static"] if f["cause"] == "impairment"]
    assert notes and "delay 20ms ±2ms" in notes[0]["what"] and "loss 0.5%" in notes[0]["what"]
    assert re.search(r"r1:eth1 -> r2:eth1", notes[0]["what"])
