"""Spec -> desired kernel state. Pure: no I/O, so every decision here has a unit test.

Sandbox wiring (all namespaces named ``bl-<lab>-<node>``; nothing touches the machine's own):

    internet 203.0.113.10 ── gateway 203.0.113.1 | 192.168.0.2 ──┐
                                                                  lan0 (switch, in "lan")
    client 192.168.0.100 ─────────────────────────────────────────┤
    host: ens33 192.168.0.10 ─────────────────────────────────────┘
          br0 172.168.1.1 ── veth1 ═ eth1 container1, veth2 ═ eth2 container2

Host mode applies the same host part to the namespace bridgelab runs in, with the uplink being a
real interface the admin owns (we never create, address or route it).
"""

from __future__ import annotations

import hashlib
import ipaddress

from . import model as m
from .nftrender import render_table, table_name
from .spec import Spec

SANDBOX = "sandbox"
HOST = "host"
ANY = ipaddress.IPv4Network("0.0.0.0/0")
LAN_BRIDGE = "lan0"


def ns_name(lab: str, node: str) -> str:
    return f"bl-{lab}-{node}"


def ns_prefix(lab: str) -> str:
    return f"bl-{lab}-"


def alias(lab: str, role: str) -> str:
    return f"{m.ALIAS_PREFIX}{lab}:{role}"


def mac(lab: str, node: str, ifname: str) -> str:
    """A stable, locally administered MAC per interface.

    A link we recreate keeps its L2 identity, so no neighbour anywhere holds a stale entry after a
    heal (it would black-hole traffic until ARP re-resolves, seconds later). A bridge given an
    address also stops taking the lowest port's MAC, which changes whenever a port is recreated.
    """
    h = hashlib.sha256(f"{lab}/{node}/{ifname}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


def www_dir(lab: str, node: str) -> str:
    return f"/run/bridgelab/{lab}/www/{node}"


def desired(spec: Spec, mode: str = SANDBOX) -> m.Desired:
    if mode not in (SANDBOX, HOST):
        raise ValueError(mode)
    lab = spec.lab
    host_ns = ns_name(lab, "host") if mode == SANDBOX else None
    namespaces: list[m.Namespace] = []
    bridges: list[m.Bridge] = []
    veths: list[m.Veth] = []
    up: list[tuple[str | None, str]] = []
    addrs: list[m.Address] = []
    routes: list[m.Route] = []
    sysctls: list[m.Sysctl] = []
    services: list[m.ServiceProc] = []
    nodes: dict[str, str | None] = {"host": host_ns}

    def node_ns(node: str) -> str:
        name = ns_name(lab, node)
        namespaces.append(m.Namespace(name, node))
        up.append((name, "lo"))
        nodes[node] = name
        return name

    if mode == SANDBOX:
        node_ns("host")

    # --- the bridge, like docker0
    br = spec.bridge
    bridges.append(m.Bridge(host_ns, br.name, alias(lab, "bridge"), mac(lab, "host", br.name)))
    up.append((host_ns, br.name))
    gw_iface = ipaddress.IPv4Interface(f"{br.gateway}/{br.subnet.prefixlen}")
    addrs.append(m.Address(host_ns, br.name, gw_iface))

    # --- containers: a namespace each, a veth pair into the bridge, default route via br0
    for c in spec.containers:
        cns = node_ns(c.name)
        veths.append(m.Veth(
            # hairpin: a container reaching its own published port through the host address is
            # DNATed by br_netfilter while bridged, and sent back out the port it came in by
            a=m.VethEnd(host_ns, c.host_interface, master=br.name, hairpin=bool(spec.ports),
                        mac=mac(lab, "host", c.host_interface)),
            b=m.VethEnd(cns, c.interface, mac=mac(lab, c.name, c.interface)),
            alias=alias(lab, f"veth:{c.name}"),
        ))
        up += [(host_ns, c.host_interface), (cns, c.interface)]
        addrs.append(m.Address(cns, c.interface, ipaddress.IPv4Interface(f"{c.address}/{br.subnet.prefixlen}")))
        routes.append(m.Route(cns, ANY, br.gateway, c.interface))
        for s in c.services:
            services.append(_service(lab, c.name, cns, s))

    # --- host sysctls, each one justified
    sysctls.append(m.Sysctl(host_ns, "net.ipv4.ip_forward", "1",
                            "the host routes between the bridge and the uplink: without it the seed's "
                            "containers cannot leave the host (its step 4)"))
    if spec.ports:
        sysctls.append(m.Sysctl(host_ns, f"net.ipv4.conf.{br.name}.route_localnet", "1",
                                "a connection to 127.0.0.1:PORT is DNATed to a container and leaves by the "
                                "bridge with source 127.0.0.1; without this the kernel drops it as a martian "
                                "(the seed's refused curl). The raw-table rule keeps 127/8 unreachable from "
                                "outside (moby#45610)"))

    # --- sandbox: the seed's LAN, gateway, Windows client and the internet stand-in
    if mode == SANDBOX:
        up_ = spec.uplink
        sb = spec.sandbox
        lan = node_ns("lan")
        gw = node_ns("gateway")
        cl = node_ns("client")
        inet = node_ns("internet")
        bridges.append(m.Bridge(lan, LAN_BRIDGE, alias(lab, "lan"), mac(lab, "lan", LAN_BRIDGE)))
        up.append((lan, LAN_BRIDGE))
        for peer_ns, peer_if, port_if, role in (
            (host_ns, up_.name, "p-host", "uplink"),
            (gw, "eth0", "p-gateway", "gateway-lan"),
            (cl, "eth0", "p-client", "client-lan"),
        ):
            peer_node = {host_ns: "host", gw: "gateway", cl: "client"}[peer_ns]
            veths.append(m.Veth(a=m.VethEnd(lan, port_if, master=LAN_BRIDGE, mac=mac(lab, "lan", port_if)),
                                b=m.VethEnd(peer_ns, peer_if, mac=mac(lab, peer_node, peer_if)),
                                alias=alias(lab, role)))
            up += [(lan, port_if), (peer_ns, peer_if)]
        addrs.append(m.Address(host_ns, up_.name, up_.address))
        routes.append(m.Route(host_ns, ANY, up_.gateway, up_.name))
        gw_lan = ipaddress.IPv4Interface(f"{up_.gateway}/{up_.address.network.prefixlen}")
        addrs += [m.Address(gw, "eth0", gw_lan), m.Address(gw, "eth1", sb.upstream),
                  m.Address(cl, "eth0", sb.client), m.Address(inet, "eth0", sb.internet)]
        veths.append(m.Veth(a=m.VethEnd(gw, "eth1", mac=mac(lab, "gateway", "eth1")),
                            b=m.VethEnd(inet, "eth0", mac=mac(lab, "internet", "eth0")), alias=alias(lab, "upstream")))
        up += [(gw, "eth1"), (inet, "eth0")]
        routes += [m.Route(cl, ANY, up_.gateway, "eth0"), m.Route(inet, ANY, sb.upstream.ip, "eth0")]
        # The gateway routes LAN <-> internet but, like the seed's upstream router, has no route
        # back to the lab subnet: that is why the seed's pings got no reply without MASQUERADE.
        sysctls.append(m.Sysctl(gw, "net.ipv4.ip_forward", "1",
                                "the gateway is a router between the LAN and the internet stand-in"))

    table = m.NftTable(host_ns, "ip", table_name(lab), render_table(spec))
    return m.Desired(
        lab=lab, mode=mode, host_ns=host_ns, namespaces=tuple(namespaces), bridges=tuple(bridges),
        veths=tuple(veths), up=tuple(up), addresses=tuple(addrs), routes=tuple(routes),
        sysctls=tuple(sysctls), tables=(table,), services=tuple(services), nodes=nodes,
        uplink=spec.uplink.name,
    )


def _service(lab: str, node: str, ns: str, s) -> m.ServiceProc:
    if s.kind == "http":
        # The seed runs `python3 -m http.server 80` in each container. We serve a directory of our
        # own (naming the node) rather than whatever the daemon's cwd happens to be.
        argv = ("python3", "-m", "http.server", str(s.port))
        return m.ServiceProc(node, ns, f"{node}/http:{s.port}", argv, www_dir(lab, node), s.port)
    name = f"{node}/{s.argv[0].rsplit('/', 1)[-1]}" + (f":{s.port}" if s.port else "")
    return m.ServiceProc(node, ns, name, tuple(s.argv), "/", s.port)
