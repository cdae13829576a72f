"""The networks (the seed's `bridge:` is one, named "bridge"), the uplink and the sandbox."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .model import DEFAULT_NETWORK, Network, Sandbox, Uplink
from .problems import Collector, show

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ULA = ipaddress.IPv6Network("fc00::/7")
MTU_MIN, MTU_MAX = 576, 65535  # 1280 for IPv6 (checked where a network has it)


def _gateway(c: Collector, m: dict, key: str, fld: str, subnet, version: int):
    if subnet is None:
        return None
    first = next(subnet.hosts()) if version == 4 else subnet.network_address + 1
    gw = c.addr(m.get(key, str(first)), fld, version)
    if gw is None:
        return None
    if gw not in subnet:
        c.add(fld, f"{gw} is outside {fld.rsplit('.', 1)[0]}.subnet{'6' if version == 6 else ''} {subnet}",
              f"use an address inside it, e.g. {first}")
        return None
    if gw == subnet.network_address or (version == 4 and gw == subnet.broadcast_address):
        c.add(fld, f"{gw} is the network or broadcast address of {subnet}", f"use e.g. {first}")
        return None
    return gw


def _v6(c: Collector, m: dict, base: str) -> tuple:
    if m.get("subnet6") is None:
        for k in ("gateway6", "nat6"):
            if m.get(k) is not None:
                c.add(f"{base}.{k}", "given without subnet6", f"add subnet6 to {base}, or remove {k}")
        return None, None, True
    subnet6 = c.network(m["subnet6"], f"{base}.subnet6", version=6, smallest=120)
    gateway6 = _gateway(c, m, "gateway6", f"{base}.gateway6", subnet6, 6)
    nat6 = c.flag(m.get("nat6"), f"{base}.nat6", default=bool(subnet6 and subnet6.subnet_of(ULA)))
    return subnet6, gateway6, nat6


def _mtu(c: Collector, m: dict, fld: str, ipv6: bool) -> int:
    if m.get("mtu") is None:
        return 0
    lo = 1280 if ipv6 else MTU_MIN
    return c.whole(m["mtu"], fld, lo, MTU_MAX, "MTU") or 0


def seed_bridge(c: Collector, raw: Any) -> list[Network]:
    m = c.mapping(raw, "bridge", "bridge")
    if m is None:
        return []
    name = c.ifname(m.get("name", "br0"), "bridge.name")
    subnet = c.network(m["subnet"], "bridge.subnet") if "subnet" in m else None
    gateway = _gateway(c, m, "gateway", "bridge.gateway", subnet, 4)
    subnet6, gateway6, nat6 = _v6(c, m, "bridge")
    mtu = _mtu(c, m, "bridge.mtu", subnet6 is not None)
    if name and subnet and gateway:
        return [Network(DEFAULT_NETWORK, name, subnet, gateway, False, mtu, subnet6, gateway6, nat6, 0, "bridge")]
    return []


def networks(c: Collector, raw: Any) -> list[Network]:
    out: list[Network] = []
    names: dict[str, str] = {}
    bridges: dict[str, str] = {}
    for i, item in enumerate(c.listing(raw, "networks", "network")):
        fld = f"networks[{i}]"
        m = c.mapping(item, fld, "networks[]")
        if m is None:
            continue
        name = m.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            c.add(f"{fld}.name", f"{show(name)} is not a valid network name",
                  "use up to 32 characters: a lowercase letter, then lowercase letters, digits, '-' or '_'")
            name = None
        elif name in names:
            c.add(f"{fld}.name", f"duplicate network name '{name}' (also {names[name]})", "give each network its own name")
            name = None
        else:
            names[name] = fld
        bridge = c.ifname(m.get("bridge", f"br-{name}"[:15] if name else "br"), f"{fld}.bridge")
        if bridge and bridge in bridges:
            c.add(f"{fld}.bridge", f"bridge '{bridge}' is already {bridges[bridge]}'s",
                  "give each network its own bridge: name")
            bridge = None
        elif bridge:
            bridges[bridge] = fld
        subnet = c.network(m["subnet"], f"{fld}.subnet") if m.get("subnet") is not None else None
        if subnet is None and m.get("gateway") is not None:
            c.add(f"{fld}.gateway", "given without subnet", f"add subnet to {fld}, or remove gateway")
        gateway = _gateway(c, m, "gateway", f"{fld}.gateway", subnet, 4)
        subnet6, gateway6, nat6 = _v6(c, m, fld)
        if subnet is None and subnet6 is None and "subnet" not in m:
            c.add(f"{fld}.subnet", "a network needs a subnet (or subnet6)", "add e.g. 'subnet: 172.20.0.0/24'")
        internal = c.flag(m.get("internal"), f"{fld}.internal")
        vni = c.whole(m["vni"], f"{fld}.vni", 1, 2 ** 24 - 1, "VXLAN VNI") if m.get("vni") is not None else 0
        mtu = _mtu(c, m, f"{fld}.mtu", subnet6 is not None)
        if name and bridge and (subnet is not None or subnet6 is not None):
            out.append(Network(name, bridge, subnet, gateway, internal, mtu, subnet6, gateway6, nat6, vni or 0, fld))
    return out


def uplink(c: Collector, raw: Any) -> Uplink | None:
    m = c.mapping(raw, "uplink", "uplink") if raw is not None else None
    if m is None:
        return None
    name = c.ifname(m.get("name"), "uplink.name") if "name" in m else None
    address = c.iface(m["address"], "uplink.address") if "address" in m else None
    gateway = None
    if m.get("gateway") is not None:
        gateway = c.addr(m["gateway"], "uplink.gateway")
        if gateway is not None and address is not None:
            if gateway not in address.network:
                c.add("uplink.gateway", f"{gateway} is outside the uplink network {address.network}",
                      "use the upstream router's address on that network")
                gateway = None
            elif gateway == address.ip:
                c.add("uplink.gateway", f"{gateway} is the uplink's own address", "use the upstream router's address")
                gateway = None
    address6 = c.iface(m["address6"], "uplink.address6", 6) if m.get("address6") is not None else None
    gateway6 = None
    if m.get("gateway6") is not None:
        gateway6 = c.addr(m["gateway6"], "uplink.gateway6", 6)
        if gateway6 is not None and address6 is not None and gateway6 not in address6.network \
                and not gateway6.is_link_local:
            c.add("uplink.gateway6", f"{gateway6} is outside the uplink network {address6.network}",
                  "use the upstream router's address on that network")
            gateway6 = None
    if name and (address or "address" not in m):   # no address: the hosts: give it (spec.validate checks)
        return Uplink(name, address, gateway, address6, gateway6)
    return None


def sandbox(c: Collector, raw: Any, up: Uplink | None, want6: bool) -> Sandbox | None:
    m = c.mapping(raw, "sandbox", "sandbox")
    if m is None or up is None:
        return None
    net = up.address.network
    default_client = f"{list(net.hosts())[-2] if net.num_addresses > 4 else net.broadcast_address - 1}/{net.prefixlen}"
    client = c.iface(m.get("client", default_client), "sandbox.client")
    internet = c.iface(m.get("internet", "203.0.113.10/24"), "sandbox.internet")
    upstream = c.iface(m.get("upstream", "203.0.113.1/24"), "sandbox.upstream")
    if client and client.network != net:
        c.add("sandbox.client", f"{client} is not on the uplink network {net}", f"use an address in {net}")
        client = None
    if client and (client.ip == up.address.ip or client.ip == up.gateway):
        c.add("sandbox.client", f"{client.ip} is taken by the uplink or its gateway", "use another address")
        client = None
    if internet and upstream and internet.network != upstream.network:
        c.add("sandbox.upstream", f"{upstream} is not on the network of sandbox.internet {internet.network}",
              "put both on one network")
        upstream = None
    if internet and internet.network.overlaps(net):
        c.add("sandbox.internet", f"{internet.network} overlaps the uplink network", "use e.g. 203.0.113.10/24")
        internet = None
    if up.gateway is None:
        c.add("uplink.gateway", "the sandbox needs the upstream router's address", "add e.g. 'gateway: 192.168.0.2'")
        return None
    six = _sandbox6(c, m, up, want6)
    if client and internet and upstream and six is not None:
        return Sandbox(client, internet, upstream, *six)
    return None


def _sandbox6(c: Collector, m: dict, up: Uplink, want6: bool) -> tuple | None:
    """The stand-ins' IPv6 when the topology has IPv6: the gateway at the uplink's gateway6, the
    client on the uplink's network, the internet routed via the gateway (which has no route back
    to the lab's ULA subnets: the seed's NAT lesson, in IPv6)."""
    if not want6:
        for k in ("client6", "internet6", "upstream6"):
            if m.get(k) is not None:
                c.add(f"sandbox.{k}", "given but the topology has no IPv6", "remove it, or give networks a subnet6")
        return (None, None, None)
    if up.address6 is None or up.gateway6 is None:
        c.add("uplink.address6", "the topology has IPv6: the sandbox needs the uplink's address6 and gateway6",
              'add e.g. address6: "2001:db8:0:1::10/64" and gateway6: "2001:db8:0:1::2" to uplink')
        return None
    client6 = c.iface(m.get("client6", "2001:db8:0:1::100/64"), "sandbox.client6", 6)
    internet6 = c.iface(m.get("internet6", "2001:db8:ff::10/64"), "sandbox.internet6", 6)
    upstream6 = c.iface(m.get("upstream6", "2001:db8:ff::1/64"), "sandbox.upstream6", 6)
    if client6 and client6.network != up.address6.network:
        c.add("sandbox.client6", f"{client6} is not on the uplink network {up.address6.network}",
              f"use an address in {up.address6.network}")
        client6 = None
    if client6 and client6.ip in (up.address6.ip, up.gateway6):
        c.add("sandbox.client6", f"{client6.ip} is taken by the uplink or its gateway6", "use another address")
        client6 = None
    if internet6 and upstream6 and internet6.network != upstream6.network:
        c.add("sandbox.upstream6", f"{upstream6} is not on the network of sandbox.internet6 {internet6.network}",
              "put both on one network")
        upstream6 = None
    if internet6 and internet6.network.overlaps(up.address6.network):
        c.add("sandbox.internet6", f"{internet6.network} overlaps the uplink network", 'use e.g. "2001:db8:ff::10/64"')
        internet6 = None
    if client6 and internet6 and upstream6:
        return (client6, internet6, upstream6)
    return None
