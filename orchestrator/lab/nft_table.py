"""The lab's nftables table, rendered as text. Pure, and checked against golden files.

One table per lab holds every rule we own, so ``down`` and healing never read or touch anyone
else's: ``ip bridgelab_<lab>`` for an IPv4-only topology, ``inet bridgelab_<lab>`` (both
families' rules) when it has IPv6. It is always applied whole, in one transaction.
"""

from __future__ import annotations

from .naming import table_name
from .spec import Network, Port, Spec

LOOP = {4: "127.0.0.0/8", 6: "::1"}
IP = {4: "ip", 6: "ip6"}


def family(spec: Spec) -> str:
    return "inet" if spec.ipv6 else "ip"


class _Render:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.inet = spec.ipv6
        self.versions = (4, 6) if self.inet else (4,)
        self.lines: list[str] = []
        self.many = len(spec.networks) > 1
        self.external = [n for n in spec.networks if not n.internal]

    def add(self, line: str) -> None:
        self.lines.append(line)

    def chain(self, name: str, hook: str | None, rules: list[str]) -> None:
        self.add(f"\tchain {name} {{")
        if hook:
            self.add(f"\t\t{hook}")
        self.lines += [f"\t\t{r}" for r in rules]
        self.add("\t}")

    def subnet(self, n: Network, v: int):
        return n.subnet if v == 4 else n.subnet6

    def of(self, n: Network, text: str) -> str:
        return f"{n.name}: {text}" if self.many else text

    # ------------------------------------------------------------------ NAT

    def target(self, p: Port, v: int) -> str | None:
        a = self.spec.reachable(p.container)
        addr = (a.address if v == 4 else a.address6) if a else None
        if addr is None:
            return None
        return f"{addr}:{p.container_port}" if v == 4 else f"[{addr}]:{p.container_port}"

    def dnat(self, p: Port) -> list[str]:
        out = []
        for v in self.versions:
            if p.host_ip is not None and p.host_ip.version != v:
                continue
            to = self.target(p, v)
            if to is None:
                continue
            match = f"{IP[v]} daddr {p.host_ip} " if p.host_ip is not None else \
                (f"meta nfproto ipv{v} " if self.inet else "")
            verb = f"dnat {IP[v]} to" if self.inet else "dnat to"
            out.append(f"{match}{p.protocol} dport {p.host_port} {verb} {to} "
                       f'comment "publish {p.protocol}/{p.host_port} -> {p.container}:{p.container_port}"')
        return out

    def postrouting(self) -> list[str]:
        up = self.spec.uplink.name
        out = []
        for n in self.external:
            if n.subnet is not None:
                out.append(f'ip saddr {n.subnet} oifname "{up}" masquerade comment "{self.of(n, "containers leaving by the uplink")}"')
            if n.subnet6 is not None and n.nat6:
                out.append(f'ip6 saddr {n.subnet6} oifname "{up}" masquerade comment '
                           f'"{self.of(n, "containers leaving by the uplink (NAT66)")}"')
        for n in self.targets():
            # IPv4 only: the kernel never lets ::1 be a source off the loopback (RFC 4291
            # 2.5.3), so [::1] is relayed by the proxy, never DNATed (nat_output returns)
            out.append(f'oifname "{n.bridge}" ct status dnat ip saddr {LOOP[4]} masquerade '
                       'comment "the host reaching a published port via 127.0.0.1"')
            for v in self.versions:
                if self.subnet(n, v) is not None:
                    out.append(f'oifname "{n.bridge}" ct status dnat {IP[v]} saddr {self.subnet(n, v)} masquerade '
                               'comment "hairpin: a container reaching a published port via the host"')
        return out

    def targets(self) -> list[Network]:
        """The networks published ports DNAT into (their bridges see hairpin and 127.0.0.1 traffic)."""
        names = self.spec.published_networks()
        return [n for n in self.external if n.name in names]

    # ------------------------------------------------------------------ forward

    def forward(self) -> list[str]:
        out = []
        nets = self.spec.networks
        if self.many:
            # Docker's isolation: a container reaches another network only by being on it (or
            # through a router the topology declares), never through the host
            pairs = ", ".join(f'"{a.bridge}" . "{b.bridge}"' for a in nets for b in nets if a is not b)
            out.append(f'iifname . oifname {{ {pairs} }} counter drop comment "networks are isolated from each other"')
        for n in nets:
            if n.internal:
                out.append(f'iifname "{n.bridge}" oifname != "{n.bridge}" counter drop comment "{n.name} is internal: no way out"')
                out.append(f'oifname "{n.bridge}" iifname != "{n.bridge}" counter drop comment "{n.name} is internal: no way in"')
        for n in nets:
            br = n.bridge
            out += [f'iifname "{br}" oifname "{br}" accept',
                    f'oifname "{br}" ct state established,related accept',
                    f'oifname "{br}" ct status dnat accept']
            for v in self.versions:
                if self.subnet(n, v) is not None:
                    out.append(f'oifname "{br}" {IP[v]} daddr {self.subnet(n, v)} counter drop '
                               f'comment "{self.of(n, "unsolicited traffic into the lab")}"')
        return out


def render_table(spec: Spec) -> str:
    """Everything of the lab's in netfilter, as one table."""
    r = _Render(spec)
    everywhere = [p for p in spec.ports if p.host_ip is None or not p.host_ip.is_loopback]
    loopback = [p for p in spec.ports if p.host_ip is not None and p.host_ip.is_loopback]
    loop4 = [p for p in loopback if p.host_ip.version == 4]   # [::1] ports go through the proxy
    devs = ", ".join(f'"{d}"' for d in [n.bridge for n in spec.networks] + [spec.uplink.name])
    r.add(f"table {family(spec)} {table_name(spec.lab)} {{")
    r.add(f'\tcomment "owned by bridgelab lab {spec.lab}; edits are undone by its daemon"')
    # Ports published on 127.0.0.1 must not become reachable from outside through the bridge's
    # route_localnet=1 (moby#45610); the kernel drops other 127/8 traffic as martian anyway.
    r.chain("raw_prerouting", "type filter hook prerouting priority raw; policy accept;",
            [f"iifname {{ {devs} }} {IP[v]} daddr {LOOP[v]} counter drop "
             'comment "loopback is never reachable from the lab or the LAN"' for v in r.versions])
    # DNAT only for local destinations (CVE-2025-67499): the host's own addresses, from outside
    # (prerouting) and from the host itself (output: the seed's failed `curl 192.168.0.10:8888`).
    r.chain("nat_prerouting", "type nat hook prerouting priority dstnat; policy accept;",
            ["fib daddr type local jump publish"] if everywhere else [])
    # [::1] is the loopback IPv6 proxy's (proxy/): a DNATed reply could never come back to ::1
    r.chain("nat_output", "type nat hook output priority -100; policy accept;",
            (["ip6 daddr ::1 return"] if r.inet and everywhere else [])
            + (["fib daddr type local jump publish"] if everywhere else [])
            + ([f"ip daddr {LOOP[4]} jump publish_loopback"] if loop4 else []))
    r.chain("publish", None, [x for p in everywhere for x in r.dnat(p)])
    if loop4:
        r.chain("publish_loopback", None, [x for p in loop4 for x in r.dnat(p)])
    r.chain("nat_postrouting", "type nat hook postrouting priority srcnat; policy accept;", r.postrouting())
    # Forwarding into the lab: replies, published ports and bridge-to-bridge traffic pass;
    # unsolicited packets routed at container addresses from outside are dropped (Docker does the
    # same). Policy stays accept: traffic that is not about the lab is not ours to judge.
    r.chain("filter_forward", "type filter hook forward priority filter; policy accept;", r.forward())
    r.add("}")
    return "\n".join(r.lines) + "\n"
