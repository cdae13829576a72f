"""Spec -> desired kernel state. Pure: no I/O, so every decision here has a unit test.

Sandbox wiring (all namespaces named ``bl-<lab>-<node>``; nothing touches the machine's own):

    internet 203.0.113.10 ── gateway 203.0.113.1 | 192.168.0.2 ──┐
                                                                  lan0 (switch, in "lan")
    client 192.168.0.100 ─────────────────────────────────────────┤
    host: ens33 192.168.0.10 ─────────────────────────────────────┘
          br0 172.168.1.1 ── veth1 ═ eth1 container1, veth2 ═ eth2 container2

Host mode applies the same host part to the namespace bridgelab runs in, with the uplink being a
real interface the admin owns (we never create, address or route it).

One builder per part of the topology (the host's bridge, the containers, the sandbox's
stand-ins); each adds the resources that part implies to one accumulator.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import resources as r
from .naming import alias, mac, ns_name, table_name, www_dir
from .nft_table import render_table
from .spec import Service, Spec

SANDBOX = "sandbox"
HOST = "host"
MODES = (SANDBOX, HOST)
ANY = ipaddress.IPv4Network("0.0.0.0/0")
LAN_BRIDGE = "lan0"
SCENERY = ("gateway", "client", "internet", "lan")  # the sandbox's stand-ins, in this order


@dataclass
class _Acc:
    """The resources found so far, by kind."""

    lab: str
    host_ns: str | None
    namespaces: list[r.Namespace] = field(default_factory=list)
    bridges: list[r.Bridge] = field(default_factory=list)
    veths: list[r.Veth] = field(default_factory=list)
    up: list[r.LinkUp] = field(default_factory=list)
    addresses: list[r.Address] = field(default_factory=list)
    routes: list[r.Route] = field(default_factory=list)
    sysctls: list[r.Sysctl] = field(default_factory=list)
    tables: list[r.NftTable] = field(default_factory=list)
    forward: list[r.ForwardAccess] = field(default_factory=list)
    services: list[r.ServiceProc] = field(default_factory=list)
    nodes: dict[str, str | None] = field(default_factory=dict)

    def node_ns(self, node: str) -> str:
        name = ns_name(self.lab, node)
        self.namespaces.append(r.Namespace(name, node))
        self.up.append(r.LinkUp(name, "lo"))
        self.nodes[node] = name
        return name

    def links_up(self, *ends: tuple[str | None, str]) -> None:
        self.up += [r.LinkUp(ns, name) for ns, name in ends]


def desired(spec: Spec, mode: str = SANDBOX) -> r.Desired:
    if mode not in MODES:
        raise ValueError(mode)
    host_ns = ns_name(spec.lab, "host") if mode == SANDBOX else None
    acc = _Acc(spec.lab, host_ns, nodes={"host": host_ns})
    if mode == SANDBOX:
        acc.node_ns("host")
    _bridge(acc, spec)
    _containers(acc, spec)
    _host_sysctls(acc, spec)
    if mode == SANDBOX:
        _sandbox(acc, spec)
    acc.tables.append(r.NftTable(host_ns, "ip", table_name(spec.lab), render_table(spec)))
    acc.forward.append(r.ForwardAccess(host_ns, tuple(b.name for b in acc.bridges if b.ns == host_ns)))
    return r.Desired(
        lab=spec.lab, mode=mode, host_ns=host_ns, namespaces=tuple(acc.namespaces), bridges=tuple(acc.bridges),
        veths=tuple(acc.veths), up=tuple(acc.up), addresses=tuple(acc.addresses), routes=tuple(acc.routes),
        sysctls=tuple(acc.sysctls), tables=tuple(acc.tables), forward=tuple(acc.forward),
        services=tuple(acc.services), nodes=acc.nodes, uplink=spec.uplink.name,
    )


def _bridge(acc: _Acc, spec: Spec) -> None:
    """The bridge, like docker0: the containers' gateway."""
    br = spec.bridge
    acc.bridges.append(r.Bridge(acc.host_ns, br.name, alias(spec.lab, "bridge"), mac(spec.lab, "host", br.name)))
    acc.links_up((acc.host_ns, br.name))
    acc.addresses.append(r.Address(acc.host_ns, br.name, ipaddress.IPv4Interface(f"{br.gateway}/{br.subnet.prefixlen}")))


def _containers(acc: _Acc, spec: Spec) -> None:
    """A namespace each, a veth pair into the bridge, a default route via the bridge."""
    lab, br = spec.lab, spec.bridge
    for c in spec.containers:
        cns = acc.node_ns(c.name)
        acc.veths.append(r.Veth(
            # hairpin: a container reaching its own published port through the host address is
            # DNATed by br_netfilter while bridged, and sent back out the port it came in by
            a=r.VethEnd(acc.host_ns, c.host_interface, master=br.name, hairpin=bool(spec.ports),
                        mac=mac(lab, "host", c.host_interface)),
            b=r.VethEnd(cns, c.interface, mac=mac(lab, c.name, c.interface)),
            alias=alias(lab, f"veth:{c.name}"),
        ))
        acc.links_up((acc.host_ns, c.host_interface), (cns, c.interface))
        acc.addresses.append(r.Address(cns, c.interface, ipaddress.IPv4Interface(f"{c.address}/{br.subnet.prefixlen}")))
        acc.routes.append(r.Route(cns, ANY, br.gateway, c.interface))
        acc.services += [service(lab, c.name, cns, s, i) for i, s in enumerate(c.services)]


def _host_sysctls(acc: _Acc, spec: Spec) -> None:
    """Each one justified."""
    acc.sysctls.append(r.Sysctl(acc.host_ns, "net.ipv4.ip_forward", "1",
                                "the host routes between the bridge and the uplink: without it the seed's "
                                "containers cannot leave the host (its step 4)"))
    if spec.ports:
        acc.sysctls.append(r.Sysctl(
            acc.host_ns, f"net.ipv4.conf.{spec.bridge.name}.route_localnet", "1",
            "a connection to 127.0.0.1:PORT is DNATed to a container and leaves by the bridge with source "
            "127.0.0.1; without this the kernel drops it as a martian (the seed's refused curl). The "
            "raw-table rule keeps 127/8 unreachable from outside (moby#45610)"))


def _sandbox(acc: _Acc, spec: Spec) -> None:
    """The seed's LAN, gateway, Windows client and the internet stand-in."""
    lab, up_, sb, host_ns = spec.lab, spec.uplink, spec.sandbox, acc.host_ns
    lan, gw, cl, inet = (acc.node_ns(n) for n in ("lan", "gateway", "client", "internet"))
    acc.bridges.append(r.Bridge(lan, LAN_BRIDGE, alias(lab, "lan"), mac(lab, "lan", LAN_BRIDGE)))
    acc.links_up((lan, LAN_BRIDGE))
    for peer_node, peer_ns, peer_if, port_if, role in (
        ("host", host_ns, up_.name, "p-host", "uplink"),
        ("gateway", gw, "eth0", "p-gateway", "gateway-lan"),
        ("client", cl, "eth0", "p-client", "client-lan"),
    ):
        acc.veths.append(r.Veth(a=r.VethEnd(lan, port_if, master=LAN_BRIDGE, mac=mac(lab, "lan", port_if)),
                                b=r.VethEnd(peer_ns, peer_if, mac=mac(lab, peer_node, peer_if)),
                                alias=alias(lab, role)))
        acc.links_up((lan, port_if), (peer_ns, peer_if))
    acc.addresses.append(r.Address(host_ns, up_.name, up_.address))
    acc.routes.append(r.Route(host_ns, ANY, up_.gateway, up_.name))
    gw_lan = ipaddress.IPv4Interface(f"{up_.gateway}/{up_.address.network.prefixlen}")
    acc.addresses += [r.Address(gw, "eth0", gw_lan), r.Address(gw, "eth1", sb.upstream),
                      r.Address(cl, "eth0", sb.client), r.Address(inet, "eth0", sb.internet)]
    acc.veths.append(r.Veth(a=r.VethEnd(gw, "eth1", mac=mac(lab, "gateway", "eth1")),
                            b=r.VethEnd(inet, "eth0", mac=mac(lab, "internet", "eth0")), alias=alias(lab, "upstream")))
    acc.links_up((gw, "eth1"), (inet, "eth0"))
    acc.routes += [r.Route(cl, ANY, up_.gateway, "eth0"), r.Route(inet, ANY, sb.upstream.ip, "eth0")]
    # The gateway routes LAN <-> internet but, like the seed's upstream router, has no route
    # back to the lab subnet: that is why the seed's pings got no reply without MASQUERADE.
    acc.sysctls.append(r.Sysctl(gw, "net.ipv4.ip_forward", "1",
                                "the gateway is a router between the LAN and the internet stand-in"))


def service(lab: str, node: str, ns: str | None, s: Service, index: int = 0) -> r.ServiceProc:
    if s.kind == "http":
        # The seed runs `python3 -m http.server 80` in each container. We serve a directory of our
        # own (naming the node) rather than whatever the daemon's cwd happens to be.
        argv = ("python3", "-m", "http.server", str(s.port))
        root = www_dir(lab, node)
        return r.ServiceProc(node, ns, f"{node}/http:{s.port}", argv, root, s.port, http_root=root)
    return r.ServiceProc(node, ns, f"{node}/{s.name}", tuple(s.argv), "/", s.port)
