"""Spec -> desired kernel state. Pure: no I/O, so every decision here has a unit test.

Sandbox wiring (all namespaces named ``bl-<lab>-<node>``; nothing touches the machine's own):

    internet 203.0.113.10 ── gateway 203.0.113.1 | 192.168.0.2 ──┐
                                                                  lan0 (switch, in "lan")
    client 192.168.0.100 ─────────────────────────────────────────┤
    host: ens33 192.168.0.10 ─────────────────────────────────────┘
          br0 172.168.1.1 ── veth1 ═ eth1 container1, veth2 ═ eth2 container2

Host mode applies the same host part to the namespace bridgelab runs in, with the uplink being a
real interface the admin owns (we never create, address or route it).

One builder per part of the topology (the networks' bridges, the containers, the links between
them, the host's sysctls, the sandbox's stand-ins); each adds what that part implies to one
accumulator.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import resources as r
from .naming import alias, base_lab, machine_ns, mac, ns_name, part_name, table_name, www_dir
from .nft_table import family, render_table
from .spec import DEFAULT_NETWORK, Container, Netem, Network, Service, Spec

SANDBOX = "sandbox"
HOST = "host"
MODES = (SANDBOX, HOST)
ANY = ipaddress.IPv4Network("0.0.0.0/0")
ANY6 = ipaddress.IPv6Network("::/0")
LAN_BRIDGE = "lan0"
SCENERY = ("gateway", "client", "internet", "lan")  # the sandbox's stand-ins, in this order


@dataclass
class _Acc:
    """The resources found so far, by kind."""

    lab: str
    host_ns: str | None
    v6: bool
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
    impairments: list[r.Impairment] = field(default_factory=list)
    nodes: dict[str, str | None] = field(default_factory=dict)
    networks: dict[tuple, str] = field(default_factory=dict)  # (ns, ifname) -> network (metric label)

    def node_ns(self, node: str) -> str:
        name = ns_name(self.lab, node)
        self.namespaces.append(r.Namespace(name, node))
        self.up.append(r.LinkUp(name, "lo"))
        self.nodes[node] = name
        return name

    def links_up(self, *ends: tuple[str | None, str]) -> None:
        self.up += [r.LinkUp(ns, name) for ns, name in ends]

    def address(self, ns: str | None, dev: str, ip, prefixlen: int) -> None:
        self.addresses.append(r.Address(ns, dev, ipaddress.ip_interface(f"{ip}/{prefixlen}")))

    def impair(self, name: str, sender: tuple[str | None, str], receiver: tuple[str | None, str], port: bool,
               peer_port: bool, em: Netem | None) -> None:
        if em is not None:
            self.impairments.append(r.Impairment(name, *sender, *receiver, port, peer_port, em))


def desired(spec: Spec, mode: str = SANDBOX) -> r.Desired:
    if mode not in MODES:
        raise ValueError(mode)
    if spec.hosts:
        if mode == HOST:
            raise ValueError("a lab across hosts is built one host at a time (hosts.part, --as HOST)")
        return world(spec)
    host_ns = ns_name(spec.lab, "host") if mode == SANDBOX else None
    acc = _Acc(spec.lab, host_ns, spec.ipv6, nodes={"host": host_ns})
    if mode == SANDBOX:
        acc.node_ns("host")
    _bridges(acc, spec)
    for c in spec.containers:
        _container(acc, spec, c)
    _links(acc, spec)
    _host_sysctls(acc, spec)
    if mode == SANDBOX:
        _sandbox(acc, spec)
    _loopback6_proxy(acc, spec)
    acc.tables.append(r.NftTable(host_ns, family(spec), table_name(spec.lab), render_table(spec)))
    acc.forward.append(r.ForwardAccess(host_ns, tuple(b.name for b in acc.bridges if b.ns == host_ns)))
    vxlans = tuple(_vxlans(acc, spec))   # before the tuples below: they add to acc.up
    return r.Desired(
        lab=spec.lab, mode=mode, host_ns=host_ns, namespaces=tuple(acc.namespaces), bridges=tuple(acc.bridges),
        veths=tuple(acc.veths), up=tuple(acc.up), addresses=tuple(acc.addresses), routes=tuple(acc.routes),
        sysctls=tuple(acc.sysctls), tables=tuple(acc.tables), forward=tuple(acc.forward),
        services=tuple(acc.services), impairments=tuple(acc.impairments), nodes=acc.nodes, uplink=spec.uplink.name,
        ipv6=spec.ipv6, networks=acc.networks, vxlans=vxlans, host_name=spec.host_name,
    )


def _vxlans(acc: _Acc, spec: Spec) -> list[r.Vxlan]:
    """A network this host shares with others: a VXLAN port on its bridge (hosts.part gave the
    peers and the VNI). Named by VNI: the same on every host, under 15 bytes."""
    out = []
    for n in spec.networks:
        if not n.peers:
            continue
        x = r.Vxlan(acc.host_ns, f"vx{n.vni}", n.vni, spec.uplink.address.ip, spec.uplink.name, n.peers, n.bridge,
                    n.mtu, alias(spec.lab, f"vxlan:{n.name}"), n.name)
        acc.links_up((acc.host_ns, x.name))
        acc.networks[(acc.host_ns, x.name)] = n.name
        out.append(x)
    return out


def world(spec: Spec) -> r.Desired:
    """A multi-host lab's sandbox: the LAN switch, the gateway, client and internet stand-ins,
    and each lab host as a namespace (blm-LAB-HOST) with its uplink on the LAN, its address and
    default route: the machines. What runs on each host (its bridges, VXLAN ports, containers,
    table) is that host's part, built inside its namespace in host mode, as on a real machine."""
    lab, up_, sb = spec.lab, spec.uplink, spec.sandbox
    first = machine_ns(lab, spec.hosts[0].name)
    acc = _Acc(lab, first, False, nodes={})
    lan, gw, cl, inet = (acc.node_ns(n) for n in ("lan", "gateway", "client", "internet"))
    acc.bridges.append(r.Bridge(lan, LAN_BRIDGE, alias(lab, "lan"), mac(lab, "lan", LAN_BRIDGE)))
    acc.links_up((lan, LAN_BRIDGE))
    for h in spec.hosts:
        m = machine_ns(lab, h.name)
        acc.namespaces.append(r.Namespace(m, h.name))
        acc.up.append(r.LinkUp(m, "lo"))
        acc.nodes[h.name] = m
        port = f"p-{h.name}"
        # the machine's end is made first (a), so it carries our alias: the host's part runs there
        acc.veths.append(r.Veth(a=r.VethEnd(m, up_.name, mac=mac(lab, h.name, up_.name)),
                                b=r.VethEnd(lan, port, master=LAN_BRIDGE, mac=mac(lab, "lan", port)),
                                alias=alias(lab, f"uplink:{h.name}")))
        acc.links_up((m, up_.name), (lan, port))
        acc.addresses.append(r.Address(m, up_.name, h.address))
        acc.routes.append(r.Route(m, ANY, up_.gateway, up_.name))
    for peer_node, peer_ns, port_if, role in (("gateway", gw, "p-gateway", "gateway-lan"),
                                              ("client", cl, "p-client", "client-lan")):
        acc.veths.append(r.Veth(a=r.VethEnd(lan, port_if, master=LAN_BRIDGE, mac=mac(lab, "lan", port_if)),
                                b=r.VethEnd(peer_ns, "eth0", mac=mac(lab, peer_node, "eth0")), alias=alias(lab, role)))
        acc.links_up((lan, port_if), (peer_ns, "eth0"))
    acc.veths.append(r.Veth(a=r.VethEnd(gw, "eth1", mac=mac(lab, "gateway", "eth1")),
                            b=r.VethEnd(inet, "eth0", mac=mac(lab, "internet", "eth0")), alias=alias(lab, "upstream")))
    acc.links_up((gw, "eth1"), (inet, "eth0"))
    acc.address(gw, "eth0", up_.gateway, up_.address.network.prefixlen)
    acc.addresses += [r.Address(gw, "eth1", sb.upstream), r.Address(cl, "eth0", sb.client),
                      r.Address(inet, "eth0", sb.internet)]
    acc.routes += [r.Route(cl, ANY, up_.gateway, "eth0"), r.Route(inet, ANY, sb.upstream.ip, "eth0")]
    acc.sysctls.append(r.Sysctl(gw, "net.ipv4.ip_forward", "1",
                                "the gateway is a router between the LAN and the internet stand-in"))
    for c in spec.containers:   # for exec, trace and explain: where each container lives
        acc.nodes[c.name] = ns_name(part_name(lab, c.host), c.name)
    return r.Desired(
        lab=lab, mode=SANDBOX, host_ns=first, namespaces=tuple(acc.namespaces), bridges=tuple(acc.bridges),
        veths=tuple(acc.veths), up=tuple(acc.up), addresses=tuple(acc.addresses), routes=tuple(acc.routes),
        sysctls=tuple(acc.sysctls), tables=(), forward=(), services=(), nodes=acc.nodes, uplink=up_.name)


def _bridges(acc: _Acc, spec: Spec) -> None:
    """A bridge per network, like docker0 (or `docker network create`): its gateway."""
    for n in spec.networks:
        role = "bridge" if n.name == DEFAULT_NETWORK else f"bridge:{n.name}"
        # the MAC from the lab a host's part belongs to: the same gateway MAC on every host (an
        # anycast gateway, as EVPN fabrics do), so a container's neighbour entry is right anywhere
        acc.bridges.append(r.Bridge(acc.host_ns, n.bridge, alias(spec.lab, role),
                                    mac(base_lab(spec.lab), "host", n.bridge), n.mtu, n.name))
        acc.links_up((acc.host_ns, n.bridge))
        acc.networks[(acc.host_ns, n.bridge)] = n.name
        if n.subnet is not None:
            acc.address(acc.host_ns, n.bridge, n.gateway, n.subnet.prefixlen)
        if n.subnet6 is not None:
            acc.address(acc.host_ns, n.bridge, n.gateway6, n.subnet6.prefixlen)


def _container(acc: _Acc, spec: Spec, c: Container) -> None:
    """A namespace, a veth pair into each of its networks' bridges, its routes, its services;
    a router (`forwarding: true`) forwards between its interfaces."""
    lab = spec.lab
    cns = acc.node_ns(c.name)
    nets = {n.name: n for n in spec.networks}
    for a in c.attachments:
        n = nets[a.network]
        acc.veths.append(r.Veth(
            # hairpin: a container reaching its own published port through the host address is
            # DNATed by br_netfilter while bridged, and sent back out the port it came in by
            a=r.VethEnd(acc.host_ns, a.host_interface, master=n.bridge, hairpin=bool(spec.ports) and not n.internal,
                        mac=mac(lab, "host", a.host_interface), mtu=n.mtu),
            b=r.VethEnd(cns, a.interface, mac=mac(lab, c.name, a.interface), mtu=n.mtu),
            alias=alias(lab, f"veth:{c.name}" + ("" if a.network == DEFAULT_NETWORK else f":{a.network}")),
        ))
        acc.links_up((acc.host_ns, a.host_interface), (cns, a.interface))
        acc.networks[(acc.host_ns, a.host_interface)] = acc.networks[(cns, a.interface)] = n.name
        if a.address is not None:
            acc.address(cns, a.interface, a.address, n.subnet.prefixlen)
        if a.address6 is not None:
            acc.address(cns, a.interface, a.address6, n.subnet6.prefixlen)
        if a.netem is not None:  # `at:` the container (traffic it sends) or the network (traffic to it)
            mine, port = (cns, a.interface), (acc.host_ns, a.host_interface)
            if a.netem_at in ("", c.name):
                acc.impair(f"{c.name}:{a.interface} -> {a.network}", mine, port, False, True, a.netem)
            if a.netem_at in ("", a.network):
                acc.impair(f"{a.network} -> {c.name}:{a.interface}", port, mine, True, False, a.netem)
    _container_routes(acc, spec, c, cns)
    if c.forwarding:
        acc.sysctls.append(r.Sysctl(cns, "net.ipv4.ip_forward", "1",
                                    f"{c.name} is a router (forwarding: true): it forwards between its interfaces"))
        if acc.v6:
            acc.sysctls.append(r.Sysctl(cns, "net.ipv6.conf.all.forwarding", "1",
                                        f"{c.name} is a router (forwarding: true): it forwards IPv6 too"))
    acc.services += [service(lab, c.name, cns, s, acc.v6) for s in c.services]


def _container_routes(acc: _Acc, spec: Spec, c: Container, cns: str) -> None:
    """Its default route goes via the gateway of its first non-internal network (IPv4, and
    IPv6 by gateway6), unless its `routes` give one; each of its `routes` leaves by the
    interface whose network holds the next hop."""
    own = {r_.dst.version for r_ in c.routes if r_.dst.prefixlen == 0}
    outer = spec.reachable(c.name)
    if outer is not None:
        n = spec.network(outer.network)
        if 4 not in own and outer.address is not None:
            acc.routes.append(r.Route(cns, ANY, n.gateway, outer.interface))
        if 6 not in own and outer.address6 is not None:
            acc.routes.append(r.Route(cns, ANY6, n.gateway6, outer.interface))
    for rs in c.routes:
        dev = _dev_toward(spec, c, rs.via)
        if dev is not None:
            acc.routes.append(r.Route(cns, rs.dst, rs.via, dev))


def _dev_toward(spec: Spec, c: Container, via) -> str | None:
    nets = {n.name: n for n in spec.networks}
    for a in c.attachments:
        n = nets[a.network]
        for subnet in (n.subnet, n.subnet6):
            if subnet is not None and via.version == subnet.version and via in subnet:
                return a.interface
    for link in spec.links:
        for e in link.ends:
            if e.node == c.name:
                for ad in (e.address, e.address6):
                    if ad is not None and via.version == ad.version and via in ad.network:
                        return e.interface
    return None


def _links(acc: _Acc, spec: Spec) -> None:
    """Point-to-point links: a veth pair between two containers, addressed, impaired."""
    for link in spec.links:
        a, b = link.a, link.b
        na, nb = acc.nodes[a.node], acc.nodes[b.node]
        acc.veths.append(r.Veth(
            a=r.VethEnd(na, a.interface, mac=mac(spec.lab, a.node, a.interface), mtu=link.mtu),
            b=r.VethEnd(nb, b.interface, mac=mac(spec.lab, b.node, b.interface), mtu=link.mtu),
            alias=alias(spec.lab, f"link:{a.node}:{a.interface}"),
        ))
        acc.links_up((na, a.interface), (nb, b.interface))
        for e, ns, o, ons in ((a, na, b, nb), (b, nb, a, na)):
            for ad in (e.address, e.address6):
                if ad is not None:
                    acc.addresses.append(r.Address(ns, e.interface, ad))
            acc.impair(f"{e.node}:{e.interface} -> {o.node}:{o.interface}", (ns, e.interface), (ons, o.interface),
                       False, False, e.netem)


def _host_sysctls(acc: _Acc, spec: Spec) -> None:
    """Each one justified."""
    external = [n for n in spec.networks if not n.internal]
    if external or not spec.networks:
        acc.sysctls.append(r.Sysctl(acc.host_ns, "net.ipv4.ip_forward", "1",
                                    "the host routes between the bridge and the uplink: without it the seed's "
                                    "containers cannot leave the host (its step 4)"))
    if acc.v6 and any(n.subnet6 for n in external):
        acc.sysctls.append(r.Sysctl(acc.host_ns, "net.ipv6.conf.all.forwarding", "1",
                                    "the host routes IPv6 between the bridges and the uplink (NAT66 or routed)"))
    targets = spec.published_networks()
    for n in spec.networks:
        if n.name in targets:
            acc.sysctls.append(r.Sysctl(
                acc.host_ns, f"net.ipv4.conf.{n.bridge}.route_localnet", "1",
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
    acc.veths.append(r.Veth(a=r.VethEnd(gw, "eth1", mac=mac(lab, "gateway", "eth1")),
                            b=r.VethEnd(inet, "eth0", mac=mac(lab, "internet", "eth0")), alias=alias(lab, "upstream")))
    acc.links_up((gw, "eth1"), (inet, "eth0"))
    acc.addresses.append(r.Address(host_ns, up_.name, up_.address))
    acc.routes.append(r.Route(host_ns, ANY, up_.gateway, up_.name))
    acc.address(gw, "eth0", up_.gateway, up_.address.network.prefixlen)
    acc.addresses += [r.Address(gw, "eth1", sb.upstream), r.Address(cl, "eth0", sb.client),
                      r.Address(inet, "eth0", sb.internet)]
    acc.routes += [r.Route(cl, ANY, up_.gateway, "eth0"), r.Route(inet, ANY, sb.upstream.ip, "eth0")]
    # The gateway routes LAN <-> internet but, like the seed's upstream router, has no route
    # back to the lab subnet: that is why the seed's pings got no reply without MASQUERADE.
    acc.sysctls.append(r.Sysctl(gw, "net.ipv4.ip_forward", "1",
                                "the gateway is a router between the LAN and the internet stand-in"))
    if acc.v6:
        _sandbox6(acc, spec, gw, cl, inet)


def _sandbox6(acc: _Acc, spec: Spec, gw: str, cl: str, inet: str) -> None:
    """The same stand-ins in IPv6: the gateway at the uplink's gateway6 with no route back to
    the lab's ULA subnets (the seed's NAT lesson, in IPv6)."""
    up_, sb, host_ns = spec.uplink, spec.sandbox, acc.host_ns
    acc.addresses.append(r.Address(host_ns, up_.name, up_.address6))
    acc.routes.append(r.Route(host_ns, ANY6, up_.gateway6, up_.name))
    acc.address(gw, "eth0", up_.gateway6, up_.address6.network.prefixlen)
    acc.addresses += [r.Address(gw, "eth1", sb.upstream6), r.Address(cl, "eth0", sb.client6),
                      r.Address(inet, "eth0", sb.internet6)]
    acc.routes += [r.Route(cl, ANY6, up_.gateway6, "eth0"), r.Route(inet, ANY6, sb.upstream6.ip, "eth0")]
    acc.sysctls.append(r.Sysctl(gw, "net.ipv6.conf.all.forwarding", "1",
                                "the gateway routes IPv6 between the LAN and the internet stand-in"))


def _loopback6_proxy(acc: _Acc, spec: Spec) -> None:
    """[::1]:PORT of each port published there (every address, or host_ip ::1): a relay in the
    host (proxy/), since IPv6 cannot DNAT a loopback connection out to a container."""
    if not acc.v6:
        return
    maps, tcp = [], None
    for p in spec.ports:
        if p.host_ip is not None and str(p.host_ip) != "::1":
            continue
        a = spec.reachable(p.container)
        if a is not None and a.address6 is not None:
            maps.append(f"{p.protocol}:{p.host_port}=[{a.address6}]:{p.container_port}")
            if tcp is None and p.protocol == "tcp":
                tcp = p.host_port   # the port `up` waits on until the relay listens
    if maps:
        acc.services.append(r.ServiceProc("host", acc.host_ns, "host/loopback6-proxy",
                                          ("python3", "-m", "orchestrator.proxy", *maps), "/", tcp))


def service(lab: str, node: str, ns: str | None, s: Service, v6: bool = False) -> r.ServiceProc:
    if s.kind == "http":
        # The seed runs `python3 -m http.server 80` in each container. We serve a directory of our
        # own (naming the node) rather than whatever the daemon's cwd happens to be; `--bind ::`
        # is dual stack (IPV6_V6ONLY off), so it serves IPv4 and IPv6 alike.
        argv = ("python3", "-m", "http.server", str(s.port)) + (("--bind", "::") if v6 else ())
        root = www_dir(lab, node)
        return r.ServiceProc(node, ns, f"{node}/http:{s.port}", argv, root, s.port, http_root=root)
    return r.ServiceProc(node, ns, f"{node}/{s.name}", tuple(s.argv), "/", s.port, protocol=s.protocol)
