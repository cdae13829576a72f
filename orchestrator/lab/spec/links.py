"""Point-to-point links between two containers (containerlab's `links:`): a veth pair, optional
addresses on each end, optional netem on both ends or on the one `at:` names."""

from __future__ import annotations

from typing import Any

from .model import Container, Link, LinkEnd
from .netem import netem
from .problems import Collector, show


def _endpoint(c: Collector, raw: Any, fld: str, by_name: dict[str, Container], used: dict) -> tuple[str, str] | None:
    if not isinstance(raw, str) or raw.count(":") != 1:
        c.add(fld, f"{show(raw)} is not NODE:INTERFACE", 'write it like "r1:eth1"')
        return None
    node, ifname = raw.split(":")
    if node not in by_name:
        c.add(fld, f"no container named '{node}'", f"use one of: {', '.join(sorted(by_name)) or '(none)'}")
        return None
    if not c.ifname(ifname, fld):
        return None
    key = (node, ifname)
    if key in used:
        c.add(fld, f"{node} already has an interface {ifname} ({used[key]})",
              "name another interface for this link (eth1, eth2, ...)")
        return None
    used[key] = fld
    return key


def _addresses(c: Collector, raw: Any, fld: str, version: int) -> tuple | None:
    if raw is None:
        return (None, None)
    if not isinstance(raw, list) or len(raw) != 2:
        c.add(fld, "expected two addresses, one per endpoint", "write it like [10.0.12.1/30, 10.0.12.2/30]")
        return None
    a, b = (c.iface(x, f"{fld}[{k}]", version) for k, x in enumerate(raw))
    if a is None or b is None:
        return None
    if a.network != b.network:
        c.add(f"{fld}[1]", f"{b} is not on the network of {a} ({a.network})", "put both ends on one network")
        return None
    if a.ip == b.ip:
        c.add(f"{fld}[1]", f"both ends have {a.ip}", "give each end its own address")
        return None
    return (a, b)


def links(c: Collector, raw: Any, conts: list[Container], claim_address) -> list[Link]:
    by_name = {x.name: x for x in conts}
    used = {(x.name, a.interface): f"its networks: entry for {a.network}" for x in conts for a in x.attachments}
    out = []
    for i, item in enumerate(c.listing(raw, "links", "link")):
        fld = f"links[{i}]"
        m = c.mapping(item, fld, "links[]")
        if m is None:
            continue
        eps = m.get("endpoints")
        if not isinstance(eps, list) or len(eps) != 2:
            if "endpoints" in m:
                c.add(f"{fld}.endpoints", "expected two endpoints", 'write it like ["r1:eth1", "r2:eth1"]')
            continue
        ends = [_endpoint(c, e, f"{fld}.endpoints[{k}]", by_name, used) for k, e in enumerate(eps)]
        if ends[0] and ends[1] and ends[0][0] == ends[1][0]:
            c.add(f"{fld}.endpoints", f"both ends are on {ends[0][0]}", "a link joins two containers")
            ends = [None, None]
        v4 = _addresses(c, m.get("addresses"), f"{fld}.addresses", 4)
        v6 = _addresses(c, m.get("addresses6"), f"{fld}.addresses6", 6)
        mtu = c.whole(m["mtu"], f"{fld}.mtu", 1280 if m.get("addresses6") else 576, 65535, "MTU") \
            if m.get("mtu") is not None else 0
        em, at = netem(c, m.get("netem"), f"{fld}.netem")
        if at and isinstance(eps, list) and at not in eps:
            c.add(f"{fld}.netem.at", f"{show(at)} is not one of this link's endpoints",
                  f"use one of: {', '.join(str(e) for e in eps)} (or leave at: out for both directions)")
            em = False
        claimed = True
        for version, pair in ((4, v4), (6, v6)):
            for k in (0, 1):
                if pair and pair[k] is not None and not claim_address(
                        pair[k].ip, f"{fld}.addresses{'6' if version == 6 else ''}[{k}]"):
                    claimed = False
        if not (ends[0] and ends[1] and v4 is not None and v6 is not None and claimed) or em is False or mtu is None:
            continue
        le = []
        for k, (node, ifname) in enumerate(ends):
            this = f"{node}:{ifname}"
            le.append(LinkEnd(node, ifname, v4[k], v6[k], em if em and (not at or at == this) else None))
        out.append(Link(le[0], le[1], mtu or 0, fld))
    return out
