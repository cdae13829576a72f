"""Containers: their networks (the seed's `address` is an attachment to the one network),
static routes, `forwarding` (a router), and services."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .model import DEFAULT_NETWORK, Attachment, Container, Network, RouteSpec, Service
from .netem import netem
from .problems import Collector, show

NODE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RESERVED_NODES = {"host", "gateway", "client", "internet", "lan"}
SERVICE_KINDS = ("http", "command")


class Names:
    """Who uses what, across the lab: addresses, and interface names in the host namespace."""

    def __init__(self, networks: list[Network], taken_host_ifs: dict[str, str]):
        self.addresses: dict[Any, str] = {}
        self.host_ifs: dict[str, str] = dict(taken_host_ifs)
        for n in networks:
            for gw in (n.gateway, n.gateway6):
                if gw is not None:
                    self.addresses[gw] = f"{n.where}'s gateway"

    def claim_address(self, c: Collector, addr, fld: str) -> bool:
        if addr in self.addresses:
            owner = self.addresses[addr]
            if owner.endswith("'s gateway"):
                c.add(fld, f"{addr} is the {'bridge' if owner.startswith('bridge') else 'network'}'s gateway address",
                      "pick another free address")
            else:
                c.add(fld, f"{addr} is already used by {owner}", "give each container its own address")
            return False
        self.addresses[addr] = fld.rsplit(".", 1)[0]
        return True


def containers(c: Collector, raw: Any, nets: list[Network], names: Names, seed_form: bool) -> list[Container]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.add("containers", f"expected a list, got {'a mapping' if isinstance(raw, dict) else show(raw)}",
              "write each container as '- name: …'")
        return []
    out: list[Container] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(raw):
        fld = f"containers[{i}]"
        m = c.mapping(item, fld, "containers[]")
        if m is None:
            continue
        name = _name(c, m, fld, seen)
        if seed_form and m.get("networks") is not None:
            c.add(f"{fld}.networks", "with the seed's `bridge:` a container joins it by its address",
                  "give the container address:, or describe the lab with networks: instead of bridge:")
            continue
        if seed_form or "address" in m or "address6" in m:
            atts = _seed_attachment(c, m, fld, i, nets, names, seed_form)
        else:
            atts = _attachments(c, m.get("networks"), fld, i, nets, names, m.get("name"))
        if "networks" in m and ("address" in m or "address6" in m):
            c.add(f"{fld}.address", "given beside networks:", "put the address in its networks: entry")
        forwarding = c.flag(m.get("forwarding"), f"{fld}.forwarding")
        routes = _routes(c, m.get("routes"), f"{fld}.routes")
        services = _services(c, m.get("services", []) or [], fld)
        if m.get("netem") is not None:
            c.add(f"{fld}.netem", "netem goes on a network attachment or a link, not on a container",
                  "move it into the container's networks: entry, or onto a link")
        if name and atts is not None:
            out.append(Container(name, tuple(atts), tuple(services), forwarding, tuple(routes)))
    return out


def _name(c: Collector, m: dict, fld: str, seen: dict[str, str]) -> str | None:
    name = m.get("name")
    if "name" not in m:
        return None
    if not isinstance(name, str) or not NODE_RE.match(name):
        c.add(f"{fld}.name", f"{show(name)} is not a valid node name",
              "use up to 32 characters: a lowercase letter, then lowercase letters, digits, '-' or '_'")
    elif name in RESERVED_NODES:
        c.add(f"{fld}.name", f"'{name}' is reserved for the lab's own nodes", "pick another name")
    elif name in seen:
        c.add(f"{fld}.name", f"duplicate container name '{name}' (also {seen[name]})", "give each container its own name")
    else:
        seen[name] = f"{fld}.name"
        return name
    return None


def _host_if(c: Collector, value: Any, fld: str, names: Names) -> str | None:
    host_if = c.ifname(value, fld)
    if host_if is None:
        return None
    clash = names.host_ifs.get(host_if)
    if clash:
        c.add(fld, f"'{host_if}' is already used by {clash}", "give each container's host-side interface its own name")
        return None
    names.host_ifs[host_if] = fld
    return host_if


def _address(c: Collector, value: Any, fld: str, net: Network | None, names: Names, version: int):
    """An attachment's address: inside its network's subnet, not its network/broadcast/gateway,
    used once in the lab."""
    where = f"{net.where}.subnet{'6' if version == 6 else ''}" if net else ""
    subnet = (net.subnet if version == 4 else net.subnet6) if net else None
    addr = c.addr(value, fld, version)
    if addr is None or net is None:
        return None
    if subnet is None:
        c.add(fld, f"{net.where} has no subnet{'6' if version == 6 else ''}",
              f"add subnet{'6' if version == 6 else ''} to {net.where}, or remove this address")
        return None
    if addr not in subnet:
        c.add(fld, f"{addr} is outside {where} {subnet}", f"pick a free address inside {subnet}")
        return None
    if addr == subnet.network_address or (version == 4 and addr == subnet.broadcast_address):
        c.add(fld, f"{addr} is the network or broadcast address of {subnet}", "pick a host address")
        return None
    return addr if names.claim_address(c, addr, fld) else None


def _seed_attachment(c: Collector, m: dict, fld: str, i: int, nets: list[Network], names: Names,
                     seed_form: bool) -> list[Attachment] | None:
    """The seed's form: `address` (and `address6`, `interface`, `host_interface`) on the
    container itself, on the one network."""
    net = next((n for n in nets if n.name == DEFAULT_NETWORK), None) if seed_form else None
    if not seed_form:
        c.add(f"{fld}.address", "a container address without the seed's `bridge:`",
              "with networks:, write the address in the container's networks: entry")
        return None
    if "address" not in m and "address6" not in m:
        return []  # on no network (links only)
    address = _address(c, m["address"], f"{fld}.address", net, names, 4) if "address" in m else None
    address6 = _address(c, m["address6"], f"{fld}.address6", net, names, 6) if m.get("address6") is not None else None
    interface = c.ifname(m.get("interface", "eth0"), f"{fld}.interface")
    host_if = _host_if(c, m.get("host_interface", f"veth{i + 1}"), f"{fld}.host_interface", names)
    ok = net is not None and interface and host_if and ("address" not in m or address) \
        and (m.get("address6") is None or address6)
    return [Attachment(net.name, address, interface, host_if, address6)] if ok else None


def _attachments(c: Collector, raw: Any, fld: str, i: int, nets: list[Network], names: Names,
                 cname: str | None = None) -> list[Attachment] | None:
    by_name = {n.name: n for n in nets}
    out: list[Attachment] = []
    seen_nets: set[str] = set()
    ok = True
    for k, item in enumerate(c.listing(raw, f"{fld}.networks", "network attachment")):
        f = f"{fld}.networks[{k}]"
        m = c.mapping(item, f, "attachments[]")
        if m is None:
            ok = False
            continue
        net = by_name.get(m.get("network")) if isinstance(m.get("network"), str) else None
        if net is None and "network" in m:
            c.add(f"{f}.network", f"no network named {show(m.get('network'))}",
                  f"use one of: {', '.join(by_name) or '(none defined under networks:)'}")
        elif net is not None and net.name in seen_nets:
            c.add(f"{f}.network", f"{fld} is already on network '{net.name}'", "attach a container to a network once")
            net = None
        if net is not None:
            seen_nets.add(net.name)
        addr = _address(c, m["address"], f"{f}.address", net, names, 4) if m.get("address") is not None else None
        addr6 = _address(c, m["address6"], f"{f}.address6", net, names, 6) if m.get("address6") is not None else None
        if net is not None and m.get("address") is None and m.get("address6") is None:
            c.add(f"{f}.address", "missing", f"give the container an address in {net.subnet or net.subnet6}")
        interface = c.ifname(m.get("interface", f"eth{k}"), f"{f}.interface")
        host_if = _host_if(c, m.get("host_interface", f"veth{i + 1}" + (f"-{k}" if k else "")), f"{f}.host_interface",
                           names)
        em, at = netem(c, m.get("netem"), f"{f}.netem")
        if em and at and net is not None and at not in (cname, net.name):
            c.add(f"{f}.netem.at", f"{at!r} is neither the container nor the network",
                  f"at: {cname} (what it sends) or at: {net.name} (what it receives); leave it out for both")
            em = False
        if net is None or not interface or not host_if or (m.get("address") is not None and addr is None) \
                or (m.get("address6") is not None and addr6 is None) or em is False:
            ok = False
            continue
        out.append(Attachment(net.name, addr, interface, host_if, addr6, em or None, at))
    return out if ok else None


def _routes(c: Collector, raw: Any, fld: str) -> list[RouteSpec]:
    out = []
    for j, item in enumerate(c.listing(raw, fld, "route")):
        f = f"{fld}[{j}]"
        m = c.mapping(item, f, "routes[]")
        if m is None:
            continue
        dst_raw = m.get("dst")
        via = c.any_addr(m["via"], f"{f}.via") if m.get("via") is not None else None
        dst = None
        if dst_raw is not None:
            if dst_raw == "default":
                dst = ipaddress.ip_network("::/0" if via is not None and via.version == 6 else "0.0.0.0/0")
            else:
                try:
                    dst = ipaddress.ip_network(str(dst_raw), strict=True)
                except ValueError as e:
                    c.add(f"{f}.dst", f"{show(dst_raw)} is not a network ({e})",
                          "write it like 10.0.23.0/30 or default")
        if dst is not None and via is not None:
            if dst.version != via.version:
                c.add(f"{f}.via", f"{via} and {dst} are of different IP versions", "route IPv4 via IPv4, IPv6 via IPv6")
            else:
                out.append(RouteSpec(dst, via))
    return out


def _services(c: Collector, raw: Any, base: str) -> list[Service]:
    """Every service problem is reported (not only the first); names are unique per container."""
    out: list[Service] = []
    ports: set[tuple[str, int]] = set()
    names: set[str] = set()
    for j, item in enumerate(c.listing(raw, f"{base}.services", "service ('- kind: http')")):
        fld = f"{base}.services[{j}]"
        m = c.mapping(item, fld, "services[]")
        if m is None:
            continue
        svc = _service(c, m, fld)
        if svc is None:
            continue
        if svc.port and (svc.protocol, svc.port) in ports:
            c.add(f"{fld}.port", f"{svc.protocol} port {svc.port} is already served by another service", "use another port")
            continue
        if svc.port:
            ports.add((svc.protocol, svc.port))
        name, k = svc.name, 2
        while name in names:  # two `iperf3` commands: iperf3 and iperf3#2
            name, k = f"{svc.name}#{k}", k + 1
        names.add(name)
        out.append(Service(svc.kind, svc.port, svc.argv, name, svc.protocol))
    return out


def _service(c: Collector, m: dict, fld: str) -> Service | None:
    kind = m.get("kind")
    if kind not in SERVICE_KINDS:
        c.add(f"{fld}.kind", f"unknown service kind {show(kind)}", f"use one of: {', '.join(SERVICE_KINDS)}")
        return None
    proto = m.get("protocol", "tcp")
    if proto not in ("tcp", "udp"):
        c.add(f"{fld}.protocol", f"unknown protocol {show(proto)}", "use tcp or udp")
        return None
    if kind == "http":
        port = c.port(m.get("port", 80), f"{fld}.port")
        if proto != "tcp":
            c.add(f"{fld}.protocol", "an http service serves TCP", "remove protocol")
            return None
        return Service("http", port=port, name=f"http:{port}") if port else None
    argv = m.get("argv")
    port = c.port(m["port"], f"{fld}.port") if m.get("port") is not None else None
    bad = None
    if not isinstance(argv, list) or not argv:
        bad = "a command service needs argv: a non-empty list of strings"
    elif not all(isinstance(a, str) for a in argv):
        bad = "every argv item must be a string (quote numbers: \"5201\")"
    elif not argv[0] or any("\0" in a for a in argv):
        bad = "argv holds an empty program name or a NUL byte"
    if bad:
        c.add(f"{fld}.argv", bad, "e.g. argv: [iperf3, -s]")
        return None
    if m.get("port") is not None and port is None:
        return None
    name = m.get("name") or argv[0].rsplit("/", 1)[-1] + (f":{port}" if port else "")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:#-]{0,47}$", name):
        c.add(f"{fld}.name", f"{show(name)} is not a usable service name", "use letters, digits and - _ . : #")
        return None
    return Service("command", port=port, argv=tuple(argv), name=name, protocol=proto)
