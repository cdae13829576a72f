"""The lab's nftables table, rendered as text. Pure, and checked against golden files.

One table per lab (``ip bridgelab_<lab>``) holds every rule we own, so ``down`` and healing never
read or touch anyone else's. It is always applied whole, in one transaction.
"""

from __future__ import annotations

from .naming import table_name
from .spec import Port, Spec


def _dnat(spec: Spec, p: Port) -> str:
    target = spec.container(p.container).address
    match = f"ip daddr {p.host_ip} " if p.host_ip is not None else ""
    return (f"{match}{p.protocol} dport {p.host_port} dnat to {target}:{p.container_port} "
            f'comment "publish {p.protocol}/{p.host_port} -> {p.container}:{p.container_port}"')


def render_table(spec: Spec) -> str:
    br = spec.bridge.name
    up = spec.uplink.name
    subnet = spec.bridge.subnet
    everywhere = [p for p in spec.ports if p.host_ip is None or not p.host_ip.is_loopback]
    loopback_only = [p for p in spec.ports if p.host_ip is not None and p.host_ip.is_loopback]
    lines: list[str] = []
    add = lines.append

    add(f"table ip {table_name(spec.lab)} {{")
    add(f'\tcomment "owned by bridgelab lab {spec.lab}; edits are undone by its daemon"')

    # Ports published on 127.0.0.1 must not become reachable from outside through the bridge's
    # route_localnet=1 (moby#45610); the kernel drops other 127/8 traffic as martian anyway.
    add("\tchain raw_prerouting {")
    add("\t\ttype filter hook prerouting priority raw; policy accept;")
    add(f'\t\tiifname {{ "{br}", "{up}" }} ip daddr 127.0.0.0/8 counter drop '
        'comment "loopback is never reachable from the lab or the LAN"')
    add("\t}")

    # DNAT only for local destinations (CVE-2025-67499): the host's own addresses, from outside
    # (prerouting) and from the host itself (output: the seed's failed `curl 192.168.0.10:8888`).
    add("\tchain nat_prerouting {")
    add("\t\ttype nat hook prerouting priority dstnat; policy accept;")
    if everywhere:
        add("\t\tfib daddr type local jump publish")
    add("\t}")
    add("\tchain nat_output {")
    add("\t\ttype nat hook output priority -100; policy accept;")
    if everywhere:
        add("\t\tfib daddr type local jump publish")
    if loopback_only:
        add("\t\tip daddr 127.0.0.0/8 jump publish_loopback")
    add("\t}")
    add("\tchain publish {")
    for p in everywhere:
        add(f"\t\t{_dnat(spec, p)}")
    add("\t}")
    if loopback_only:
        add("\tchain publish_loopback {")
        for p in loopback_only:
            add(f"\t\t{_dnat(spec, p)}")
        add("\t}")

    add("\tchain nat_postrouting {")
    add("\t\ttype nat hook postrouting priority srcnat; policy accept;")
    add(f'\t\tip saddr {subnet} oifname "{up}" masquerade comment "containers leaving by the uplink"')
    if spec.ports:
        add(f'\t\toifname "{br}" ct status dnat ip saddr 127.0.0.0/8 masquerade '
            'comment "the host reaching a published port via 127.0.0.1"')
        add(f'\t\toifname "{br}" ct status dnat ip saddr {subnet} masquerade '
            'comment "hairpin: a container reaching a published port via the host"')
    add("\t}")

    # Forwarding into the lab: replies, published ports and bridge-to-bridge traffic pass;
    # unsolicited packets routed at container addresses from outside are dropped (Docker does the
    # same). Policy stays accept: traffic that is not about the lab is not ours to judge.
    add("\tchain filter_forward {")
    add("\t\ttype filter hook forward priority filter; policy accept;")
    add(f'\t\tiifname "{br}" oifname "{br}" accept')
    add(f'\t\toifname "{br}" ct state established,related accept')
    add(f'\t\toifname "{br}" ct status dnat accept')
    add(f'\t\toifname "{br}" ip daddr {subnet} counter drop comment "unsolicited traffic into the lab"')
    add("\t}")
    add("}")
    return "\n".join(lines) + "\n"

