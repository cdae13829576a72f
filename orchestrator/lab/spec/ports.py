"""Published ports: HOST_PORT on the host -> CONTAINER:PORT, like `docker run -p`."""

from __future__ import annotations

from typing import Any

from .model import Container, Network, Port, Uplink
from .problems import Collector, show

PROTOCOLS = ("tcp", "udp")


def host_addresses(nets: list[Network], up: Uplink | None) -> set:
    """Addresses a port can be bound to: the host's own (uplink, its bridges' gateways)."""
    out = {n.gateway for n in nets if n.gateway} | {n.gateway6 for n in nets if n.gateway6}
    if up is not None:
        out |= {a.ip for a in (up.address, up.address6) if a is not None}
    return out


def _host_ip(c: Collector, raw: Any, fld: str, local: set):
    host_ip = c.any_addr(raw, fld)
    if host_ip is None or host_ip.is_unspecified:
        return None
    if host_ip.is_loopback or host_ip in local:
        return host_ip
    c.add(fld, f"{host_ip} is not an address of the host",
          f"use one of: {', '.join(sorted(map(str, local)))}, 127.0.0.1, \"::1\", or leave host_ip out for all")
    return None


def ports(c: Collector, raw: Any, conts: list[Container], named: set[str], nets: list[Network],
          up: Uplink | None) -> list[Port]:
    by_name = {x.name: x for x in conts}
    internal = {n.name for n in nets if n.internal}
    local = host_addresses(nets, up)
    seen: dict[tuple, str] = {}
    out = []
    for i, item in enumerate(c.listing(raw, "ports", "published port ('- host_port: 8888')")):
        fld = f"ports[{i}]"
        m = c.mapping(item, fld, "ports[]")
        if m is None:
            continue
        hp = c.port(m["host_port"], f"{fld}.host_port") if "host_port" in m else None
        proto = m.get("protocol", "tcp")
        if proto not in PROTOCOLS:
            c.add(f"{fld}.protocol", f"unknown protocol {show(proto)}", "use tcp or udp")
            proto = None
        before = len(c.problems)
        host_ip = _host_ip(c, m["host_ip"], f"{fld}.host_ip", local) if m.get("host_ip") is not None else None
        if len(c.problems) > before:
            continue
        target, cport = _target(c, m, fld, named, by_name, internal, host_ip)
        if hp and proto:
            key = (hp, proto)
            if key in seen:
                c.add(f"{fld}.host_port", f"{proto} port {hp} is already published by {seen[key]}",
                      "each host port and protocol can be published once")
                continue
            seen[key] = fld
        if hp and proto and target and cport:
            out.append(Port(hp, target, cport, proto, host_ip))
    return out


def _target(c: Collector, m: dict, fld: str, named: set[str], by_name: dict[str, Container], internal: set[str],
            host_ip) -> tuple[str | None, int | None]:
    if "to" not in m:
        return None, None
    to = str(m["to"]) if not isinstance(m["to"], bool) else show(m["to"])
    name, sep, p = to.rpartition(":")
    if not sep or not p.isdigit():
        c.add(f"{fld}.to", f"{show(to)} is not CONTAINER:PORT", "write it like container1:80")
        return None, None
    cport = c.port(int(p), f"{fld}.to")
    if name not in named:
        c.add(f"{fld}.to", f"no container named '{name}'", f"use one of: {', '.join(sorted(named)) or '(none defined)'}")
        return None, None
    cont = by_name.get(name)
    if cont is None:
        return None, cport  # its own problems are reported where it is defined
    reach = [a for a in cont.attachments if a.network not in internal]
    if not reach:
        c.add(f"{fld}.to", f"{name} is on no network with a way out" + (" (only internal ones)" if cont.attachments else ""),
              "publish a container on a non-internal network (internal networks have no published ports)")
        return None, None
    want6 = host_ip is not None and host_ip.version == 6
    if want6 and reach[0].address6 is None:
        c.add(f"{fld}.host_ip", f"{host_ip} is IPv6 and {name} has no address6 on {reach[0].network}",
              f"give {name} an address6 on {reach[0].network}")
        return None, None
    return name, cport
