"""The seed's observations, one test each, on a real sandbox lab."""

import json
import os
import re

import pytest

from tests.conftest import sh, wait_for
from tests.integration.capture import Capture

pytestmark = pytest.mark.kernel


def test_containers_reach_each_other_the_bridge_and_the_uplink(lab):
    assert lab.ping("container1", "172.168.1.12")
    assert lab.ping("container2", "172.168.1.11")
    assert lab.ping("container1", "172.168.1.1")
    assert lab.ping("container1", "192.168.0.10")
    links = json.loads(lab.x("host", "ip -j -d link show master br0").stdout)
    assert sorted(x["ifname"] for x in links) == ["veth1", "veth2"]
    route = json.loads(lab.x("container1", "ip -j route show default").stdout)
    assert route[0]["gateway"] == "172.168.1.1" and route[0]["dev"] == "eth1"


def _masquerade_handle(lab) -> int:
    data = json.loads(lab.x("host", f"nft -j -a list chain ip bridgelab_{lab.name} nat_postrouting").stdout)
    rules = [e["rule"] for e in data["nftables"] if "rule" in e]
    return next(r["handle"] for r in rules if "uplink" in r.get("comment", ""))


def test_without_masquerade_requests_leave_with_the_container_source_and_get_no_reply(lab):
    lab.x("host", f"nft delete rule ip bridgelab_{lab.name} nat_postrouting handle {_masquerade_handle(lab)}")
    cap = Capture(lab.ns("host"), "ens33", "icmp", count=2)
    try:
        assert not lab.ping("container1", "192.168.0.2", count=2)
        lines = cap.lines()
    finally:
        cap.stop()
    requests = [line for line in lines if "echo request" in line]
    assert requests and all("172.168.1.11 > 192.168.0.2" in line for line in requests), lines
    assert not [line for line in lines if "echo reply" in line]


def test_with_nat_the_ping_is_answered_and_upstream_sees_the_uplink_address(lab):
    cap = Capture(lab.ns("gateway"), "eth0", "icmp", count=2)
    try:
        assert lab.ping("container1", "192.168.0.2")
        lines = cap.lines()
    finally:
        cap.stop()
    assert any("192.168.0.10 > 192.168.0.2: ICMP echo request" in line for line in lines), lines
    assert any("192.168.0.2 > 192.168.0.10: ICMP echo reply" in line for line in lines), lines
    # and the internet stand-in (the seed's 114.114.114.114), two hops away
    assert lab.ping("container2", "203.0.113.10")


def test_lan_client_reaches_published_ports(lab):
    assert lab.http("client", "http://192.168.0.10:8888/") == "container1"
    assert lab.http("client", "http://192.168.0.10:9999/") == "container2"


def test_host_reaches_published_ports_on_its_own_address_and_localhost(lab):
    # the seed ended on exactly this: curl 192.168.0.10:8888 from the host itself was refused
    assert lab.http("host", "http://192.168.0.10:8888/") == "container1"
    assert lab.http("host", "http://127.0.0.1:9999/") == "container2"
    assert lab.http("host", "http://172.168.1.1:8888/") == "container1"


def test_hairpin_own_and_sibling_published_port(lab):
    assert lab.http("container1", "http://192.168.0.10:8888/") == "container1"
    assert lab.http("container1", "http://192.168.0.10:9999/") == "container2"
    assert lab.http("container2", "http://192.168.0.10:9999/") == "container2"


def test_dnat_only_for_local_destinations(lab):
    # a packet to port 8888 of some other address routed through the host is not rewritten
    cap = Capture(lab.ns("host"), "br0", "tcp port 80", count=1)
    try:
        assert lab.http("container1", "http://203.0.113.10:8888/").startswith("curl exit")
        lines = cap.lines(timeout=1.5)
    finally:
        cap.stop()
    assert not lines


def test_loopback_published_port_is_not_exposed_to_the_lan(make_lab):
    def mutate(s):
        s["ports"] = [{"host_port": 8080, "to": "container1:80", "host_ip": "127.0.0.1"},
                      {"host_port": 8888, "to": "container1:80"}]
    lab = make_lab(mutate)
    assert lab.http("host", "http://127.0.0.1:8080/") == "container1"
    assert lab.http("client", "http://192.168.0.10:8080/").startswith("curl exit")
    assert lab.http("host", "http://192.168.0.10:8080/").startswith("curl exit")
    # a container cannot reach the host's loopback through route_localnet on br0
    pidfile = f"/run/bridgelab/{lab.name}/lo7070.pid"
    lab.x("host", f"nohup python3 -m http.server 7070 --bind 127.0.0.1 >/dev/null 2>&1 & echo $! > {pidfile}")
    try:
        assert wait_for(lambda: "Directory listing" in lab.http("host", "http://127.0.0.1:7070/"))
        # make the container send 127.0.0.1 to the host instead of its own loopback
        lab.x("container1", "sysctl -qw net.ipv4.conf.eth1.route_localnet=1; "
                            "ip route del local 127.0.0.0/8 dev lo table local; "
                            "ip route del local 127.0.0.1 dev lo table local; "
                            "ip route add 127.0.0.0/8 via 172.168.1.1 dev eth1")
        assert lab.http("container1", "http://127.0.0.1:7070/").startswith("curl exit")
        raw = json.loads(lab.x("host", f"nft -j list chain ip bridgelab_{lab.name} raw_prerouting").stdout)
        counter = next(e["counter"] for r in raw["nftables"] if "rule" in r for e in r["rule"]["expr"] if "counter" in e)
        assert counter["packets"] >= 1, "the SYN reached the host and was dropped by the raw rule"
    finally:
        sh(["kill", open(pidfile).read().strip()], check=False)


def test_up_is_idempotent_and_repairs(lab):
    again = lab.up()
    assert again["changed"] is False and again["actions"] == []
    lab.x("host", "ip link del veth1")
    lab.x("container2", "ip addr flush dev eth2")
    fixed = lab.up()
    got = sorted((a["verb"], a["target"]) for a in fixed["actions"])
    assert ("create-veth", "veth1") in got and ("add-address", "eth2") in got
    assert lab.ping("container1", "172.168.1.12")
    assert lab.http("client", "http://192.168.0.10:8888/") == "container1"
    assert lab.up()["changed"] is False


def test_down_removes_the_lab_and_leaves_a_neighbour_alone(lab):
    # a stranger whose namespace name shares our prefix up to the lab name must survive
    stranger = f"bl-{lab.name}x-stranger"
    sh(["ip", "netns", "add", stranger])
    try:
        sh(["ip", "-n", stranger, "link", "add", "stranger0", "type", "veth", "peer", "name", "stranger1"])
        sh(["ip", "netns", "exec", stranger, "nft", "add table inet stranger"])
        out = json.loads(lab.cli("down", "--lab", lab.name, "--json").stdout)
        assert len([r for r in out["removed"] if r.startswith("delete-ns")]) == 7
        assert not [n for n in sh("ip netns list").stdout.split() if n.startswith(f"bl-{lab.name}-")]
        assert not os.path.exists(f"/run/bridgelab/{lab.name}")
        assert "stranger0" in sh(["ip", "-n", stranger, "link", "show"]).stdout
        assert "table inet stranger" in sh(["ip", "netns", "exec", stranger, "nft", "list", "tables"]).stdout
        again = json.loads(lab.cli("down", "--lab", lab.name, "--json").stdout)
        assert again["removed"] == []
    finally:
        sh(["ip", "netns", "del", stranger], check=False)


def test_status_json_and_exec(lab):
    st = json.loads(lab.cli("status", "--json").stdout)
    assert st["up"] and st["drift"] == []
    nodes = {n["node"]: n for n in st["nodes"]}
    eth1 = next(x for x in nodes["container1"]["links"] if x["name"] == "eth1")
    assert eth1["addresses"] == ["172.168.1.11/24"] and eth1["up"]
    assert {s["state"] for s in st["services"]} == {"running"}
    lab.x("host", "ip link set veth2 down")
    st = json.loads(lab.cli("status", "--json").stdout)
    assert {(d["verb"], d["target"]) for d in st["drift"]} == {("set-up", "veth2")}
    r = lab.cli("exec", "container1", "--", "sh", "-c", "ip -o addr show eth1; exit 7", check=False)
    assert r.returncode == 7 and "172.168.1.11/24" in r.stdout


def test_two_labs_side_by_side(make_lab, lab):
    other = make_lab()
    assert other.http("client", "http://192.168.0.10:8888/") == "container1"
    assert lab.http("client", "http://192.168.0.10:9999/") == "container2"
    other.cli("down", "--lab", other.name)
    assert lab.ping("container1", "172.168.1.12")


def test_graph_mermaid_and_dot(lab):
    mm = lab.cli("graph").stdout
    assert mm.startswith("flowchart LR") and "veth1 ⇄ eth1 172.168.1.11/24" in mm
    dot = lab.cli("graph", "--format", "dot").stdout
    assert dot.startswith("graph bridgelab {") and re.search(r'"host/br0" -- "container2"', dot)


@pytest.mark.parametrize("how", ["iptables", "nft"])
def test_lab_works_under_a_foreign_forward_drop_policy(lab, how):
    # Docker sets `iptables -P FORWARD DROP`; an nft firewall may have its own drop chain
    if how == "iptables":
        lab.x("host", "iptables -P FORWARD DROP")
    else:
        lab.x("host", "nft add table inet fw; nft add chain inet fw forward_drop '{ type filter hook forward priority 0; policy drop; }'")
    assert lab.http("client", "http://192.168.0.10:8888/").startswith("curl exit")  # broken now
    fixed = lab.up()
    assert [a["verb"] for a in fixed["actions"]] == ["open-forward"]
    assert lab.http("client", "http://192.168.0.10:8888/") == "container1"
    assert lab.ping("container1", "203.0.113.10")
    assert lab.http("container1", "http://192.168.0.10:9999/") == "container2"
    assert lab.up()["changed"] is False
    if how == "iptables":
        rules = lab.x("host", "iptables -S FORWARD").stdout.splitlines()
        assert rules[0] == "-P FORWARD DROP" and all("bridgelab:" in r for r in rules[1:4])
