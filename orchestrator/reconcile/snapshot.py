"""What the kernel holds, as far as the lab cares: plain values the adapters fill and the pure
diff reads (no kernel library is imported here)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

RTPROT_KERNEL = 2  # routes the kernel derives from addresses: they follow the addresses


@dataclass
class Link:
    index: int
    name: str
    kind: str | None
    up: bool
    master: int | None
    alias: str | None
    peer_index: int | None  # IFLA_LINK: a veth's peer index in the peer's namespace
    hairpin: bool = False
    mtu: int = 0


@dataclass
class RouteEntry:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    oif: int | None
    proto: int
    table: int = 254
    type: int = 1  # RTN_UNICAST; 6 blackhole, 7 unreachable, 8 prohibit
    priority: int = 0

    def describe(self, dev: str | None = None) -> str:
        kind = {6: "blackhole ", 7: "unreachable ", 8: "prohibit "}.get(self.type, "")
        via = f" via {self.gateway}" if self.gateway else ""
        on = f" dev {dev}" if dev else ""
        return f"{kind}{self.dst}{via}{on}" + (f" table {self.table}" if self.table != 254 else "")


@dataclass
class NsState:
    """What one namespace holds: links by name, addresses as (device, interface), routes."""

    links: dict[str, Link] = field(default_factory=dict)
    addresses: set[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = field(default_factory=set)
    routes: list[RouteEntry] = field(default_factory=list)

    def by_index(self, index: int | None) -> Link | None:
        for link in self.links.values():
            if link.index == index:
                return link
        return None

    @classmethod
    def fresh(cls) -> NsState:
        """A namespace we just created (netns.create_many): only its loopback, up."""
        return cls(links={"lo": Link(1, "lo", None, True, None, None, None)},
                   addresses={("lo", ipaddress.IPv4Interface("127.0.0.1/8"))})


@dataclass
class Observed:
    """One look at the lab: the namespaces present, each one's links/addresses/routes, and what
    the other kinds observe for themselves (``parts``, by kind name: sysctl values, nft
    fingerprints, service processes, foreign forward chains)."""

    namespaces: set[str]
    ns: dict[str | None, NsState]
    parts: dict[str, Any] = field(default_factory=dict)

    def links(self, ns: str | None) -> NsState:
        return self.ns.get(ns) or NsState.fresh()

    def part(self, kind: str, default: Any = None) -> Any:
        return self.parts.get(kind, default)
