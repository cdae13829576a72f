"""What only the whole topology can tell: subnets that overlap, routes via an address no
interface of the container reaches, more than one default route."""

from __future__ import annotations

import ipaddress

from .model import Container, Link, Network, Sandbox, Uplink
from .problems import Collector


def overlaps(c: Collector, nets: list[Network], links: list[Link], up: Uplink | None, sb: Sandbox | None) -> None:
    """Every address space once: the networks, the links' networks, the uplink's and the sandbox's
    internet stand-in. Each overlap is reported at the later of the two (the uplink at
    uplink.address, as the seed's form always did)."""
    seen: list[tuple[ipaddress._BaseNetwork, str]] = []

    def check(net, fld: str, what: str) -> bool:
        for other, name in seen:
            if net.version == other.version and net.overlaps(other):
                c.add(fld, f"{what + ' ' if not fld.startswith('uplink') else ''}{net} overlaps {name} {other}",
                      "the lab subnet and the uplink network must not overlap" if "uplink" in fld + name
                      else "give each network its own address space")
                return False
        seen.append((net, what))
        return True

    for n in nets:
        for key, subnet in (("subnet", n.subnet), ("subnet6", n.subnet6)):
            if subnet is not None:
                check(subnet, f"{n.where}.{key}", f"{n.where}.{key}")
    for link in links:
        for key, addr in (("addresses", link.a.address), ("addresses6", link.a.address6)):
            if addr is not None:
                check(addr.network, f"{link.where}.{key}", f"the network of {link.where}")
    if up is not None:
        for key, a in (("address", up.address), ("address6", up.address6)):
            if a is not None:
                check(a.network, f"uplink.{key}", f"the uplink network")
    if sb is not None:
        for key, a in (("internet", sb.internet), ("internet6", sb.internet6)):
            if a is not None and not a.network.overlaps(up.address.network if key == "internet" else up.address6.network):
                check(a.network, f"sandbox.{key}", f"sandbox.{key}'s network")


def routes(c: Collector, conts: list[Container], nets: list[Network], links: list[Link], where: dict[str, str]) -> None:
    """Each route's next hop must be on a network one of the container's interfaces is on."""
    by_net = {n.name: n for n in nets}
    for x in conts:
        reach = []
        for a in x.attachments:
            n = by_net[a.network]
            reach += [s for s in (n.subnet if a.address else None, n.subnet6 if a.address6 else None) if s]
        for link in links:
            for e in link.ends:
                if e.node == x.name:
                    reach += [a.network for a in (e.address, e.address6) if a is not None]
        defaults: dict[int, int] = {}
        for j, r in enumerate(x.routes):
            fld = f"{where[x.name]}.routes[{j}]"
            if not any(r.via in net for net in reach):
                c.add(f"{fld}.via", f"{r.via} is on no network {x.name} has an interface on",
                      "route via an address on one of its networks or links (" +
                      (", ".join(str(n) for n in reach) or "it has none") + ")")
            if r.dst.prefixlen == 0:
                defaults[r.dst.version] = defaults.get(r.dst.version, 0) + 1
                if defaults[r.dst.version] > 1:
                    c.add(f"{fld}.dst", f"a second default route (IPv{r.dst.version})", "keep one default route per IP version")
