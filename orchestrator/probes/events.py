"""Trace events: decoding what the probes emit, and assembling them into packet paths.

Pure (no kernel): the assembler takes decoded events in time order and yields one Packet per
packet that went through the lab, hop by hop. A hop the netfilter probes saw without reading
the packet (lockdown) borrows its tuple from the tc hops around it; where the tuple changes
across a NAT point, the hop says what was rewritten.
"""
from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from . import points
from .points import nf_hook
from .reasons import is_loss

K_TC, K_NF, K_DROP = 1, 2, 3
PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


@lru_cache(maxsize=2)
def _protocols(path: str) -> dict[int, str]:
    """/etc/protocols by number (Python's socket module has getprotobyname only)."""
    out: dict[int, str] = {}
    try:
        with open(path) as f:
            for line in f:
                w = line.split("#", 1)[0].split()
                if len(w) >= 2 and w[1].isdigit():
                    out.setdefault(int(w[1]), w[0])
    except OSError:
        pass
    return out


def proto_name(n: int, path: str = "/etc/protocols") -> str:
    """IP protocol N by name (gre, esp, sctp, ...), or 'protocol N' where the system has no name."""
    return PROTO.get(n) or _protocols(path).get(n) or f"protocol {n}"


class Tuple(ct.Structure):
    _fields_ = [("saddr", ct.c_uint32 * 4), ("daddr", ct.c_uint32 * 4), ("sport", ct.c_uint16), ("dport", ct.c_uint16),
                ("proto", ct.c_uint8), ("flags", ct.c_uint8), ("ipid", ct.c_uint16),
                ("tot_len", ct.c_uint16), ("family", ct.c_uint8), ("_tpad", ct.c_uint8 * 3)]


class Event(ct.Structure):  # struct event in probes/common.h
    _fields_ = [("ts", ct.c_uint64), ("cookie", ct.c_uint64), ("skb", ct.c_uint64), ("location", ct.c_uint64),
                ("hash", ct.c_uint32), ("ifindex", ct.c_uint32), ("ifindex2", ct.c_uint32), ("len", ct.c_uint32),
                ("reason", ct.c_uint32), ("kind", ct.c_uint8), ("point", ct.c_uint8), ("has_tuple", ct.c_uint8),
                ("_pad", ct.c_uint8), ("t", Tuple)]


def ip(a, family: int = 4) -> str:
    """An address as the probes hold it: IPv4 in the first word (or a bare int), IPv6 in four."""
    if isinstance(a, int):
        return socket.inet_ntoa(struct.pack("<I", a))
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, struct.pack("<4I", *a))
    return socket.inet_ntoa(struct.pack("<I", a[0]))


ICMP_TYPES = {0: "echo-reply", 8: "echo-request", 3: "unreachable", 11: "time-exceeded"}
ICMP6_TYPES = {128: "echo-request", 129: "echo-reply", 1: "unreachable", 2: "packet-too-big",
               3: "time-exceeded", 133: "router-solicit", 134: "router-advert",
               135: "neighbour-solicit", 136: "neighbour-advert", 137: "redirect"}


@dataclass
class Hop:
    ts: int
    kind: int
    node: str
    interface: str
    hook: str
    tuple: dict | None
    length: int = 0
    inferred: bool = False     # tuple taken from the tc hops around it, not read here
    rewrite: str = ""          # "source 172.168.1.11 → 192.168.0.10"
    reason: str = ""
    function: str = ""
    out_interface: str = ""
    encap: str = ""            # the VXLAN hop of a lab across hosts: "vxlan vni 4096 192.168.0.11 → 192.168.0.12"

    def as_dict(self, t0: int, prev: int) -> dict:
        d = {"ts_ns": self.ts, "t_us": round((self.ts - t0) / 1000, 3), "delta_us": round((self.ts - prev) / 1000, 3),
             "node": self.node, "interface": self.interface, "hook": self.hook}
        if self.out_interface:
            d["out_interface"] = self.out_interface
        if self.encap:
            d["encap"] = self.encap
        if self.tuple:
            d["tuple"] = self.tuple
            if self.inferred:
                d["tuple_inferred"] = True
        if self.rewrite:
            d["rewrite"] = self.rewrite
        if self.reason:
            d["drop_reason"] = self.reason
            d["function"] = self.function
        return d


def tuple_dict(t: Tuple) -> dict:
    fam = 6 if t.family == 6 else 4
    d = {"proto": proto_name(t.proto), "family": f"ipv{fam}", "src": ip(list(t.saddr), fam),
         "dst": ip(list(t.daddr), fam)}
    if fam == 4:
        d["ip_id"] = t.ipid   # IPv6 has none (the probes' packet mark is not shown)
    if t.proto in (6, 17):
        d["sport"], d["dport"] = t.sport, t.dport
        if t.proto == 6:
            d["tcp_flags"] = _flags(t.flags)
    elif t.proto == 1:
        d["icmp"] = ICMP_TYPES.get(t.flags, str(t.flags))
        if t.flags in (0, 8):
            d["id"], d["seq"] = t.sport, t.dport
    elif t.proto == 58:
        d["icmp"] = ICMP6_TYPES.get(t.flags, str(t.flags))
        if t.flags in (128, 129):
            d["id"], d["seq"] = t.sport, t.dport
    return d


def _flags(f: int) -> str:
    return "".join(c for bit, c in ((1, "F"), (2, "S"), (4, "R"), (8, "P"), (16, "."), (32, "U")) if f & bit) or "-"


@dataclass
class Packet:
    key: tuple
    hops: list[Hop] = field(default_factory=list)
    last: int = 0

    def verdict(self) -> str:
        for i, h in enumerate(self.hops):
            # a loss, unless this node had already taken the packet in (an echo reply handed to
            # a raw socket, then freed by ping_rcv as NO_SOCKET, is not lost)
            if h.reason and is_loss(h.reason) and not any(x.hook == "input" and x.node == h.node
                                                          for x in self.hops[:i]):
                return f"dropped at {h.node} {h.hook.removeprefix('drop@')}: {h.reason} in {h.function}"
        seen = [h for h in self.hops if not h.reason]
        freed = [h for h in self.hops if h.reason]
        if not seen:
            h = freed[0]
            return f"freed at {h.node}: {h.reason} in {h.function}"
        last = seen[-1]
        if last.hook in ("input", "bridge_input"):
            out = f"delivered to {last.node}"
        elif last.hook == "tc_ingress":
            out = f"arrived at {last.node} {last.interface}"
        else:
            out = f"last seen at {last.node} {last.interface or ''} {last.hook}".replace("  ", " ")
        mine = [h for h in freed if h.node == last.node and h.ts >= last.ts]
        if mine:   # how the receiver let go of it (a copy a bridge flooded elsewhere is not news)
            out += f", then freed: {mine[0].reason} in {mine[0].function}"
        return out

    def path_kind(self, ports: set[str] | None = None) -> str:
        """forwarded: routed by a node (the FORWARD hook); bridged: switched from one bridge port
        to another without being routed; local: neither (one node's own traffic)."""
        hooks = {h.hook for h in self.hops}
        if "forward" in hooks:
            return "forwarded"
        if "bridge_forward" in hooks:
            return "bridged"
        seen = {(h.node, h.interface, h.hook) for h in self.hops}
        if ports and any((n, a, "tc_ingress") in seen and (n, b, "tc_egress") in seen
                         for (n, a, _h) in seen for b in ports if a in ports and a != b):
            return "bridged"
        return "local"

    def as_dict(self) -> dict:
        t0 = self.hops[0].ts
        prev, hops = t0, []
        for h in self.hops:
            hops.append(h.as_dict(t0, prev))
            prev = h.ts
        first = next((h.tuple for h in self.hops if h.tuple), None)
        return {"tuple": first, "path": self.path_kind(), "verdict": self.verdict(), "hops": hops}


def packet_key(t: Tuple) -> tuple:
    """What tells one packet from another along its path, NAT or not: IPv4's id and length; for
    IPv6 (no id) the probes put TCP's sequence, an echo's sequence or UDP's first payload
    bytes where the id was, and an echo request and its reply differ only by ICMPv6 type."""
    return (t.proto, t.ipid, t.tot_len, t.flags if t.proto == 58 else 0)


class Assembler:
    """Feed decoded events (any order within a few ms); take finished packets."""

    QUIET_NS = 30_000_000   # a packet with no new hop for this long is finished

    def __init__(self, names, ports: set[str], symbolize=None, reason_names=None):
        self.names = names            # (cookie, ifindex) -> (node, ifname)
        self.ports = ports
        self.symbolize = symbolize or (lambda a: hex(a))
        self.reasons = reason_names or {}
        self.open: dict[tuple, Packet] = {}
        self.by_hash: dict[int, tuple] = {}     # flow hash -> key of its newest packet
        self.by_skb: dict[int, tuple] = {}

    def feed(self, e: Event) -> None:
        """Events must come in time order (the trace merges its rings before feeding)."""
        node, dev = self.names(e.cookie, e.ifindex)
        t = tuple_dict(e.t) if e.has_tuple else None
        key = None
        if e.kind == K_TC:
            key = packet_key(e.t)
            hook = "tc_" + points.TC_POINTS.get(e.point, "?")
            hop = Hop(e.ts, K_TC, node, dev, hook, t, e.len)
            if e._pad == 1:   # tc_points.c vxlan_inner: the packet inside a VXLAN one on the underlay
                hop.encap = (f"vxlan vni {e.reason} {ip(e.location >> 32)}"
                             f" → {ip(e.location & 0xFFFFFFFF)}")
            if key not in self.open:
                # hops a netfilter probe saw in this node before it could tell which packet
                # (no tuple: lockdown) belong to the packet that now shows itself here
                early = self.open.pop(("early", e.hash, node), None)
                if early is not None:
                    self.open[key] = early
                    for index in (self.by_hash, self.by_skb):  # later hops and drops find it
                        for k, v in list(index.items()):
                            if v == ("early", e.hash, node):
                                index[k] = key
                    early.key = key
        elif e.kind == K_NF:
            _, oif = self.names(e.cookie, e.ifindex2)
            hook, iface, _dir = nf_hook(e.point, dev, oif, self.ports)
            hop = Hop(e.ts, K_NF, node, iface, hook, t, e.len, out_interface=oif if hook.endswith("forward") else "")
            if e.has_tuple:
                key = packet_key(e.t)
            else:
                cand = self.by_hash.get(e.hash)
                p = self.open.get(cand) if cand else None
                # the flow's newest packet, if that packet is in this node right now; otherwise
                # this is a packet the node is only starting to send
                key = cand if p is not None and p.hops[-1].node == node else ("early", e.hash, node)
        else:
            cand = self.by_skb.get(e.skb)
            p = self.open.get(cand) if cand else None
            key = cand if p is not None and e.ts - p.last < 1_000_000 else ("drop", e.skb, e.ts)
            reason = self.reasons.get(e.reason, str(e.reason))
            hop = Hop(e.ts, K_DROP, node, dev, "drop@" + points.drop_hook(e.point, reason), None,
                      reason=reason, function=self.symbolize(e.location))
        pk = self.open.get(key)
        if pk is None:
            pk = self.open[key] = Packet(key)
        pk.hops.append(hop)
        pk.last = max(pk.last, e.ts)
        if e.hash and e.kind == K_TC:
            self.by_hash[e.hash] = key
        if e.skb:
            self.by_skb[e.skb] = key

    def finished(self, now_ns: int | None, everything: bool = False) -> list[Packet]:
        done = [k for k, p in self.open.items() if everything or (now_ns is not None and now_ns - p.last > self.QUIET_NS)]
        out = []
        for k in done:
            p = self.open.pop(k)
            if k[0] == "early" and not any(h.reason for h in p.hops):
                continue  # never claimed by a packet we could name, and not dropped: nothing to show
            p.hops.sort(key=lambda h: h.ts)
            _fill(p)
            out.append(p)
        for h, k in list(self.by_hash.items()):
            if k in done:
                del self.by_hash[h]
        for s, k in list(self.by_skb.items()):
            if k in done:
                del self.by_skb[s]
        out.sort(key=lambda p: p.hops[0].ts)
        return out


_NAT_AFTER = {"dnat", "output_dnat", "snat"}


def _fill(p: Packet) -> None:
    """Hops without a tuple take the one before them, and a NAT point the one after it when that
    differs (the rewrite happened there); say what changed."""
    prev = None
    for i, h in enumerate(p.hops):
        if h.tuple is None and h.kind != K_DROP:
            nxt = next((x.tuple for x in p.hops[i + 1:] if x.tuple and not x.inferred), None)
            h.tuple = (nxt if h.hook.removeprefix("bridge_") in _NAT_AFTER and nxt else prev) or nxt
            h.inferred = h.tuple is not None
        if h.tuple and prev and h.kind != K_DROP:
            ch = []
            if (prev["src"], prev.get("sport")) != (h.tuple["src"], h.tuple.get("sport")):
                ch.append(f"source {_ep(prev, 'src', 'sport')} → {_ep(h.tuple, 'src', 'sport')}")
            if (prev["dst"], prev.get("dport")) != (h.tuple["dst"], h.tuple.get("dport")):
                ch.append(f"destination {_ep(prev, 'dst', 'dport')} → {_ep(h.tuple, 'dst', 'dport')}")
            h.rewrite = "; ".join(ch)
        if h.tuple:
            prev = h.tuple


def _ep(t: dict, a: str, p: str) -> str:
    if t.get(p) is None:
        return t[a]
    return f"[{t[a]}]:{t[p]}" if ":" in t[a] else f"{t[a]}:{t[p]}"


def render(p: Packet, n: int) -> str:
    d = p.as_dict()
    t = d["tuple"] or {}
    head = f"#{n} {t.get('proto', '?')} {_ep(t, 'src', 'sport')} → {_ep(t, 'dst', 'dport')}" if t else f"#{n}"
    if t.get("icmp"):
        head += f" {t['icmp']}" + (f" id {t['id']} seq {t['seq']}" if "id" in t else "")
    if t.get("tcp_flags"):
        head += f" [{t['tcp_flags']}]"
    lines = [f"{head}   ({d['path']}; {d['verdict']})"]
    for h in d["hops"]:
        where = f"{h['node']:<11} {h.get('interface') or '-':<10} {h['hook']:<20}"
        extra = ""
        if h.get("out_interface"):
            extra += f" → {h['out_interface']}"
        if h.get("encap"):
            extra += f"  ({h['encap']})"
        if h.get("rewrite"):
            extra += f"  {h['rewrite']}" + (" (seen at the next hop)" if h.get("tuple_inferred") else "")
        if h.get("drop_reason"):
            extra += f"  DROP {h['drop_reason']} in {h['function']}"
        lines.append(f"  {h['t_us']:>10.3f} µs  +{h['delta_us']:<9.3f} {where}{extra}")
    return "\n".join(lines)


def parse_net(text: str) -> tuple[int, int]:
    """'172.168.1.11' or '172.168.1.0/24' -> (net, mask) as the packet holds them (little-endian u32)."""
    net = ipaddress.IPv4Network(text, strict=False)
    to = lambda a: struct.unpack("<I", a.packed)[0]  # noqa: E731
    return to(net.network_address), to(net.netmask)


def parse_net6(text: str) -> tuple[list[int], list[int]]:
    """An IPv6 address or net -> (four words, four mask words) as the packet holds them."""
    net = ipaddress.IPv6Network(text, strict=False)
    return (list(struct.unpack("<4I", net.network_address.packed)), list(struct.unpack("<4I", net.netmask.packed)))


def set_filter(flt, text: str) -> None:
    """A trace filter's host/net from TEXT (an address or ADDR/LEN), either family: the probes
    match both in the kernel (common.h filter_match)."""
    net = ipaddress.ip_network(text, strict=False)
    if net.version == 4:
        flt.net, flt.mask = parse_net(text)
    else:
        flt.net6 = net
