"""Reachability expectations (`expect:`): flows the lab is meant to carry, or to block, checked
by `bridgelab check` and continuously by the daemon (issue #17). `to` is what `explain` takes:
a node, an address, NODE:PORT, ADDR:PORT or [ADDR6]:PORT."""

from __future__ import annotations

import ipaddress
from typing import Any

from .containers import NODE_RE, RESERVED_NODES
from .model import Expectation
from .problems import Collector, show

PROTOS = ("icmp", "tcp", "udp")
RESULTS = ("works", "blocked")
SANDBOX_NODES = ("gateway", "client", "internet")


def split_target(to: str) -> tuple[str, int | None]:
    """'container2:5353' -> ('container2', 5353); '[fd00::1]:80' -> ('fd00::1', 80); an IPv6
    address without brackets has no port. Raises ValueError on a bad port."""
    if to.startswith("["):
        host, _, rest = to[1:].partition("]")
        port = rest.removeprefix(":")
    elif to.count(":") == 1:
        host, _, port = to.partition(":")
    else:
        host, port = to, ""
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(port)
    return host, int(port)


def expectations(c: Collector, raw: Any, nodes: set[str]) -> list[Expectation]:
    """NODES: every node a flow may start from or go to (containers, host, the sandbox's)."""
    out: list[Expectation] = []
    names: dict[str, str] = {}
    for i, item in enumerate(c.listing(raw, "expect", "expectation ('- {from: container1, to: internet}')")):
        fld = f"expect[{i}]"
        m = c.mapping(item, fld, "expect[]")
        if m is None:
            continue
        before = len(c.problems)
        src = m.get("from")
        if "from" in m and (not isinstance(src, str) or src not in nodes):
            c.add(f"{fld}.from", f"no node named {show(src)}", f"use one of: {', '.join(sorted(nodes))}")
        to = m.get("to")
        host, port = None, None
        if "to" in m:
            if not isinstance(to, str) or not to:
                c.add(f"{fld}.to", f"expected a node or an address, got {show(to)}",
                      'write it like container2, "host:8888", 192.168.0.2 or "[2001:db8::1]:80"')
            else:
                try:
                    host, port = split_target(to)
                except ValueError:
                    c.add(f"{fld}.to", f"{show(to)}: the port must be 1-65535", 'write it like "host:8888"')
                if host is not None and host not in nodes:
                    try:
                        ipaddress.ip_address(host)
                    except ValueError:
                        c.add(f"{fld}.to", f"'{host}' is neither a node nor an IP address",
                              f"use a node ({', '.join(sorted(nodes))}) or an address")
        proto = m.get("proto", "tcp" if port else "icmp")
        if proto not in PROTOS:
            c.add(f"{fld}.proto", f"unknown protocol {show(proto)}", "use icmp, tcp or udp")
        elif proto == "icmp" and port:
            c.add(f"{fld}.proto", f"icmp has no ports, but to: {to} names port {port}",
                  "drop the port, or say proto: tcp or proto: udp")
        elif proto in ("tcp", "udp") and not port and host is not None:
            c.add(f"{fld}.to", f"{proto} needs a port", f'write it like "{host}:80"')
        result = m.get("result", "works")
        if result not in RESULTS:
            c.add(f"{fld}.result", f"unknown result {show(result)}", "use works or blocked")
        name = m.get("name")
        if name is not None and (not isinstance(name, str) or not NODE_RE.match(name.replace(".", "-").replace(":", "-"))):
            c.add(f"{fld}.name", f"{show(name)} is not a usable name", "use letters, digits, - and _ (it labels a metric)")
            name = None
        if len(c.problems) > before or "from" not in m or "to" not in m:
            continue
        name = name or f"{src}-{to}" + (f"-{proto}" if proto != ("tcp" if port else "icmp") else "")
        if name in names:
            c.add(f"{fld}.name", f"'{name}' is already the name of {names[name]}",
                  "give each expectation its own name: (name: ...)")
            continue
        names[name] = fld
        out.append(Expectation(name, src, to, proto, port, result, fld))
    return out


def nodes_of(container_names: set[str]) -> set[str]:
    return container_names | {"host"} | set(SANDBOX_NODES)


assert set(SANDBOX_NODES) < RESERVED_NODES
