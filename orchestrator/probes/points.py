"""Where the probes sit, and the names the metrics and the trace give those places.

Netfilter hooks (IPv4) and priorities: conntrack at -200, DNAT at -100 (PREROUTING, OUTPUT), the
filter table at 0, SNAT/MASQUERADE at 100 (POSTROUTING, INPUT). A probe on each side of a NAT
priority sees the packet before and after the rewrite. The numbers are the program names'
suffixes in probes/nf_hooks.c (nf_pN) and the `point` field of its events.
"""
from __future__ import annotations

from dataclasses import dataclass

PRE, INPUT, FORWARD, OUTPUT, POST = range(5)


@dataclass(frozen=True)
class NfPoint:
    id: int
    name: str        # the `hook` label value
    hook: int
    priority: int
    why: str
    step: int        # where to move if the priority is taken (another bridgelab probe): away from NAT


NF_POINTS = (
    NfPoint(1, "prerouting", PRE, -101, "arriving, before DNAT (conntrack has seen it)", -1),
    NfPoint(2, "dnat", PRE, -99, "arriving, after DNAT: the destination a published port rewrote", +1),
    NfPoint(0, "forward", FORWARD, -1, "routed through, just before the filter table: the output device is chosen", -1),
    NfPoint(3, "input", INPUT, 101, "delivered to this node's own stack", +1),
    NfPoint(5, "output", OUTPUT, -101, "sent by this node, before local DNAT", -1),
    NfPoint(6, "output_dnat", OUTPUT, -99, "sent by this node, after local DNAT (host → its own published port)", +1),
    NfPoint(7, "postrouting", POST, 99, "leaving, before SNAT/MASQUERADE", -1),
    NfPoint(8, "snat", POST, 101, "leaving, after SNAT/MASQUERADE: the source the upstream sees", +1),
)
# a netfilter hook takes one program per priority (EBUSY otherwise): the daemon's metrics probes,
# a trace and an explain each find a free one, at most this far from the designed priority and
# never across the NAT priority they sit beside
MAX_SHIFT = 40
BY_ID = {p.id: p for p in NF_POINTS}
# The metrics probes sit only after each NAT priority (and at FORWARD and INPUT): a packet
# passes the point before NAT exactly when it passes the one after, on the same device, unless
# NAT itself drops it (no free port; that drop is counted, with the kernel's reason), so the
# "before" series are the "after" ones (MIRRORED_NF) and NAT is counted from conntrack's
# binding (nf_hooks.c nat_count). Measured: 2 of a forwarded packet's 5 netfilter runs gone, at
# ~230 ns each. A trace attaches every point: it shows the tuple before and after the rewrite.
MIRRORED_NF = {2: 1, 6: 5, 8: 7}          # counted at -> also reported as
METRICS_NF = tuple(p for p in NF_POINTS if p.id not in MIRRORED_NF.values())
# a container's own hops add nothing to the metrics but the drops inside it: where its packets
# enter and leave its stack is enough to attribute those (programs nf_cN: no packet reads)
CONTAINER_NF = tuple(p for p in NF_POINTS if p.name in ("prerouting", "output"))
IN_HOOKS = {"prerouting", "dnat", "input"}
TC_POINTS = {0: "ingress", 1: "egress"}


def nf_name(point: int) -> str:
    p = BY_ID.get(point)
    return p.name if p else f"point{point}"


def nf_hook(point: int, iif: str, oif: str, ports: set[str]) -> tuple[str, str, str]:
    """(hook label, interface, direction). br_netfilter runs bridged IPv4 frames through the IP
    hooks with a bridge port as the device, or the bridge as both in and out at FORWARD: those are
    switched, not routed, and get a bridge_ prefix."""
    name = nf_name(point)
    dev = iif if name in IN_HOOKS else oif
    bridged = (iif in ports or oif in ports or (name == "forward" and iif and iif == oif))
    direction = "in" if name in IN_HOOKS else ("through" if name == "forward" else "out")
    return ("bridge_" + name if bridged else name), dev or "", direction


ROUTING_REASONS = ("IP_INNOROUTES", "IP_OUTNOROUTES", "IP_RPFILTER", "IP_INADDRERRORS", "IP_INVALID_SOURCE",
                   "IP_INVALID_DEST", "IP_LOCAL_SOURCE", "IP_LOCALNET")


def drop_hook(point: int, reason: str) -> str:
    """Where a drop happened, from the last point that saw the skb and the kernel's reason. After
    the prerouting points and before any other, a packet is routed: a routing reason died there,
    and a netfilter drop is the filter's INPUT chain (a FORWARD-chain drop is seen after the
    forward point, which runs before the filter table; a container's INPUT drop was once named
    "dnat" for the last point it passed)."""
    name = nf_name(point)
    if name in ("prerouting", "dnat"):
        if reason == "NETFILTER_DROP":
            return "input"
        if reason in ROUTING_REASONS:
            return "routing"
    return name
