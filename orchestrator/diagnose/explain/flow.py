"""Which flow `explain SRC DST` means: the source node and address, the destination, what a
published port rewrites it to, and the way the topology sends it (paths.py)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ...errors import InputError
from ...lab.desired import SANDBOX
from ...lab.resources import Desired
from ...lab.spec import Spec
from ...lab.spec.expect import split_target
from .paths import Path, Topology, topology


@dataclass
class Flow:
    src: str
    src_ns: str | None
    src_addr: str
    dst: str                  # as given
    dst_addr: str
    proto: str
    port: int | None
    dst_node: str | None      # the node owning dst_addr, if a lab node
    target_node: str | None   # who serves it after DNAT (a published port), else dst_node
    target_addr: str
    target_port: int | None
    via_host: bool            # routed or NATed by the lab host
    leaves_lab: bool          # goes out of the uplink
    family: int = 4
    path: list[str] = field(default_factory=list)       # the nodes it crosses, as designed
    back: list[str] = field(default_factory=list)       # the nodes its replies cross


def node_addresses(spec: Spec, mode: str, version: int = 4) -> dict[str, list[str]]:
    """Every node's addresses of one IP version, its primary one first."""
    out: dict[str, list[str]] = {}
    for c in spec.containers:
        for a in c.attachments:
            ad = a.address if version == 4 else a.address6
            if ad is not None:
                out.setdefault(c.name, []).append(str(ad))
    for link in spec.links:
        for e in link.ends:
            ad = e.address if version == 4 else e.address6
            if ad is not None:
                out.setdefault(e.node, []).append(str(ad.ip))
    up = spec.uplink.address if version == 4 else spec.uplink.address6
    out["host"] = [str(up.ip)] if up is not None else []
    out["host"] += [str(g) for g in (n.gateway if version == 4 else n.gateway6 for n in spec.networks) if g]
    if mode == SANDBOX:
        sb = spec.sandbox
        gw = spec.uplink.gateway if version == 4 else spec.uplink.gateway6
        for node, ad in (("gateway", gw), ("client", sb.client if version == 4 else sb.client6),
                         ("internet", sb.internet if version == 4 else sb.internet6)):
            if ad is not None:
                out[node] = [str(getattr(ad, "ip", ad))]
    return {k: v for k, v in out.items() if v}


def _port(dst: str, port: int | None) -> tuple[str, int | None]:
    try:
        host_part, given = split_target(dst)
    except ValueError:
        raise InputError(f"DST '{dst}': the port must be 1-65535") from None
    if given is not None:
        if port is not None and port != given:
            raise InputError(f"DST '{dst}' and --port {port} disagree")
        port = given
    if port is not None and not 0 < port < 65536:
        raise InputError("--port must be 1-65535")
    return host_part, port


def _destination(host_part: str, addrs: dict[str, list[str]], src_addrs: list[str], version: int,
                 topo: Topology) -> tuple[str, str | None]:
    if host_part in addrs:
        cands = addrs[host_part]
        # the one on a network the source is on, if any (a container on two networks)
        for a in cands:
            for s in src_addrs:
                if _same_net(topo, a, s):
                    return a, host_part
        return cands[0], host_part
    try:
        dst_addr = str(ipaddress.ip_address(host_part))
    except ValueError:
        raise InputError(f"DST '{host_part}' is neither a node with an IPv{version} address "
                         f"({', '.join(addrs)}) nor an IP address") from None
    for node, values in addrs.items():
        if dst_addr in values:
            return dst_addr, node
    return dst_addr, None


def _same_net(topo: Topology, a: str, b: str) -> bool:
    ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    for entries in topo.tables.values():
        for net, _dev, gw in entries:
            if gw is None and net.prefixlen and ia in net and ib.version == ia.version and ib in net:
                return True
    return False


def resolve(spec: Spec, d: Desired, src: str, dst: str, port: int | None, proto: str | None,
            source_for=None, version: int | None = None) -> Flow:
    """SOURCE_FOR(ns, addr) -> the source address the kernel would pick (the host's route)."""
    if src not in d.nodes:
        raise InputError(f"SRC '{src}' is not a node of lab {spec.lab}; nodes: {', '.join(d.nodes)}")
    host_part, port = _port(dst, port)
    if version is None:
        try:
            version = ipaddress.ip_address(host_part).version
        except ValueError:
            version = 4
    addrs = node_addresses(spec, d.mode, version)
    topo = topology(spec, d)
    dst_addr, dst_node = _destination(host_part, addrs, addrs.get(src, []), version, topo)
    proto = proto or ("tcp" if port else "icmp")
    if proto == "icmp" and port:
        raise InputError("--proto icmp takes no port")
    if proto in ("tcp", "udp") and not port:
        raise InputError(f"--proto {proto} needs a port (DST host:PORT or --port)")
    loop = "127.0.0.1" if version == 4 else "::1"
    host_addrs = set(addrs.get("host", [])) | {loop}
    if dst_addr == loop and src != "host":
        raise InputError(f"{loop} is each node's own loopback: only `host` reaches the host's published ports there")
    target_node, target_addr, target_port = dst_node, dst_addr, port
    if dst_addr in host_addrs and port:
        target_node, target_addr, target_port = _published(spec, dst_addr, port, proto, version) or \
            (target_node, target_addr, target_port)
    src_addr = _source(spec, d, topo, src, target_addr, dst_addr, host_addrs, addrs, loop, source_for)
    fwd, back = _paths(topo, d, src, src_addr, dst_addr, target_addr, host_addrs)
    via_host = any(h.ns == d.host_ns for h in fwd.hops) or src == "host"
    containers = {c.name for c in spec.containers}
    leaves = src in containers and fwd.exits
    return Flow(src, d.nodes[src], src_addr, dst, dst_addr, proto, port, dst_node, target_node, target_addr,
                target_port, via_host, leaves, version, fwd.nodes, back.nodes)


def _published(spec: Spec, dst_addr: str, port: int, proto: str, version: int):
    for p in spec.ports:
        if p.host_port == port and p.protocol == proto and (p.host_ip is None or str(p.host_ip) == dst_addr):
            a = spec.reachable(p.container)
            addr = (a.address if version == 4 else a.address6) if a else None
            if addr is not None:
                return p.container, str(addr), p.container_port
    return None


def _source(spec, d, topo, src, target_addr, dst_addr, host_addrs, addrs, loop, source_for) -> str:
    if src == "host" and dst_addr in host_addrs:
        return loop if dst_addr == loop else dst_addr
    if src == "host" and source_for is not None:  # the kernel picks the source by the route
        got = source_for(d.host_ns, target_addr)
        if got:
            return got
    mine = addrs.get(src, [])
    route = topo.lookup(d.nodes[src], ipaddress.ip_address(target_addr))
    if route is not None:  # the address on the interface the route leaves by
        for a in d.addresses:
            if a.ns == d.nodes[src] and a.dev == route[0] and str(a.iface.ip) in mine:
                return str(a.iface.ip)
    return mine[0] if mine else ""


def _paths(topo: Topology, d: Desired, src: str, src_addr: str, dst_addr: str, target_addr: str,
           host_addrs: set[str]) -> tuple[Path, Path]:
    """The request's way and the replies' (to the host's address on the target's network when
    the host masquerades: a flow from the host itself, a hairpin, a flow leaving by the uplink)."""
    if not src_addr:
        return Path(), Path()
    s, t = ipaddress.ip_address(src_addr), ipaddress.ip_address(target_addr)
    if target_addr != dst_addr and dst_addr in host_addrs:
        fwd = topo.published(d.nodes[src], s, ipaddress.ip_address(dst_addr), t)
    else:
        fwd = topo.walk(d.nodes[src], s, t)
    if not fwd.delivered:
        return fwd, Path()
    dst_ns = topo.owner.get(t, (d.host_ns,))[0]
    to = s
    out_dev = fwd.hops[-2].dev_out if len(fwd.hops) > 1 else ""
    hairpin = any(a.ns == d.host_ns and a.dev == out_dev and s in a.iface.network for a in d.addresses)
    if fwd.masqueraded or (target_addr != dst_addr and (src == "host" or s.is_loopback or hairpin)):
        to = next((a.iface.ip for a in d.addresses if a.ns == d.host_ns and a.iface.version == s.version
                   and a.dev == (d.uplink if fwd.masqueraded else out_dev)), s)
    return fwd, topo.walk(dst_ns, t, to)


def design(spec: Spec, d: Desired, flow: Flow) -> tuple[Path, Path]:
    """The forward and reply paths again (Path objects) for static findings."""
    addrs = node_addresses(spec, d.mode, flow.family)
    host_addrs = set(addrs.get("host", [])) | {"127.0.0.1" if flow.family == 4 else "::1"}
    return _paths(topology(spec, d), d, flow.src, flow.src_addr, flow.dst_addr, flow.target_addr, host_addrs)


def on_path(flow: Flow, d: Desired) -> dict[str | None, int]:
    """The namespaces the flow crosses, with their position along it (src first)."""
    order: dict[str | None, int] = {}
    for i, node in enumerate(flow.path or [flow.src]):
        order.setdefault(d.nodes.get(node, d.host_ns), i)
    n = len(order)
    for node in flow.back:
        order.setdefault(d.nodes.get(node, d.host_ns), n)
    for node in (flow.dst_node, flow.target_node):
        if node in d.nodes:
            order.setdefault(d.nodes[node], n)
    order.setdefault(d.host_ns, 1) if flow.via_host else None
    return order
