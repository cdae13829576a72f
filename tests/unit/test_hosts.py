"""Labs across hosts (issue #15), pure: validation of hosts:, each host's part, the sandbox
around them, the VXLAN devices a part wants."""

import copy

import pytest
import yaml

from orchestrator.lab import desired as plan
from orchestrator.lab import spec
from orchestrator.lab.spec import hosts

TWO = yaml.safe_load(open("examples/two-hosts.yaml"))


def problems(mutate) -> str:
    d = copy.deepcopy(TWO)
    mutate(d)
    with pytest.raises(spec.SpecError) as e:
        spec.validate(d, "mh.yaml")
    return "\n".join(f"{f}: {m} — {fix}" for f, m, fix in e.value.problems)


def test_bad_hosts_are_named_with_the_fix():
    assert "containers[0].host: no host named 'h9'" in problems(lambda d: d["containers"][0].update(host="h9"))
    assert "containers[1].host: missing" in problems(lambda d: d["containers"][1].pop("host"))
    assert "uplink.address: given beside hosts:" in problems(lambda d: d["uplink"].update(address="192.168.0.10/24"))
    assert "hosts[1].address: 192.168.0.11 is also hosts[0]'s" in problems(
        lambda d: d["hosts"][1].update(address="192.168.0.11/24"))
    assert "on different networks" in problems(lambda d: d["hosts"][1].update(address="10.0.0.12/24"))
    assert "host name a is also a node's name" in problems(lambda d: d["hosts"][1].update(name="a"))
    assert "hosts[0].name: 'H-1' is not a host name" in problems(lambda d: d["hosts"][0].update(name="H-1"))


def test_a_link_between_hosts_is_refused():
    def link(d):
        d["links"] = [{"endpoints": ["a:eth9", "b:eth9"], "addresses": ["10.9.0.1/30", "10.9.0.2/30"]}]
    assert "a runs on h1 and b on h2" in problems(link)


def test_each_host_s_part_holds_its_own_share_with_the_others_as_vxlan_peers():
    s = spec.validate(copy.deepcopy(TWO), "mh.yaml")
    p1, p2 = hosts.part(s, "h1"), hosts.part(s, "h2")
    assert (p1.lab, p2.lab) == ("mh.h1", "mh.h2")
    assert [c.name for c in p1.containers] == ["a"] and [c.name for c in p2.containers] == ["b"]
    (n1,), (n2,) = p1.networks, p2.networks
    assert n1.vni == n2.vni >= hosts.VNI_BASE and n1.mtu == 1450
    assert [str(x) for x in n1.peers] == ["192.168.0.12"] and [str(x) for x in n2.peers] == ["192.168.0.11"]
    assert p1.ports == () and [p.container for p in p2.ports] == ["b"]
    assert str(p1.uplink.address) == "192.168.0.11/24" and str(p2.uplink.address) == "192.168.0.12/24"
    # expectations: each host checks its own containers', with the others named by address
    assert {e.name: e.to for e in p1.expect} == {"a-b": "172.20.0.20", "a-out": "203.0.113.10"}
    assert [e.name for e in hosts.world_expect(s)] == ["lan-8080"]


def test_the_part_wants_a_vxlan_port_and_the_same_gateway_mac_everywhere():
    s = spec.validate(copy.deepcopy(TWO), "mh.yaml")
    d1, d2 = (plan.desired(hosts.part(s, h), plan.HOST) for h in ("h1", "h2"))
    (x1,), (x2,) = d1.vxlans, d2.vxlans
    assert (x1.name, x1.master, x1.dev, x1.port, str(x1.local)) == (f"vx{x1.vni}", "brfront", "ens33", 4789,
                                                                    "192.168.0.11")
    assert (None, x1.name) in {(u.ns, u.name) for u in d1.up}
    assert d1.bridges[0].mac == d2.bridges[0].mac
    assert d1.host_name == "h1"
    with pytest.raises(ValueError):
        plan.desired(s, plan.HOST)   # the whole lab is never one host's


def test_the_sandbox_builds_the_hosts_as_machines_on_the_lan():
    s = spec.validate(copy.deepcopy(TWO), "mh.yaml")
    w = plan.desired(s, plan.SANDBOX)
    assert {"blm-mh-h1", "blm-mh-h2"} <= {n.name for n in w.namespaces}
    ups = {(v.a.ns, v.a.name, v.b.name) for v in w.veths}
    assert ("blm-mh-h1", "ens33", "p-h1") in ups and ("blm-mh-h2", "ens33", "p-h2") in ups
    assert w.nodes["a"] == "bl-mh.h1-a" and w.nodes["h2"] == "blm-mh-h2"
    assert w.tables == () and w.services == ()   # every host's own, in its part
