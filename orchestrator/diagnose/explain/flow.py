"""Which flow `explain SRC DST` means: the source node and address, the destination, what a
published port rewrites it to, and whether the lab host routes or NATs it."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...errors import InputError
from ...lab.desired import SANDBOX, SCENERY
from ...lab.resources import Desired
from ...lab.spec import Spec


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


def node_addresses(spec: Spec, mode: str) -> dict[str, str]:
    out = {c.name: str(c.address) for c in spec.containers}
    out["host"] = str(spec.uplink.address.ip)
    if mode == SANDBOX:
        if spec.uplink.gateway:
            out["gateway"] = str(spec.uplink.gateway)
        out["client"] = str(spec.sandbox.client.ip)
        out["internet"] = str(spec.sandbox.internet.ip)
    return out


def _port(dst: str, port: int | None) -> tuple[str, int | None]:
    host_part, _, port_part = dst.rpartition(":") if ":" in dst else (dst, "", "")
    if port_part:
        if not port_part.isdigit() or not 0 < int(port_part) < 65536:
            raise InputError(f"DST '{dst}': the port must be 1-65535")
        if port is not None and port != int(port_part):
            raise InputError(f"DST '{dst}' and --port {port} disagree")
        port = int(port_part)
    if port is not None and not 0 < port < 65536:
        raise InputError("--port must be 1-65535")
    return host_part, port


def resolve(spec: Spec, d: Desired, src: str, dst: str, port: int | None, proto: str | None,
            source_for=None) -> Flow:
    """SOURCE_FOR(ns, addr) -> the source address the kernel would pick (the host's route)."""
    addrs = node_addresses(spec, d.mode)
    if src not in d.nodes:
        raise InputError(f"SRC '{src}' is not a node of lab {spec.lab}; nodes: {', '.join(d.nodes)}")
    host_part, port = _port(dst, port)
    if host_part in addrs:
        dst_addr, dst_node = addrs[host_part], host_part
    else:
        try:
            dst_addr = str(ipaddress.IPv4Address(host_part))
        except ValueError:
            raise InputError(f"DST '{dst}' is neither a node ({', '.join(addrs)}) nor an IPv4 address") from None
        dst_node = next((n for n, a in addrs.items() if a == dst_addr), None)
    proto = proto or ("tcp" if port else "icmp")
    if proto == "icmp" and port:
        raise InputError("--proto icmp takes no port")
    if proto in ("tcp", "udp") and not port:
        raise InputError(f"--proto {proto} needs a port (DST host:PORT or --port)")
    host_addrs = {str(spec.uplink.address.ip), str(spec.bridge.gateway), "127.0.0.1"}
    target_node, target_addr, target_port = dst_node, dst_addr, port
    if dst_addr in host_addrs and port:
        for p in spec.ports:
            if p.host_port == port and p.protocol == proto and (p.host_ip is None or str(p.host_ip) == dst_addr):
                target_node, target_port = p.container, p.container_port
                target_addr = str(spec.container(p.container).address)
    if dst_addr == "127.0.0.1" and src != "host":
        raise InputError("127.0.0.1 is each node's own loopback: only `host` reaches the host's published ports there")
    src_addr = addrs.get(src, "")
    if src == "host" and dst_addr in host_addrs:
        src_addr = "127.0.0.1" if dst_addr == "127.0.0.1" else dst_addr
    elif src == "host" and source_for is not None:  # the kernel picks the source by the route
        src_addr = source_for(d.host_ns, target_addr) or src_addr
    containers = {c.name for c in spec.containers}
    via_host = not (src in containers and target_node in containers and dst_node in containers)
    leaves = src in containers and target_node not in containers and dst_addr not in host_addrs
    return Flow(src, d.nodes[src], src_addr, dst, dst_addr, proto, port, dst_node, target_node, target_addr,
                target_port, via_host, leaves)


def on_path(flow: Flow, d: Desired) -> dict[str | None, int]:
    """The namespaces the flow crosses, with their position along it (src first)."""
    order = {flow.src_ns: 0, d.host_ns: 1}
    for n in (flow.dst_node, flow.target_node):
        if n in d.nodes:
            order.setdefault(d.nodes[n], 2)
    if flow.leaves_lab or flow.src in SCENERY or flow.dst_node in SCENERY:
        for n in SCENERY:
            if n in d.nodes:
                order.setdefault(d.nodes[n], 3)
    return order
