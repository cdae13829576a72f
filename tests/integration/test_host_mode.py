"""Host mode, run inside a namespace that plays a real lab host (never the machine's own)."""

import json
import secrets

import pytest

from tests.conftest import sh

pytestmark = pytest.mark.kernel


@pytest.fixture
def realhost(make_lab):
    """A namespace with a real-looking uplink ens33 192.168.0.10/24 to an upstream router
    namespace (192.168.0.2), a foreign link and a foreign nft table: an admin's host."""
    tag = secrets.token_hex(3)
    host, upstream = f"blt{tag}-h", f"blt{tag}-u"
    for n in (host, upstream):
        sh(["ip", "netns", "add", n])
    try:
        sh(["ip", "-n", host, "link", "add", "ens33", "type", "veth", "peer", "name", "eth0", "netns", upstream])
        sh(["ip", "-n", host, "addr", "add", "192.168.0.10/24", "dev", "ens33"])
        sh(["ip", "-n", upstream, "addr", "add", "192.168.0.2/24", "dev", "eth0"])
        for n, dev in ((host, "ens33"), (upstream, "eth0"), (host, "lo"), (upstream, "lo")):
            sh(["ip", "-n", n, "link", "set", dev, "up"])
        sh(["ip", "-n", host, "route", "add", "default", "via", "192.168.0.2"])
        sh(["ip", "-n", host, "link", "add", "stranger0", "type", "veth", "peer", "name", "stranger1"])
        sh(["ip", "netns", "exec", host, "nft", "add table inet admin; add chain inet admin c { type filter hook forward priority 0; }"])
        sh(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
        sh(["ip", "netns", "exec", host, "iptables", "-P", "FORWARD", "DROP"])  # as Docker leaves it
        yield host, upstream
    finally:
        for n in (host, upstream):
            sh(["ip", "netns", "del", n], check=False)


def test_host_mode_builds_in_the_current_namespace_and_down_restores_it(make_lab, realhost):
    host, upstream = realhost
    lab = make_lab(up=False)
    inside = ("nsenter", f"--net=/run/netns/{host}")
    try:
        out = lab.up("--host", prefix=inside)
        assert out["changed"]
        links = {x["ifname"]: x for x in json.loads(sh(["ip", "-n", host, "-j", "-d", "link"]).stdout)}
        assert links["br0"]["ifalias"].startswith(f"bridgelab:{lab.name}:")
        assert links["veth1"]["master"] == "br0" and links["veth1"]["ifalias"].startswith("bridgelab:")
        assert not links["ens33"].get("ifalias"), "the admin's uplink is not ours"
        assert sh(["ip", "netns", "exec", host, "sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        # containers reach the upstream router through MASQUERADE; the LAN reaches published ports
        assert sh(["ip", "netns", "exec", lab.ns("container1"), "ping", "-c1", "-W1", "192.168.0.2"], check=False).returncode == 0
        r = sh(["ip", "netns", "exec", upstream, "curl", "-s", "-m3", "http://192.168.0.10:8888/"], check=False)
        assert r.stdout.strip() == "container1"
        r = sh([*inside, "curl", "-s", "-m3", "http://127.0.0.1:9999/"], check=False)
        assert r.stdout.strip() == "container2"
        again = lab.up("--host", prefix=inside)
        assert again["changed"] is False
        st = json.loads(lab.cli("status", "--json", prefix=inside).stdout)
        assert st["mode"] == "host" and st["up"] and st["drift"] == []
    finally:
        lab.cli("down", "--lab", lab.name, prefix=inside, check=False)
    links = {x["ifname"] for x in json.loads(sh(["ip", "-n", host, "-j", "link"]).stdout)}
    assert links == {"lo", "ens33", "stranger0", "stranger1"}
    tables = sh(["ip", "netns", "exec", host, "nft", "list", "tables"]).stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table inet admin", "table ip filter"]
    forward_rules = sh(["ip", "netns", "exec", host, "iptables", "-S", "FORWARD"]).stdout.split("\n")
    assert [r for r in forward_rules if r] == ["-P FORWARD DROP"], "our accepts are gone, the policy is the admin's"
    assert sh(["ip", "netns", "exec", host, "sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    route = json.loads(sh(["ip", "-n", host, "-j", "route", "show", "default"]).stdout)
    assert route[0]["gateway"] == "192.168.0.2", "the admin's default route is untouched"


def test_a_strangers_bridge_is_a_conflict_and_nothing_is_applied(make_lab, realhost):
    host, _ = realhost
    sh(["ip", "-n", host, "link", "add", "br0", "type", "bridge"])
    lab = make_lab(up=False)
    r = lab.cli("up", "--host", prefix=("nsenter", f"--net=/run/netns/{host}"), check=False)
    assert r.returncode == 3 and "br0" in r.stderr and "nothing was applied" in r.stderr
    assert not [n for n in sh("ip netns list").stdout.split() if n.startswith(f"bl-{lab.name}-")]
    assert "bridgelab" not in sh(["ip", "netns", "exec", host, "nft", "list", "ruleset"]).stdout
    links = {x["ifname"] for x in json.loads(sh(["ip", "-n", host, "-j", "link"]).stdout)}
    assert "veth1" not in links


def test_bad_topology_exits_2_and_touches_nothing(make_lab, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lab: tbad\nbridge: {subnet: 10.0.0.0/24}\nuplink: {name: e0, address: 10.0.0.5/24}\ncontainers: []\n")
    lab = make_lab(up=False)
    r = lab.cli("up", "-f", str(bad), check=False)
    assert r.returncode == 2
    assert "uplink.address: 10.0.0.0/24 overlaps bridge.subnet" in r.stderr and "fix:" in r.stderr
    assert not [n for n in sh("ip netns list").stdout.split() if n.startswith("bl-tbad-")]
    r = lab.cli("up", "-f", str(tmp_path / "missing.yaml"), "--json", check=False)
    assert r.returncode == 2 and json.loads(r.stdout)["error"] == "invalid-topology"
