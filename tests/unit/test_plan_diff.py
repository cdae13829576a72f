"""Desired state and the diff against an observed snapshot: pure, no kernel."""

import ipaddress

import pytest

from orchestrator.errors import ConflictError
from orchestrator.lab import desired as plan
from orchestrator.lab import resources as m
from orchestrator.lab import spec
from orchestrator.lab.naming import ROUTE_PROTO, table_name
from orchestrator.reconcile.diff import diff
from orchestrator.reconcile.kinds.link_up import peers_to_await
from orchestrator.reconcile.kinds.nft_table import text_sha
from orchestrator.reconcile.snapshot import Link, NsState, Observed, RouteEntry
from orchestrator.reconcile.state import State

SEED = spec.load("examples/seed.yaml")


def whole(d: m.Desired) -> tuple[Observed, State]:
    """An observed snapshot in which everything desired exists exactly."""
    ns: dict = {}
    idx: dict = {}

    def link(n, name, kind, master=None, hairpin=False):
        st = ns.setdefault(n, NsState.fresh())
        i = len(st.links) + 1 if name != "lo" else 1
        st.links[name] = Link(i, name, kind, True, master, None, None, hairpin)
        idx[(n, name)] = i
        return st.links[name]

    for n in d.managed_ns():
        link(n, "lo", None)
    for b in d.bridges:
        link(b.ns, b.name, "bridge")
    for v in d.veths:
        a = link(v.a.ns, v.a.name, "veth", idx.get((v.a.ns, v.a.master)), v.a.hairpin)
        b = link(v.b.ns, v.b.name, "veth")
        a.peer_index, b.peer_index = b.index, a.index
    for a in d.addresses:
        ns[a.ns].addresses.add((a.dev, a.iface))
    for r in d.routes:
        ns[r.ns].routes.append(RouteEntry(r.dst, r.gateway, idx[(r.ns, r.dev)], ROUTE_PROTO))
    t = d.tables[0]
    st = State(lab=d.lab, mode=d.mode, nft={text_sha(t.text): "fp"})
    obs = Observed(
        namespaces={n.name for n in d.namespaces},
        ns=ns,
        parts={"sysctl": {(s.ns, s.key): s.value for s in d.sysctls} | {"claimed": {s.key for s in d.sysctls}},
               "nft": {(t.ns, t.family, t.name): "fp"},
               "service": {s.name: "running" for s in d.services}},
    )
    return obs, st


def verbs(acts):
    return sorted((a.verb, a.target) for a in acts)


def test_seed_sandbox_desired_keeps_the_seeds_names():
    d = plan.desired(SEED, plan.SANDBOX)
    assert d.host_ns == "bl-seed-host"
    assert {n.node for n in d.namespaces} == {"host", "container1", "container2", "lan", "gateway", "client", "internet"}
    pairs = {(v.a.name, v.b.name, v.b.ns) for v in d.veths}
    assert ("veth1", "eth1", "bl-seed-container1") in pairs and ("veth2", "eth2", "bl-seed-container2") in pairs
    assert m.Address("bl-seed-host", "br0", ipaddress.IPv4Interface("172.168.1.1/24")) in d.addresses
    assert m.Address("bl-seed-host", "ens33", ipaddress.IPv4Interface("192.168.0.10/24")) in d.addresses
    assert m.Route("bl-seed-container1", plan.ANY, ipaddress.IPv4Address("172.168.1.1"), "eth1") in d.routes
    # the gateway has no route back to the lab subnet: the seed's step 4
    assert not [r for r in d.routes if r.ns == "bl-seed-gateway"]
    assert all(s.why for s in d.sysctls), "every sysctl says why"
    assert d.tables[0].name == table_name("seed") and d.tables[0].ns == "bl-seed-host"


def test_host_mode_touches_no_uplink():
    d = plan.desired(SEED, plan.HOST)
    assert d.host_ns is None
    assert not [a for a in d.addresses if a.dev == "ens33"]
    assert not [r for r in d.routes if r.ns is None]
    assert {n.node for n in d.namespaces} == {"container1", "container2"}


def test_nothing_to_do_when_whole():
    d = plan.desired(SEED)
    obs, st = whole(d)
    assert diff(d, obs, st) == []


def test_fresh_builds_everything_in_phase_order():
    d = plan.desired(SEED)
    obs = Observed(set(), {})
    acts = diff(d, obs, State(lab="seed"))
    v = verbs(acts)
    assert ("create-ns", "bl-seed-container1") in v and ("create-veth", "veth1") in v
    assert ("set-hairpin", "veth1") in v and ("apply-table", "ip bridgelab_seed") in v
    assert len([a for a in acts if a.verb == "start-service"]) == 2


def test_deleted_host_veth_recreates_the_pair_and_only_what_hangs_off_it():
    d = plan.desired(SEED)
    obs, st = whole(d)
    del obs.ns["bl-seed-host"].links["veth1"]
    acts = diff(d, obs, st)
    assert verbs(acts) == sorted([
        ("delete-link", "eth1"), ("create-veth", "veth1"), ("set-hairpin", "veth1"), ("set-up", "eth1"),
        ("add-address", "eth1"), ("replace-route", "0.0.0.0/0")])


def test_flushed_address_and_down_port():
    d = plan.desired(SEED)
    obs, st = whole(d)
    obs.ns["bl-seed-container2"].addresses.clear()
    obs.ns["bl-seed-host"].links["veth2"].up = False
    assert verbs(diff(d, obs, st)) == [("add-address", "eth2"), ("set-up", "veth2")]


def test_deleted_container_namespace():
    d = plan.desired(SEED)
    obs, st = whole(d)
    obs.namespaces.discard("bl-seed-container1")
    del obs.ns["bl-seed-container1"]
    obs.parts["service"]["container1/http:80"] = "wrong-ns"
    v = verbs(diff(d, obs, st))
    assert ("create-ns", "bl-seed-container1") in v and ("delete-link", "veth1") in v
    assert ("create-veth", "veth1") in v and ("start-service", "container1/http:80") in v


def test_changed_nft_table_and_sysctl_drift():
    d = plan.desired(SEED)
    obs, st = whole(d)
    obs.parts["nft"][("bl-seed-host", "ip", "bridgelab_seed")] = "other"
    obs.parts["sysctl"][("bl-seed-host", "net.ipv4.ip_forward")] = "0"
    assert verbs(diff(d, obs, st)) == [("apply-table", "ip bridgelab_seed"), ("set-sysctl", "net.ipv4.ip_forward")]


def test_every_route_nobody_declared_is_removed_where_the_lab_owns_the_namespace():
    """Issue #11: a foreign route in a container's namespace (128.0.0.0/1 hijacking its traffic)
    was kept; in a namespace the lab owns outright the topology's routes are all its routes."""
    d = plan.desired(SEED)
    obs, st = whole(d)
    c1 = obs.ns["bl-seed-container1"]
    c1.routes.append(RouteEntry(ipaddress.IPv4Network("10.0.0.0/8"), None, 2, ROUTE_PROTO))
    c1.routes.append(RouteEntry(ipaddress.IPv4Network("128.0.0.0/1"), ipaddress.IPv4Address("172.168.1.12"), 2, 4))
    c1.routes.append(RouteEntry(ipaddress.IPv4Network("172.168.1.12/32"), None, None, 4, type=6))  # blackhole
    c1.routes.append(RouteEntry(plan.ANY, ipaddress.IPv4Address("172.168.1.1"), 2, 4, table=100))
    c1.routes.append(RouteEntry(plan.ANY, ipaddress.IPv4Address("172.168.1.254"), 2, 4, priority=50))
    c1.routes.append(RouteEntry(ipaddress.IPv4Network("172.168.1.0/24"), None, 2, 2))  # the kernel's: stays
    assert verbs(diff(d, obs, st)) == [("delete-route", "0.0.0.0/0"), ("delete-route", "0.0.0.0/0"),
                                       ("delete-route", "10.0.0.0/8"), ("delete-route", "128.0.0.0/1"),
                                       ("delete-route", "172.168.1.12/32")]


def test_a_wrong_default_route_is_replaced_not_deleted_and_added():
    d = plan.desired(SEED)
    obs, st = whole(d)
    c1 = obs.ns["bl-seed-container1"]
    c1.routes[:] = [RouteEntry(plan.ANY, ipaddress.IPv4Address("172.168.1.254"), 2, ROUTE_PROTO)]
    assert verbs(diff(d, obs, st)) == [("replace-route", "0.0.0.0/0")]


def test_in_a_shared_namespace_only_routes_through_the_labs_devices_are_its_business():
    d = plan.desired(SEED, plan.HOST)
    obs, st = whole(d)
    for link in obs.ns[None].links.values():
        link.alias = "bridgelab:seed:x"
    host = obs.ns[None]
    br0 = host.links["br0"].index
    host.links["ens33"] = Link(99, "ens33", None, True, None, None, None)
    host.routes += [RouteEntry(plan.ANY, ipaddress.IPv4Address("192.168.0.2"), 99, 4),  # the admin's default
                    RouteEntry(ipaddress.IPv4Network("10.9.0.0/16"), None, br0, 4),    # through our bridge
                    RouteEntry(ipaddress.IPv4Network("10.8.0.0/16"), None, 99, ROUTE_PROTO)]  # stamped, not ours
    # the route protocol is every lab's: a stamped route through a device that is not this lab's
    # belongs to another lab sharing the namespace (a multi-host sandbox's uplink route, issue #15)
    assert verbs(diff(d, obs, st)) == [("delete-route", "10.9.0.0/16")]


def test_addresses_nobody_declared_are_removed_from_the_labs_devices_only():
    """Issue #11: after a spec change .11 -> .21 both stayed; a container given another's address
    kept it."""
    d = plan.desired(SEED)
    obs, st = whole(d)
    c1, host = obs.ns["bl-seed-container1"], obs.ns["bl-seed-host"]
    c1.addresses |= {("eth1", ipaddress.IPv4Interface("172.168.1.21/24")),
                     ("eth1", ipaddress.IPv4Interface("172.168.1.12/24")),
                     ("lo", ipaddress.IPv4Interface("127.0.0.1/8")),          # the kernel's
                     ("lo", ipaddress.IPv4Interface("172.168.1.12/32"))}
    host.links["stranger0"] = Link(50, "stranger0", "veth", True, None, None, 51)
    host.addresses.add(("stranger0", ipaddress.IPv4Interface("10.50.0.1/24")))  # a stranger's link: not ours
    assert verbs(diff(d, obs, st)) == [("delete-address", "eth1"), ("delete-address", "eth1"),
                                       ("delete-address", "lo")]


def test_foreign_link_in_shared_namespace_is_a_conflict():
    d = plan.desired(SEED, plan.HOST)
    obs, st = whole(d)
    obs.ns[None].links["br0"].alias = None  # an admin's br0, not ours
    with pytest.raises(ConflictError, match="br0"):
        diff(d, obs, st)


def test_own_link_in_shared_namespace_is_fine():
    d = plan.desired(SEED, plan.HOST)
    obs, st = whole(d)
    for link in obs.ns[None].links.values():
        link.alias = "bridgelab:seed:x"
    assert diff(d, obs, st) == []


def test_foreign_forward_drop_chain_gets_our_accepts_once():
    from orchestrator.adapters.forward import Gate, wanted
    d = plan.desired(SEED)
    obs, st = whole(d)
    obs.parts["forward"] = {"bl-seed-host": [Gate("ip", "filter", "FORWARD", ours=0),
                                             Gate("inet", "fw", "fwd", ours=wanted(("br0",)))]}
    acts = diff(d, obs, st)
    assert verbs(acts) == [("open-forward", "ip filter FORWARD")]
    assert acts[0].payload[1].bridges == ("br0",)


def test_addresses_wait_only_for_the_peers_of_ends_set_up():
    d = plan.desired(SEED, "sandbox")
    obs, st = whole(d)
    del obs.ns["bl-seed-host"].links["veth1"]     # the pair is made anew: eth1 is set up
    obs.ns["bl-seed-host"].links["veth2"].up = False   # a port set down: veth2 is set up again
    waits = peers_to_await(d, diff(d, obs, st))
    # veth1 was created up before eth1 came up; eth2 was up before veth2 came up again
    assert waits == {"bl-seed-host": {"veth1"}, "bl-seed-container2": {"eth2"}}
    assert peers_to_await(d, diff(d, *whole(d))) == {}
