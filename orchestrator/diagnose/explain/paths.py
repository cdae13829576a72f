"""Where a packet goes in the lab as the topology designs it: routing simulated over the desired
state (connected subnets of each namespace's addresses, its routes), hop by hop, with the host's
NAT and its isolation of networks. Pure (unit-tested): explain uses it to know which nodes a flow
crosses and to say why a flow cannot work by design (no route, no route back, a node on the
way that does not forward, networks isolated from each other, an internal network).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ...lab.resources import Desired

MAX_HOPS = 16


@dataclass
class Hop:
    node: str
    ns: str | None
    dev_in: str = ""
    dev_out: str = ""


@dataclass
class Path:
    hops: list[Hop] = field(default_factory=list)
    delivered: bool = False
    exits: bool = False        # leaves the lab by the host's uplink
    blocked: str = ""          # why not: no_route, not_a_router, isolated, internal, loop
    at: str = ""               # the node where it stops
    detail: str = ""
    masqueraded: bool = False  # the host rewrote the source on the way out

    @property
    def nodes(self) -> list[str]:
        return [h.node for h in self.hops]


class Topology:
    """Routing tables and address owners of the desired state."""

    def __init__(self, d: Desired, masq: list[tuple[ipaddress._BaseNetwork, str]], isolated: dict[str, str],
                 internal: set[str], forwarders: set[str | None]):
        self.d = d
        self.nodes = d.ns_nodes()
        self.owner: dict = {}           # address -> (ns, dev)
        self.tables: dict = {}          # ns -> [(network, dev, gateway or None)]
        for a in d.addresses:
            self.owner[a.iface.ip] = (a.ns, a.dev)
            self.tables.setdefault(a.ns, []).append((a.iface.network, a.dev, None))
        for r in d.routes:
            self.tables.setdefault(r.ns, []).append((r.dst, r.dev, r.gateway))
        if d.mode == "host" and d.uplink:  # the admin's default route: out of the lab
            for any_ in (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")):
                self.tables.setdefault(None, []).append((any_, d.uplink, None))
        self.masq = masq                # (source subnet, uplink) the host masquerades
        self.isolated = isolated        # bridge -> network: the lab's networks, isolated from each other
        self.internal = internal        # bridges of internal networks
        self.forwarders = forwarders    # namespaces that forward (ip_forward desired)
        self.stretched: list = []       # a host's part of a lab across hosts: networks the other hosts share

    def lookup(self, ns: str | None, dst) -> tuple[str, object] | None:
        best = None
        for net, dev, gw in self.tables.get(ns, []):
            if net.version == dst.version and dst in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, dev, gw)
        return (best[1], best[2]) if best else None

    def walk(self, src_ns: str | None, src, dst, p: Path | None = None, dev_in: str = "") -> Path:
        """From SRC_NS toward DST (continuing P from where it arrived by DEV_IN, for a flow the
        host DNATs on)."""
        if p is None:
            p = Path([Hop(self.nodes.get(src_ns, "host"), src_ns)])
        p.delivered = False
        ns, seen = src_ns, set()
        for _ in range(MAX_HOPS):
            if self.owner.get(dst, (object(),))[0] == ns:
                p.delivered = True
                return p
            if (ns, str(dst)) in seen:
                return self._stop(p, "loop", f"a routing loop through {p.hops[-1].node}")
            seen.add((ns, str(dst)))
            route = self.lookup(ns, dst)
            node = self.nodes.get(ns, "host")
            if route is None:
                return self._stop(p, "no_route", f"{node} has no route to {dst}")
            dev, gw = route
            p.hops[-1].dev_out = dev
            if (len(p.hops) > 1 or dev_in) and ns not in self.forwarders:
                return self._stop(p, "not_a_router", f"{node} is on the way but does not forward packets "
                                  "(not a router: forwarding: true)")
            why = self._host_filter(ns, dev_in, dev)
            if why:
                return self._stop(p, *why)
            nxt = gw if gw is not None else dst
            if ns == self.d.host_ns and dev == self.d.uplink:
                p.exits = True
                p.masqueraded = any(src.version == net.version and src in net for net, up in self.masq if up == dev)
            hop = self.owner.get(nxt)
            if hop is None:
                if p.exits:  # beyond the lab (host mode: the admin's network)
                    return p
                if any(nxt.version == net.version and nxt in net for net in self.stretched):
                    p.delivered = True   # on another lab host, behind the network's VXLAN port
                    return p
                return self._stop(p, "no_route", f"{node} sends to {nxt} by {dev}, and nothing in the lab has "
                                  "that address")
            ns, dev_in = hop
            p.hops.append(Hop(self.nodes.get(ns, "host"), ns, dev_in=dev_in))
        return self._stop(p, "loop", "more than 16 hops")

    def _host_filter(self, ns, dev_in: str, dev_out: str) -> tuple[str, str] | None:
        """The host's forward chain: networks isolated from each other, internal networks closed."""
        if ns != self.d.host_ns or not dev_in:
            return None
        if dev_in in self.internal or dev_out in self.internal:
            br = dev_in if dev_in in self.internal else dev_out
            return ("internal", f"network {self.isolated.get(br, br)} is internal: no traffic leaves or enters it "
                                "through the host")
        if dev_in in self.isolated and dev_out in self.isolated and dev_in != dev_out:
            return ("isolated", f"networks {self.isolated[dev_in]} and {self.isolated[dev_out]} are isolated from "
                                "each other")
        return None

    def published(self, src_ns: str | None, src, host_addr, target) -> Path:
        """A flow to a published port: to the host's address, DNATed there, on to the target."""
        if src_ns == self.d.host_ns:
            return self.walk(src_ns, src, target)
        p = self.walk(src_ns, src, host_addr)
        if not p.delivered:
            return p
        return self.walk(self.d.host_ns, src, target, p, p.hops[-1].dev_in)

    @staticmethod
    def _stop(p: Path, why: str, detail: str) -> Path:
        p.blocked, p.at, p.detail = why, p.hops[-1].node, detail
        return p


def topology(spec, d: Desired) -> Topology:
    masq = []
    for n in spec.networks:
        if not n.internal:
            if n.subnet is not None:
                masq.append((n.subnet, spec.uplink.name))
            if n.subnet6 is not None and n.nat6:
                masq.append((n.subnet6, spec.uplink.name))
    isolated = {n.bridge: n.name for n in spec.networks}
    internal = {n.bridge for n in spec.networks if n.internal}
    fwd = {s.ns for s in d.sysctls if s.key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding") and s.value == "1"}
    t = Topology(d, masq, isolated, internal, fwd)
    t.stretched = [s for n in spec.networks if n.peers for s in (n.subnet, n.subnet6) if s is not None]
    return t
