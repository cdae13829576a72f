"""Labs across hosts (`hosts:`, issue #15): the lab hosts, the host each container runs on, and
what one host's part of the lab is (part()): its containers, the networks they are on with the
other hosts that have them (VXLAN peers), the ports published to them, the links between them.
Every host reads the same file; part() is what its daemon builds."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

from ..naming import LAB_RE, LAB_RULE, part_name
from .expect import SANDBOX_NODES, split_target
from .model import Container, Host, Spec
from .problems import Collector, show

VXLAN_OVERHEAD = 50     # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (IPv6 underlay: 70)
VNI_BASE = 4096         # derived VNIs start here: 1-4095 read like VLAN ids, left to the user


def hosts(c: Collector, raw: Any, uplink_raw: Any) -> list[Host]:
    if raw is None:
        return []
    out: list[Host] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(c.listing(raw, "hosts", "host ('- {name: h1, address: 192.168.0.11/24}')")):
        fld = f"hosts[{i}]"
        m = c.mapping(item, fld, "hosts[]")
        if m is None:
            continue
        name = m.get("name")
        if "name" in m and (not isinstance(name, str) or not LAB_RE.match(name)):
            c.add(f"{fld}.name", f"{show(name)} is not a host name", f"use {LAB_RULE}")
            name = None
        addr = c.iface(m["address"], f"{fld}.address") if "address" in m else None
        addr6 = c.iface(m["address6"], f"{fld}.address6", 6) if m.get("address6") is not None else None
        for key, value in (("name", name), ("address", str(addr.ip) if addr else None)):
            if value is not None and (key, value) in seen:
                c.add(f"{fld}.{key}", f"{value} is also {seen[(key, value)]}'s", f"give each host its own {key}")
                value = None
            if value is not None:
                seen[(key, value)] = f"hosts[{i}]"
        if name and addr:
            out.append(Host(name, addr, addr6))
    if out and isinstance(uplink_raw, dict) and uplink_raw.get("address") is not None:
        c.add("uplink.address", "given beside hosts:", "with hosts:, each host's address is its uplink address: "
              "remove uplink.address")
    nets = {h.address.network for h in out}
    if len(nets) > 1:
        c.add("hosts", f"the hosts' addresses are on different networks ({', '.join(sorted(map(str, nets)))})",
              "put every host on the one LAN the VXLAN tunnels cross (a routed underlay is not supported yet)")
    return out


def assign(c: Collector, conts: list[Container], raw_conts: list, hs: list[Host], where: dict[str, str]) -> list[Container]:
    """Each container's `host:`; required once there are hosts, refused without them."""
    names = {h.name for h in hs}
    out = []
    for x in conts:
        raw = next((r for r in raw_conts if isinstance(r, dict) and r.get("name") == x.name), {})
        h = raw.get("host")
        fld = f"{where.get(x.name, 'containers')}.host"
        if h is None:
            if hs:
                c.add(fld, "missing", f"say which host {x.name} runs on: host: {hs[0].name} (one of: "
                                      f"{', '.join(sorted(names))})")
            out.append(x)
            continue
        if not hs:
            c.add(fld, "given without hosts:", "list the lab's hosts under hosts:, or remove host:")
        elif h not in names:
            c.add(fld, f"no host named {show(h)}", f"use one of: {', '.join(sorted(names))}")
        out.append(dataclasses.replace(x, host=h if isinstance(h, str) else ""))
    return out


def check_links(c: Collector, spec_links, conts: list[Container]) -> None:
    on = {x.name: x.host for x in conts}
    for link in spec_links:
        a, b = (e.node for e in link.ends)
        if on.get(a) and on.get(b) and on[a] != on[b]:
            c.add(f"{link.where}.endpoints", f"{a} runs on {on[a]} and {b} on {on[b]}",
                  "a point-to-point link joins two containers on one host; put them on one host, or join "
                  "them with a network (networks stretch across hosts over VXLAN)")


def vni(spec: Spec, network: str, given: int) -> int:
    """The network's VXLAN id: given, or derived from the lab and network names (the same on every
    host reading the same file, whatever the order of its lists)."""
    if given:
        return given
    return VNI_BASE + zlib.crc32(f"{spec.lab}/{network}".encode()) % (2 ** 24 - VNI_BASE)


def _seen_from(spec: Spec, host: str, to: str) -> str:
    """An expectation's target as HOST's part can name it: its own containers and itself by
    name, anything else (another host's container, another host, the sandbox's stand-ins) by
    address."""
    node, port = split_target(to)
    addr = None
    for x in spec.containers:
        if x.name == node and x.host != host and x.primary is not None and x.primary.address is not None:
            addr = str(x.primary.address)
    for h in spec.hosts:
        if h.name == node:
            addr = None if h.name == host else str(h.address.ip)
            node = "host" if h.name == host else node
    sb = spec.sandbox
    if node in SANDBOX_NODES and sb is not None:
        addr = str({"gateway": spec.uplink.gateway, "client": sb.client.ip, "internet": sb.internet.ip}[node])
    target = addr or node
    return target if port is None else (f"[{target}]:{port}" if ":" in target else f"{target}:{port}")


def world_expect(spec: Spec) -> tuple:
    """The expectations from the sandbox's stand-ins: the sandbox's own daemon (or `check`
    without --as) checks those; each host checks its own containers'."""
    return tuple(e for e in spec.expect if e.src in SANDBOX_NODES)


def part(spec: Spec, host: str) -> Spec:
    """HOST's part of a multi-host lab, as a lab of its own (named LAB.HOST): its containers, the
    networks they are on (with the other hosts on each as VXLAN peers, the MTU lowered for the
    encapsulation unless given), the ports published to them, the links between them; its uplink
    address is the host's. Expectations from its containers or from the host itself go with it
    (from: HOST becomes from: host); the sandbox's stand-ins' go with the first host."""
    h = next(x for x in spec.hosts if x.name == host)
    mine = [x for x in spec.containers if x.host == host]
    names = {x.name for x in mine}
    where: dict[str, set[str]] = {}
    for x in spec.containers:
        for a in x.attachments:
            where.setdefault(a.network, set()).add(x.host)
    by = {x.name: x for x in spec.hosts}
    nets = []
    for n in spec.networks:
        on = where.get(n.name, set())
        if host not in on:
            continue
        peers = tuple(by[o].address.ip for o in sorted(on) if o != host)
        mtu = n.mtu or (1500 - VXLAN_OVERHEAD if peers else 0)
        nets.append(dataclasses.replace(n, peers=peers, vni=vni(spec, n.name, n.vni) if peers else n.vni, mtu=mtu))
    expect = []
    for e in spec.expect:
        if e.src in names or e.src == host:
            expect.append(dataclasses.replace(e, src="host" if e.src == host else e.src, to=_seen_from(spec, host, e.to)))
    return dataclasses.replace(
        spec, lab=part_name(spec.lab, host), networks=tuple(nets), containers=tuple(mine),
        ports=tuple(p for p in spec.ports if p.container in names),
        links=tuple(k for k in spec.links if {e.node for e in k.ends} <= names),
        uplink=dataclasses.replace(spec.uplink, address=h.address, address6=h.address6 or spec.uplink.address6),
        expect=tuple(expect), hosts=(), host_name=host)
