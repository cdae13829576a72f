"""`bridgelab explain` on the real kernel: the sandbox lab broken one way per test (no daemon, so
nothing heals it), the verdict naming the cause; and a healthy lab without false alarms."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kernel


def explain(lab, *args) -> tuple[int, dict]:
    r = subprocess.run([sys.executable, "-m", "orchestrator", "explain", "-f", lab.path, "--json", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def human(lab, *args) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "orchestrator", "explain", "-f", lab.path, *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=90)
    return r.returncode, r.stdout


@pytest.mark.parametrize("src,dst,target", [
    ("container1", "gateway", None), ("container1", "container2", None), ("container1", "internet", None),
    ("host", "container1", None),
    ("client", "host:8888", "container1"), ("host", "host:9999", "container2"),
    ("host", "127.0.0.1:8888", "container1"), ("container1", "host:9999", "container2"),
])
def test_healthy_lab_every_flow_works(lab, src, dst, target):
    code, r = explain(lab, src, dst)
    assert code == 0 and r["works"] and r["cause"] is None, r["verdict"]
    assert r["static"] == []
    if target:
        assert r["flow"]["target_node"] == target


def test_ip_forward_off(lab):
    lab.x("host", "sysctl -qw net.ipv4.ip_forward=0")
    code, r = explain(lab, "container1", "gateway")
    assert code == 1 and r["cause"] == "ip_forward" and "ip_forward=0" in r["verdict"]
    assert "sysctl -w net.ipv4.ip_forward=1" in r["fix"]
    hcode, text = human(lab, "container1", "gateway")
    assert hcode == 1 and "BROKEN: host does not forward" in text


def test_masquerade_missing_the_seeds_case(lab):
    table = f"bridgelab_{lab.name}"
    listing = lab.x("host", f"nft -a list chain ip {table} nat_postrouting").stdout
    handle = re.search(r'oifname "ens33" masquerade .*# handle (\d+)', listing).group(1)
    lab.x("host", f"nft delete rule ip {table} nat_postrouting handle {handle}")
    code, r = explain(lab, "container1", "gateway")
    assert code == 1 and r["cause"] == "masquerade_missing"
    assert "left ens33 with source 172.168.1.11 and no reply came back" in r["verdict"]
    assert r["live"]["result"] == "timeout"


def test_filter_rule_named_with_table_chain_and_handle(lab):
    lab.x("host", "nft -f - <<'EOF'\ntable inet bltest_explain {\n chain fw {\n  type filter hook forward priority 0;\n"
                  "  ip daddr 192.168.0.2 icmp type echo-request drop\n }\n}\nEOF")
    code, r = explain(lab, "container1", "gateway")
    assert code == 1 and r["cause"] == "filter_rule", r
    rule = r["rule"]
    assert (rule["family"], rule["table"], rule["chain"]) == ("inet", "bltest_explain", "fw")
    assert rule["rule"] == "ip daddr 192.168.0.2 icmp type echo-request drop" and isinstance(rule["handle"], int)
    assert f"handle {rule['handle']}" in r["fix"] and "forward" in r["verdict"]


def test_published_port_from_the_host_without_local_dnat(lab):
    table = f"bridgelab_{lab.name}"
    listing = lab.x("host", f"nft -a list chain ip {table} nat_output").stdout
    for handle in re.findall(r"jump publish.*# handle (\d+)", listing):
        lab.x("host", f"nft delete rule ip {table} nat_output handle {handle}")
    code, r = explain(lab, "host", "host:8888")
    assert code == 1 and r["cause"] == "local_dnat_missing" and "refused curl" in r["verdict"]
    assert r["live"]["result"] == "refused"


def test_container_default_route_missing(lab):
    lab.x("container1", "ip route del default")
    code, r = explain(lab, "container1", "gateway")
    assert code == 1 and r["cause"] == "default_route_missing" and "route add default via 172.168.1.1" in r["fix"]


def test_veth_down(lab):
    lab.x("host", "ip link set veth1 down")
    code, r = explain(lab, "container1", "gateway")
    assert code == 1 and r["cause"] == "link_down" and "veth1" in r["verdict"] and "set veth1 up" in r["fix"]


def test_wrong_gateway_in_the_container(lab):
    lab.x("container1", "ip route replace default via 172.168.1.254 dev eth1")
    code, r = explain(lab, "container1", "gateway")
    assert code == 1 and r["cause"] == "wrong_gateway"
    assert "172.168.1.254" in r["verdict"] and "route replace default via 172.168.1.1" in r["fix"]


def test_service_not_listening_is_reset(lab):
    pids = subprocess.run(["ip", "netns", "pids", lab.ns("container1")], capture_output=True, text=True).stdout.split()
    killed = 0
    for pid in pids:  # the lab's own service, by its pid; nothing else runs there
        try:
            cmd = open(f"/proc/{pid}/cmdline").read()
        except FileNotFoundError:
            continue
        if "http.server" in cmd:
            os.kill(int(pid), signal.SIGTERM)
            killed += 1
    assert killed
    code, r = explain(lab, "client", "host:8888")
    assert code == 1 and r["cause"] == "not_listening" and "(RST)" in r["verdict"]
    assert r["live"]["result"] == "refused"


def test_rp_filter_drops_an_asymmetric_path(lab):
    # the test's own asymmetric route: the way back to the client leaves by the bridge. (The
    # client learns the host's MAC first: rp_filter would stop the ARP exchange too.)
    assert lab.ping("client", "192.168.0.10")
    lab.x("host", "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.ens33.rp_filter=1")
    lab.x("host", "ip route add 192.168.0.100/32 dev br0")
    code, r = explain(lab, "client", "host:8888")
    assert code == 1 and r["cause"] == "rp_filter" and "leaves by br0" in r["verdict"]
    drops = [h for p in r["live"]["packets"] for h in p["hops"] if h.get("drop_reason")]
    assert any(h["drop_reason"] == "IP_RPFILTER" and h["node"] == "host" for h in drops)


@pytest.mark.parametrize("args,msg", [
    (("nosuchnode", "gateway"), "is not a node"),
    (("container1", "not-an-address"), "neither a node"),
    (("container1", "host:99999"), "1-65535"),
    (("container1", "gateway", "--proto", "tcp"), "needs a port"),
])
def test_bad_input_exit_2(lab, args, msg):
    r = subprocess.run([sys.executable, "-m", "orchestrator", "explain", "-f", lab.path, *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and msg in r.stderr
