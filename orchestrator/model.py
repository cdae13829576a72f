"""Desired kernel resources: plain, hashable values that a spec turns into (see plan.py).

A namespace of ``None`` means "the namespace bridgelab itself runs in" (host mode).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

ROUTE_PROTO = 188  # rtm_protocol stamped on every route we add: how we tell ours from an admin's
ALIAS_PREFIX = "bridgelab:"  # IFLA_IFALIAS of every link we create in a namespace we share


class ConflictError(RuntimeError):
    """A resource we would create exists and is not ours: we never take over a stranger's."""


@dataclass(frozen=True)
class Namespace:
    name: str
    node: str  # the lab node it plays: host, lan, gateway, client, internet or a container


@dataclass(frozen=True)
class Bridge:
    ns: str | None
    name: str
    alias: str
    mac: str = ""


@dataclass(frozen=True)
class VethEnd:
    ns: str | None
    name: str
    master: str | None = None
    hairpin: bool = False  # bridge port may send a frame back out the port it came in by
    mac: str = ""


@dataclass(frozen=True)
class Veth:
    """A veth pair, created in one request from end ``a`` with ``b`` placed in its namespace."""

    a: VethEnd
    b: VethEnd
    alias: str

    @property
    def ends(self) -> tuple[VethEnd, VethEnd]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Address:
    ns: str | None
    dev: str
    iface: ipaddress.IPv4Interface


@dataclass(frozen=True)
class Route:
    ns: str | None
    dst: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dev: str


@dataclass(frozen=True)
class Sysctl:
    ns: str | None
    key: str  # dotted, e.g. net.ipv4.ip_forward
    value: str
    why: str = field(compare=False, default="")


@dataclass(frozen=True)
class NftTable:
    ns: str | None
    family: str
    name: str
    text: str  # the whole table, applied in one transaction


@dataclass(frozen=True)
class ServiceProc:
    node: str
    ns: str | None
    name: str  # unique within the lab, e.g. container1/http:80
    argv: tuple[str, ...]
    cwd: str
    port: int | None = None  # TCP port it serves: `up` returns once it listens


@dataclass(frozen=True)
class Desired:
    lab: str
    mode: str  # sandbox | host
    host_ns: str | None
    namespaces: tuple[Namespace, ...]
    bridges: tuple[Bridge, ...]
    veths: tuple[Veth, ...]
    up: tuple[tuple[str | None, str], ...]  # (ns, link) that must be administratively up
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]
    sysctls: tuple[Sysctl, ...]
    tables: tuple[NftTable, ...]
    services: tuple[ServiceProc, ...]
    nodes: dict[str, str | None] = field(compare=False, default_factory=dict)  # node -> ns
    uplink: str = field(compare=False, default="")  # in host mode the admin's, not ours: probed, never touched

    def managed_ns(self) -> list[str | None]:
        """Every namespace the lab touches, the host's first."""
        seen: list[str | None] = [self.host_ns]
        seen += [n.name for n in self.namespaces if n.name != self.host_ns]
        return seen
