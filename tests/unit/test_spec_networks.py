"""Validation of networks, links, routes and netem (issue #13) and the desired state they make:
pure, no kernel."""

import copy

import pytest

from orchestrator.lab import desired as plan
from orchestrator.lab import spec
from orchestrator.lab.spec import SpecError
from tests.conftest import example

MULTI = example("multi-network.yaml")
ROUTERS = example("routers.yaml")


def problems(d) -> dict[str, str]:
    with pytest.raises(SpecError) as ei:
        spec.validate(d, "lab.yaml")
    return {f: m + " — " + x for f, m, x in ei.value.problems}


def mutated(base, fn):
    d = copy.deepcopy(base)
    fn(d)
    return d


BAD = [
    ("overlapping-subnets", MULTI, lambda d: d["networks"][1].update(subnet="172.20.0.0/16"),
     "networks[1].subnet", "overlaps"),
    ("address-outside-network", MULTI, lambda d: d["containers"][0]["networks"][0].update(address="172.21.0.99"),
     "containers[0].networks[0].address", "outside networks[0].subnet"),
    ("unknown-network", MULTI, lambda d: d["containers"][1]["networks"][0].update(network="bak"),
     "containers[1].networks[0].network", "no network named 'bak'"),
    ("same-network-twice", MULTI, lambda d: d["containers"][0]["networks"].append({"network": "front", "address": "172.20.0.99"}),
     "containers[0].networks[2].network", "already on network"),
    ("publish-internal", MULTI, lambda d: d["ports"].append({"host_port": 5432, "to": "db:5432"}),
     "ports[2].to", "internal"),
    ("duplicate-bridge", MULTI, lambda d: d["networks"][1].update(bridge="brfront"), "networks[1].bridge", "already"),
    ("network-without-subnet", MULTI, lambda d: d["networks"][2].pop("subnet"), "networks[2].subnet", "needs a subnet"),
    ("bridge-and-networks", MULTI, lambda d: d.update(bridge={"subnet": "10.9.0.0/24"}), "networks", "beside bridge"),
    ("link-unknown-container", ROUTERS, lambda d: d["links"][0].update(endpoints=["r1:eth1", "r9:eth1"]),
     "links[0].endpoints[1]", "no container named 'r9'"),
    ("link-clashes-attachment", ROUTERS, lambda d: d["links"][0].update(endpoints=["r1:eth0", "r2:eth1"]),
     "links[0].endpoints[0]", "already has an interface eth0"),
    ("link-same-container", ROUTERS, lambda d: d["links"][1].update(endpoints=["r2:eth5", "r2:eth6"]),
     "links[1].endpoints", "both ends are on r2"),
    ("link-addresses-apart", ROUTERS, lambda d: d["links"][0].update(addresses=["10.0.12.1/30", "10.0.13.2/30"]),
     "links[0].addresses[1]", "not on the network"),
    ("route-via-unreachable", ROUTERS, lambda d: d["containers"][0]["routes"].append({"dst": "10.9.0.0/16", "via": "10.0.23.1"}),
     "containers[0].routes[1].via", "on no network r1 has an interface on"),
    ("two-defaults", ROUTERS, lambda d: d["containers"][1]["routes"].append({"dst": "0.0.0.0/0", "via": "10.0.23.2"}),
     "containers[1].routes[1].dst", "second default route"),
    ("netem-bad-delay", ROUTERS, lambda d: d["links"][0]["netem"].update(delay="20 parsecs"),
     "links[0].netem.delay", "not a time"),
    ("netem-loss-over-100", ROUTERS, lambda d: d["links"][0]["netem"].update(loss="150%"),
     "links[0].netem.loss", "0% to 100%"),
    ("netem-rate-unit", ROUTERS, lambda d: d["links"][0]["netem"].update(rate="fast"), "links[0].netem.rate", "rate"),
    ("netem-jitter-over-delay", ROUTERS, lambda d: d["links"][0]["netem"].update(jitter="50ms"),
     "links[0].netem.jitter", "more than the delay"),
    ("netem-at-unknown-end", ROUTERS, lambda d: d["links"][0]["netem"].update(at="r3:eth1"),
     "links[0].netem.at", "not one of this link's endpoints"),
    ("netem-empty", ROUTERS, lambda d: d["links"][0].update(netem={}), "links[0].netem", "without any impairment"),
    ("mtu-too-small", MULTI, lambda d: d["networks"][0].update(mtu=100), "networks[0].mtu", "MTU"),
    ("link-address-taken", ROUTERS, lambda d: d["links"][1].update(addresses=["10.0.12.1/30", "10.0.12.2/30"]),
     "links[1].addresses[0]", "already used"),
    ("netem-at-unknown-side", MULTI, lambda d: d["containers"][2]["networks"][0]["netem"].update(at="web"),
     "containers[2].networks[0].netem.at", "neither"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_networks_and_links_name_field_and_fix(case):
    _, base, fn, field, words = case
    got = problems(mutated(base, fn))
    assert field in got, got
    assert words in got[field], got[field]


def test_the_examples_are_valid_and_plan():
    m = spec.validate(copy.deepcopy(MULTI), "m.yaml")
    assert [n.name for n in m.networks] == ["front", "back", "side"]
    web = m.container("web")
    assert [(a.network, a.interface, a.host_interface) for a in web.attachments] == \
        [("front", "eth0", "veth1"), ("back", "eth1", "veth1-1")]
    d = plan.desired(m, plan.SANDBOX)
    assert {b.name for b in d.bridges} >= {"brfront", "brback", "brside"}
    routes = {(r.ns, str(r.dst), str(r.gateway)) for r in d.routes}
    assert ("bl-mn-web", "0.0.0.0/0", "172.20.0.1") in routes      # its first non-internal network
    assert not [r for r in d.routes if r.ns == "bl-mn-db"]          # only on an internal network
    text = d.tables[0].text
    assert 'iifname . oifname { "brfront" . "brback"' in text and "back is internal: no way out" in text
    assert "172.21.0.0/24 oifname" not in text                      # internal: no masquerade
    r = spec.validate(copy.deepcopy(ROUTERS), "r.yaml")
    d = plan.desired(r, plan.SANDBOX)
    assert {(s.ns, s.key) for s in d.sysctls} >= {("bl-rt-r1", "net.ipv4.ip_forward"), ("bl-rt-r2", "net.ipv4.ip_forward")}
    assert ("bl-rt-r3", "0.0.0.0/0", "10.0.23.1") in {(x.ns, str(x.dst), str(x.gateway)) for x in d.routes}
    imps = {i.name: i for i in d.impairments}
    assert set(imps) == {"r1:eth1 -> r2:eth1", "r2:eth1 -> r1:eth1"}  # both directions, the second link none
    em = imps["r1:eth1 -> r2:eth1"].netem
    assert (em.delay_us, em.jitter_us, em.loss_pct, em.rate_bps) == (20000, 2000, 0.5, 100_000_000)


def test_netem_at_one_end_impairs_one_direction():
    r = mutated(ROUTERS, lambda d: d["links"][0]["netem"].update(at="r2:eth1"))
    d = plan.desired(spec.validate(r, "r.yaml"), plan.SANDBOX)
    assert [i.name for i in d.impairments] == ["r2:eth1 -> r1:eth1"]


def test_netem_on_an_attachment_both_ways_or_at_one_side():
    d = plan.desired(spec.validate(copy.deepcopy(MULTI), "m.yaml"), plan.SANDBOX)
    assert sorted(i.name for i in d.impairments) == ["other:eth0 -> side", "side -> other:eth0"]
    m = mutated(MULTI, lambda d: d["containers"][2]["networks"][0]["netem"].update(at="other"))
    d = plan.desired(spec.validate(m, "m.yaml"), plan.SANDBOX)
    (i,) = d.impairments
    assert (i.name, i.peer_port, i.port) == ("other:eth0 -> side", True, False)


def test_a_seed_form_file_is_one_network_named_bridge():
    s = spec.load("examples/seed.yaml")
    assert [(n.name, n.bridge) for n in s.networks] == [("bridge", "br0")]
    assert s.seed_form and not s.ipv6
