"""Drop reason names and dropping functions, as the running kernel names them."""
from __future__ import annotations

import bisect
from functools import lru_cache

from . import btf


# Frees that are not losses. The packet reached a socket layer and was then discarded there: no
# socket on that port (the sender is answered with a reset or an ICMP unreachable: nothing
# listens, which explain reports as such), the socket's queue purged on close (every TCP close),
# a socket filter declining it (ping's raw socket sees every ICMP reply and ping_rcv frees the
# copy as NO_SOCKET), TCP discarding a segment it already has or does not want; or it was a
# flooded copy reaching a host it was not for (OTHERHOST) while the frame itself went on. Not
# here, because the packet is lost: checksum errors, a full receive buffer or accept queue.
AFTER_DELIVERY = frozenset({
    "NO_SOCKET", "QUEUE_PURGE", "SOCKET_CLOSE", "SOCKET_FILTER", "UNIX_DISCONNECT", "UNIX_SKIP_OOB", "OTHERHOST",
    "TCP_ABORT_ON_DATA", "TCP_ACK_UNSENT_DATA", "TCP_CLOSE", "TCP_FASTOPEN", "TCP_FLAGS", "TCP_INVALID_ACK_SEQUENCE",
    "TCP_INVALID_END_SEQUENCE", "TCP_INVALID_SEQUENCE", "TCP_INVALID_SYN", "TCP_OFOMERGE", "TCP_OFO_DROP",
    "TCP_OFO_QUEUE_PRUNE", "TCP_OLD_ACK", "TCP_OLD_DATA", "TCP_OLD_SEQUENCE", "TCP_OVERWINDOW", "TCP_RESET",
    "TCP_RFC7323_PAWS", "TCP_RFC7323_PAWS_ACK", "TCP_RFC7323_TSECR", "TCP_RFC7323_TW_PAWS", "TCP_TOO_OLD_ACK",
    "TCP_ZEROWINDOW",
})
# Neighbour discovery handed to ndisc_rcv and let go there (net/ipv6/ndisc.c) is NDP at work, not
# a lost packet: a bridge floods multicast (no MLD snooping in a lab), so every node gets the
# solicitations for addresses it does not hold and frees them as IPV6_NDISC_NS_OTHERHOST
NDISC_PREFIX = "IPV6_NDISC_"
# Ours, not the kernel's: ip6_mc_input frees a multicast packet for a group this node has not
# joined with a bare kfree_skb (NOT_SPECIFIED; net/ipv6/ip6_input.c). A bridge floods every
# neighbour solicitation to every port, so in a dual-stack lab each node frees the ones meant for
# the others' solicited-node groups: IPv6's OTHERHOST. drops.c names it when the kernel's symbols
# say where the free happened (build.mc_input_range).
# IPv4 has the same: a multicast packet for a group the node has not joined fails the route
# lookup and ip_rcv_finish_core frees it NOT_SPECIFIED (ip_route_input_rcu: not "our" group, no
# multicast forwarding). The bridge floods the host's IGMPv3 reports (224.0.0.22, a group only
# multicast routers join) to every container as their interfaces come up. That function frees
# other packets too, so drops.c names it only for a multicast destination (its IP header read
# where lockdown allows; otherwise it stays NOT_SPECIFIED and the probe says so).
MCAST_NOT_JOINED = 0x10001
OURS = {MCAST_NOT_JOINED: "MCAST_NOT_JOINED"}
AFTER_DELIVERY = AFTER_DELIVERY | set(OURS.values())


def is_loss(reason: str) -> bool:
    """A drop reason that means the packet was lost (not freed after it was delivered)."""
    return reason not in AFTER_DELIVERY and not reason.startswith(NDISC_PREFIX)


@lru_cache(maxsize=1)
def reason_names() -> dict[int, str]:
    """SKB_DROP_REASON_NOT_SPECIFIED -> NOT_SPECIFIED, from the kernel's BTF enum (the same
    names kfree_skb's tracefs print fmt uses)."""
    from .links import _FACTS
    if "reason_names" in _FACTS:   # read by the child that compiled the probes (compiled.py)
        return {int(k): v for k, v in _FACTS["reason_names"].items()}
    try:
        enum = btf.kernel().enum("skb_drop_reason")
    except (OSError, btf.BTFError):
        return {}
    out = dict(OURS)
    for name, val in enum.items():
        out.setdefault(val, name.removeprefix("SKB_DROP_REASON_").removeprefix("SKB_"))
    return out


def symbol_range(name: str, path: str = "/proc/kallsyms") -> tuple[int, int] | None:
    """[start, end) of a kernel function's text, or None where kallsyms hides addresses
    (kptr_restrict, no CAP_SYSLOG: every address reads 0)."""
    try:
        s = Symbols(path)
    except OSError:
        return None
    try:
        i = s.names.index(name)
    except ValueError:
        return None
    if not s.addrs[i] or i + 1 >= len(s.addrs):
        return None
    return s.addrs[i], s.addrs[i + 1]


class Symbols:
    """/proc/kallsyms, for naming the function that freed a dropped skb."""

    def __init__(self, path: str = "/proc/kallsyms"):
        addrs, names = [], []
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    addrs.append(int(parts[0], 16))
                    names.append(parts[2])
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self.addrs = [addrs[i] for i in order]
        self.names = [names[i] for i in order]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or not self.addrs[i]:
            return hex(addr)
        return f"{self.names[i]}+{addr - self.addrs[i]:#x}"
