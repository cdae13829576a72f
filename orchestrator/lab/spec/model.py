"""The topology, validated: plain frozen values (spec/__init__.py makes them from a file).

The seed's form (`bridge:` and containers with an `address`) is one network, named "bridge" as
Docker names its default one; `networks:` gives several.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPv4, IPv6 = ipaddress.IPv4Address, ipaddress.IPv6Address
Net4, Net6 = ipaddress.IPv4Network, ipaddress.IPv6Network
If4, If6 = ipaddress.IPv4Interface, ipaddress.IPv6Interface
DEFAULT_NETWORK = "bridge"


@dataclass(frozen=True)
class Netem:
    """tc netem on one egress (a link end or a veth end): both directions take one each."""

    delay_us: int = 0
    jitter_us: int = 0
    loss_pct: float = 0.0
    rate_bps: int = 0      # bits per second; 0: unlimited
    corrupt_pct: float = 0.0
    duplicate_pct: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.delay_us:
            parts.append(f"delay {_us(self.delay_us)}" + (f" ±{_us(self.jitter_us)}" if self.jitter_us else ""))
        for name, v in (("loss", self.loss_pct), ("corrupt", self.corrupt_pct), ("duplicate", self.duplicate_pct)):
            if v:
                parts.append(f"{name} {v:g}%")
        if self.rate_bps:
            parts.append(f"rate {_rate(self.rate_bps)}")
        return ", ".join(parts) or "none"


def _us(us: int) -> str:
    return f"{us / 1000:g}ms" if us % 1000 == 0 or us >= 1000 else f"{us}us"


def _rate(bps: int) -> str:
    for unit, n in (("gbit", 10 ** 9), ("mbit", 10 ** 6), ("kbit", 10 ** 3)):
        if bps >= n and bps % n == 0:
            return f"{bps // n}{unit}"
    return f"{bps}bit"


@dataclass(frozen=True)
class Network:
    name: str
    bridge: str                  # the bridge device in the host
    subnet: Net4 | None
    gateway: IPv4 | None
    internal: bool = False       # no way out: no NAT, no default route, no published ports
    mtu: int = 0
    subnet6: Net6 | None = None
    gateway6: IPv6 | None = None
    nat6: bool = True            # a ULA subnet6 is masqueraded out of the uplink unless nat6: false
    vni: int = 0                 # VXLAN across hosts (0: derived)
    where: str = "bridge"        # the field path errors about it name: bridge, networks[1]
    peers: tuple = ()            # a host's part (hosts.part): the other hosts' addresses with this network


@dataclass(frozen=True)
class Attachment:
    """A container on a network: one veth pair into the network's bridge."""

    network: str
    address: IPv4 | None
    interface: str               # inside the container
    host_interface: str          # its peer on the bridge
    address6: IPv6 | None = None
    netem: Netem | None = None
    netem_at: str = ""           # "" both ends, else the container's name or the network's


@dataclass(frozen=True)
class RouteSpec:
    dst: Net4 | Net6
    via: IPv4 | IPv6


@dataclass(frozen=True)
class Service:
    kind: str  # http | command
    port: int | None = None
    argv: tuple[str, ...] = ()
    name: str = ""  # unique within its container: http:80, iperf3, iperf3:5201, iperf3#2
    protocol: str = "tcp"  # what `port` is: up waits for it to be bound


@dataclass(frozen=True)
class Container:
    name: str
    attachments: tuple[Attachment, ...] = ()
    services: tuple[Service, ...] = ()
    forwarding: bool = False
    routes: tuple[RouteSpec, ...] = ()
    host: str = ""               # the lab host it runs on (issue #15); "" when there is one

    @property
    def primary(self) -> Attachment | None:
        return self.attachments[0] if self.attachments else None


@dataclass(frozen=True)
class LinkEnd:
    node: str
    interface: str
    address: If4 | None = None
    address6: If6 | None = None
    netem: Netem | None = None


@dataclass(frozen=True)
class Link:
    a: LinkEnd
    b: LinkEnd
    mtu: int = 0
    where: str = "links[0]"

    @property
    def ends(self) -> tuple[LinkEnd, LinkEnd]:
        return (self.a, self.b)

    @property
    def name(self) -> str:
        return f"{self.a.node}:{self.a.interface}--{self.b.node}:{self.b.interface}"


@dataclass(frozen=True)
class Host:
    """A lab host (`hosts:`): its uplink address is its VXLAN endpoint and its NAT address."""
    name: str
    address: If4
    address6: If6 | None = None


@dataclass(frozen=True)
class Expectation:
    """A flow the lab is meant to carry (result works) or to stop (blocked): `expect:`."""
    name: str
    src: str                 # a node
    to: str                  # as written: what `explain` takes
    proto: str               # icmp, tcp, udp
    port: int | None
    result: str              # works, blocked
    where: str = ""          # expect[i], for messages


@dataclass(frozen=True)
class Port:
    host_port: int
    container: str
    container_port: int
    protocol: str = "tcp"
    host_ip: IPv4 | IPv6 | None = None  # None: every local address


@dataclass(frozen=True)
class Uplink:
    name: str
    address: If4 | None
    gateway: IPv4 | None
    address6: If6 | None = None
    gateway6: IPv6 | None = None


@dataclass(frozen=True)
class Sandbox:
    """Who plays the seed's LAN and upstream when the lab runs hermetically."""

    client: If4
    internet: If4  # the stand-in for 114.114.114.114
    upstream: If4  # the gateway's side facing "internet"
    client6: If6 | None = None
    internet6: If6 | None = None
    upstream6: If6 | None = None


@dataclass(frozen=True)
class Spec:
    lab: str
    networks: tuple[Network, ...]
    uplink: Uplink
    containers: tuple[Container, ...]
    ports: tuple[Port, ...]
    sandbox: Sandbox
    links: tuple[Link, ...] = ()
    source: str = "<embedded seed.yaml>"
    warnings: tuple[str, ...] = field(default=(), compare=False)
    seed_form: bool = field(default=False, compare=False)  # written with `bridge:` (one network)
    expect: tuple[Expectation, ...] = ()
    hosts: tuple[Host, ...] = ()        # several: a lab across hosts (hosts.part is each one's share)
    host_name: str = ""                 # a host's part: which host

    def container(self, name: str) -> Container:
        for c in self.containers:
            if c.name == name:
                return c
        raise KeyError(name)

    def network(self, name: str) -> Network:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def ipv6(self) -> bool:
        """The topology has IPv6 somewhere (an IPv4-only one stays IPv4-only)."""
        return any(n.subnet6 for n in self.networks) or self.uplink.address6 is not None or any(
            e.address6 for link in self.links for e in link.ends)

    def published_networks(self) -> set[str]:
        """The networks published ports DNAT into."""
        return {a.network for a in (self.reachable(p.container) for p in self.ports) if a is not None}

    def reachable(self, name: str) -> Attachment | None:
        """The attachment a published port DNATs to: the container's first non-internal network."""
        c = self.container(name)
        nets = {n.name: n for n in self.networks}
        return next((a for a in c.attachments if not nets[a.network].internal), None)
