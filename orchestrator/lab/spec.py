"""The topology file: parsing and validation, before anything touches the kernel.

Validation collects every problem at once; each names the file, the field (a dotted path such
as ``containers[1].address``) and the fix. Nothing here has side effects.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from .naming import LAB_RE, LAB_RULE

IFNAMSIZ = 15  # bytes, without the trailing NUL
NODE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RESERVED_NODES = {"host", "gateway", "client", "internet", "lan"}
PROTOCOLS = ("tcp", "udp")
SERVICE_KINDS = ("http", "command")
DEFAULT_SPEC_NAME = "seed.yaml"


class SpecError(Exception):
    """One or more problems in a topology file. ``problems`` holds (field, message, fix)."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) in the topology, nothing applied"]
        for fld, msg, fix in self.problems:
            lines.append(f"{self.source}: {fld}: {msg}" + (f" — fix: {fix}" if fix else ""))
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "file": self.source,
            "problems": [{"field": f, "message": m, "fix": x} for f, m, x in self.problems],
        }


@dataclass(frozen=True)
class Service:
    kind: str  # http | command
    port: int | None = None
    argv: tuple[str, ...] = ()
    name: str = ""  # unique within its container: http:80, iperf3, iperf3:5201


@dataclass(frozen=True)
class Container:
    name: str
    address: ipaddress.IPv4Address
    interface: str
    host_interface: str
    services: tuple[Service, ...] = ()


@dataclass(frozen=True)
class Port:
    host_port: int
    container: str
    container_port: int
    protocol: str = "tcp"
    host_ip: ipaddress.IPv4Address | None = None  # None: every local address


@dataclass(frozen=True)
class Bridge:
    name: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address


@dataclass(frozen=True)
class Uplink:
    name: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None


@dataclass(frozen=True)
class Sandbox:
    """Who plays the seed's LAN and upstream when the lab runs hermetically."""

    client: ipaddress.IPv4Interface
    internet: ipaddress.IPv4Interface  # the stand-in for 114.114.114.114
    upstream: ipaddress.IPv4Interface  # the gateway's side facing "internet"


@dataclass(frozen=True)
class Spec:
    lab: str
    bridge: Bridge
    uplink: Uplink
    containers: tuple[Container, ...]
    ports: tuple[Port, ...]
    sandbox: Sandbox
    source: str = "<embedded seed.yaml>"
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def container(self, name: str) -> Container:
        for c in self.containers:
            if c.name == name:
                return c
        raise KeyError(name)


# --------------------------------------------------------------------------- parsing helpers

_SCHEMA: dict[str, dict[str, Any]] = {
    "": {"lab": 1, "bridge": 1, "uplink": 1, "containers": 1, "ports": 0, "sandbox": 0},
    "bridge": {"name": 0, "subnet": 1, "gateway": 0},
    "uplink": {"name": 1, "address": 1, "gateway": 0},
    "containers[]": {"name": 1, "address": 1, "interface": 0, "host_interface": 0, "services": 0},
    "services[]": {"kind": 1, "port": 0, "argv": 0},
    "ports[]": {"host_port": 1, "to": 1, "protocol": 0, "host_ip": 0},
    "sandbox": {"client": 0, "internet": 0, "upstream": 0},
}


class _Collector:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[tuple[str, str, str]] = []

    def add(self, fld: str, msg: str, fix: str = "") -> None:
        self.problems.append((fld, msg, fix))

    def mapping(self, value: Any, fld: str, schema_key: str) -> dict | None:
        schema = _SCHEMA[schema_key]
        if not isinstance(value, dict):
            self.add(fld or "(top level)", f"expected a mapping, got {_kind(value)}",
                     f"write it as 'key: value' lines with the keys {', '.join(schema)}")
            return None
        for key in value:
            if key not in schema:
                close = difflib.get_close_matches(str(key), list(schema), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(schema)}"
                self.add(_join(fld, str(key)), "unknown key", hint)
        for key, required in schema.items():
            if required and value.get(key) is None:
                self.add(_join(fld, key), "missing", f"add '{key}:' to {fld or 'the top level'}")
        return value


def _join(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _ifname(c: _Collector, value: Any, fld: str) -> str | None:
    if not isinstance(value, str) or not value:
        c.add(fld, f"interface name must be a non-empty string, got {_kind(value)}", "e.g. 'veth1'")
        return None
    if len(value.encode()) > IFNAMSIZ:
        c.add(fld, f"interface name '{value}' is {len(value.encode())} bytes; Linux allows {IFNAMSIZ}",
              f"shorten it, e.g. '{value[:IFNAMSIZ]}'")
        return None
    if value in (".", "..") or any(ch in value for ch in "/: \t\n") or value == "lo":
        c.add(fld, f"'{value}' is not a usable interface name", "use letters, digits, '-' or '_'")
        return None
    return value


def _addr(c: _Collector, value: Any, fld: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        c.add(fld, f"'{value}' is not an IPv4 address", "write it like 172.168.1.11")
        return None


def _iface(c: _Collector, value: Any, fld: str) -> ipaddress.IPv4Interface | None:
    s = str(value)
    if "/" not in s:
        c.add(fld, f"'{value}' needs a prefix length", f"write it like {s}/24")
        return None
    try:
        iface = ipaddress.IPv4Interface(s)
    except ValueError:
        c.add(fld, f"'{value}' is not an IPv4 address with prefix", "write it like 192.168.0.10/24")
        return None
    if iface.network.prefixlen < 31 and iface.ip in (iface.network.network_address,
                                                       iface.network.broadcast_address):
        c.add(fld, f"{iface.ip} is the network or broadcast address of {iface.network}",
              "pick a host address inside the network")
        return None
    return iface


def _port(c: _Collector, value: Any, fld: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        c.add(fld, f"'{value}' is not a port number", "use a whole number from 1 to 65535")
        return None
    return value


# --------------------------------------------------------------------------- public API

def load(path: str | None) -> Spec:
    """Read and validate a topology file; None means the embedded seed topology."""
    if path is None:
        text = resources.files("orchestrator").joinpath("data", DEFAULT_SPEC_NAME).read_text()
        return parse(text, "<embedded seed.yaml>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SpecError(path, [("(file)", f"cannot read: {e.strerror}", "check the path given with -f")]) from None
    return parse(text, path)


def parse(text: str, source: str = "<string>") -> Spec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise SpecError(source, [(where, f"not valid YAML: {getattr(e, 'problem', e)}",
                                  "fix the YAML syntax (indentation, colons, quotes)")]) from None
    return validate(raw, source)


def validate(raw: Any, source: str) -> Spec:
    c = _Collector(source)
    top = c.mapping(raw, "", "")
    if top is None:
        raise SpecError(source, c.problems)

    lab = top.get("lab")
    if "lab" in top and (not isinstance(lab, str) or not LAB_RE.match(lab)):
        c.add("lab", f"'{lab}' is not a valid lab name",
              f"use {LAB_RULE}")
        lab = None

    bridge = _bridge(c, top.get("bridge"))
    uplink = _uplink(c, top.get("uplink"), bridge)
    containers = _containers(c, top.get("containers"), bridge, uplink)
    raw_containers = top.get("containers") if isinstance(top.get("containers"), list) else []
    raw_names = {x["name"] for x in raw_containers if isinstance(x, dict) and isinstance(x.get("name"), str)}
    ports = _ports(c, top.get("ports", []), containers, raw_names)
    sandbox = _sandbox(c, top.get("sandbox", {}) or {}, uplink)

    if c.problems:
        raise SpecError(source, c.problems)
    assert lab and bridge and uplink and containers is not None and sandbox
    warnings = []
    if not bridge.subnet.is_private:
        warnings.append(
            f"{source}: bridge.subnet {bridge.subnet} is not private address space (RFC 1918); "
            "in host mode its addresses shadow real hosts on the internet — prefer e.g. 172.18.0.0/16")
    return Spec(lab=lab, bridge=bridge, uplink=uplink, containers=tuple(containers),
                ports=tuple(ports), sandbox=sandbox, source=source, warnings=tuple(warnings))


def _bridge(c: _Collector, raw: Any) -> Bridge | None:
    m = c.mapping(raw, "bridge", "bridge") if raw is not None else None
    if m is None:
        return None
    name = _ifname(c, m.get("name", "br0"), "bridge.name")
    subnet = None
    if "subnet" in m:
        try:
            subnet = ipaddress.IPv4Network(str(m["subnet"]), strict=True)
        except ValueError as e:
            s = str(m["subnet"])
            fix = "write it like 172.168.1.0/24"
            try:
                fix = f"use the network address: {ipaddress.IPv4Network(s, strict=False)}"
            except ValueError:
                pass
            c.add("bridge.subnet", f"'{s}' is not an IPv4 network ({e})", fix)
    if subnet is not None and subnet.prefixlen > 29:
        c.add("bridge.subnet", f"{subnet} is too small for a bridge with containers", "use /29 or larger")
        subnet = None
    gateway = None
    if subnet is not None:
        gw_raw = m.get("gateway", str(next(subnet.hosts())))
        gateway = _addr(c, gw_raw, "bridge.gateway")
        if gateway is not None and gateway not in subnet:
            c.add("bridge.gateway", f"{gateway} is outside bridge.subnet {subnet}",
                  f"use an address inside it, e.g. {next(subnet.hosts())}")
            gateway = None
        elif gateway is not None and gateway in (subnet.network_address, subnet.broadcast_address):
            c.add("bridge.gateway", f"{gateway} is the network or broadcast address of {subnet}",
                  f"use e.g. {next(subnet.hosts())}")
            gateway = None
    if name and subnet and gateway:
        return Bridge(name, subnet, gateway)
    return None


def _uplink(c: _Collector, raw: Any, bridge: Bridge | None) -> Uplink | None:
    m = c.mapping(raw, "uplink", "uplink") if raw is not None else None
    if m is None:
        return None
    name = _ifname(c, m.get("name"), "uplink.name") if "name" in m else None
    address = _iface(c, m["address"], "uplink.address") if "address" in m else None
    gateway = None
    if "gateway" in m and m["gateway"] is not None:
        gateway = _addr(c, m["gateway"], "uplink.gateway")
        if gateway is not None and address is not None:
            if gateway not in address.network:
                c.add("uplink.gateway", f"{gateway} is outside the uplink network {address.network}",
                      "use the upstream router's address on that network")
                gateway = None
            elif gateway == address.ip:
                c.add("uplink.gateway", f"{gateway} is the uplink's own address", "use the upstream router's address")
                gateway = None
    if bridge and address and address.network.overlaps(bridge.subnet):
        c.add("uplink.address", f"{address.network} overlaps bridge.subnet {bridge.subnet}",
              "the lab subnet and the uplink network must not overlap")
        address = None
    if bridge and name and name == bridge.name:
        c.add("uplink.name", f"'{name}' is also the bridge's name", "give the uplink its own interface name")
        name = None
    if name and address:
        return Uplink(name, address, gateway)
    return None


def _containers(c: _Collector, raw: Any, bridge: Bridge | None, uplink: Uplink | None) -> list[Container] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        c.add("containers", f"expected a list, got {_kind(raw)}", "write each container as '- name: …'")
        return None
    out: list[Container] = []
    names: dict[str, str] = {}
    addrs: dict[ipaddress.IPv4Address, str] = {}
    host_ifs: dict[str, str] = {}
    taken_host_ifs = {bridge.name: "bridge.name"} if bridge else {}
    if uplink:
        taken_host_ifs[uplink.name] = "uplink.name"
    for i, item in enumerate(raw):
        fld = f"containers[{i}]"
        m = c.mapping(item, fld, "containers[]")
        if m is None:
            continue
        ok = True
        name = m.get("name")
        if "name" in m:
            if not isinstance(name, str) or not NODE_RE.match(name):
                c.add(f"{fld}.name", f"'{name}' is not a valid node name",
                      "use up to 32 characters: a lowercase letter, then lowercase letters, digits, '-' or '_'")
                ok = False
            elif name in RESERVED_NODES:
                c.add(f"{fld}.name", f"'{name}' is reserved for the lab's own nodes", "pick another name")
                ok = False
            elif name in names:
                c.add(f"{fld}.name", f"duplicate container name '{name}' (also {names[name]})", "give each container its own name")
                ok = False
            else:
                names[name] = f"{fld}.name"
        address = _addr(c, m["address"], f"{fld}.address") if "address" in m else None
        if address is not None and bridge is not None:
            if address not in bridge.subnet:
                c.add(f"{fld}.address", f"{address} is outside bridge.subnet {bridge.subnet}",
                      f"pick a free address inside {bridge.subnet}")
                address = None
            elif address in (bridge.subnet.network_address, bridge.subnet.broadcast_address):
                c.add(f"{fld}.address", f"{address} is the network or broadcast address of {bridge.subnet}",
                      "pick a host address")
                address = None
            elif address == bridge.gateway:
                c.add(f"{fld}.address", f"{address} is the bridge's gateway address", "pick another free address")
                address = None
            elif address in addrs:
                c.add(f"{fld}.address", f"{address} is already used by {addrs[address]}", "give each container its own address")
                address = None
            else:
                addrs[address] = fld
        interface = _ifname(c, m.get("interface", "eth0"), f"{fld}.interface")
        host_if = _ifname(c, m.get("host_interface", f"veth{i + 1}"), f"{fld}.host_interface")
        if host_if is not None:
            clash = host_ifs.get(host_if) or taken_host_ifs.get(host_if)
            if clash:
                c.add(f"{fld}.host_interface", f"'{host_if}' is already used by {clash}",
                      "give each container's host-side interface its own name")
                host_if = None
            else:
                host_ifs[host_if] = f"{fld}.host_interface"
        services = _services(c, m.get("services", []) or [], fld)
        if ok and name and address and interface and host_if and services is not None:
            out.append(Container(name, address, interface, host_if, tuple(services)))
    return out


def _services(c: _Collector, raw: Any, base: str) -> list[Service] | None:
    if not isinstance(raw, list):
        c.add(f"{base}.services", f"expected a list, got {_kind(raw)}", "write '- kind: http' items")
        return None
    out = []
    ports: set[int] = set()
    for j, item in enumerate(raw):
        fld = f"{base}.services[{j}]"
        m = c.mapping(item, fld, "services[]")
        if m is None:
            return None
        kind = m.get("kind")
        if kind not in SERVICE_KINDS:
            c.add(f"{fld}.kind", f"unknown service kind '{kind}'", f"use one of: {', '.join(SERVICE_KINDS)}")
            return None
        if kind == "http":
            port = _port(c, m.get("port", 80), f"{fld}.port")
            if port is None:
                return None
            if port in ports:
                c.add(f"{fld}.port", f"port {port} is already served by another service", "use another port")
                return None
            ports.add(port)
            out.append(Service("http", port=port, name=f"http:{port}"))
        else:
            argv = m.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                c.add(f"{fld}.argv", "a command service needs argv: a non-empty list of strings",
                      "e.g. argv: [iperf3, -s]")
                return None
            name = argv[0].rsplit("/", 1)[-1] + (f":{m['port']}" if m.get("port") else "")
            out.append(Service("command", port=m.get("port"), argv=tuple(argv), name=name))
    return out


def _ports(c: _Collector, raw: Any, containers: list[Container] | None, named: set) -> list[Port]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.add("ports", f"expected a list, got {_kind(raw)}", "write each as '- host_port: 8888'")
        return []
    known = named  # a container with a bad address still has its name
    seen: dict[tuple, str] = {}
    out = []
    for i, item in enumerate(raw):
        fld = f"ports[{i}]"
        m = c.mapping(item, fld, "ports[]")
        if m is None:
            continue
        hp = _port(c, m["host_port"], f"{fld}.host_port") if "host_port" in m else None
        proto = m.get("protocol", "tcp")
        if proto not in PROTOCOLS:
            c.add(f"{fld}.protocol", f"unknown protocol '{proto}'", "use tcp or udp")
            proto = None
        host_ip = None
        if m.get("host_ip") is not None:
            host_ip = _addr(c, m["host_ip"], f"{fld}.host_ip")
            if host_ip is not None and host_ip.is_unspecified:
                host_ip = None
        target, cport = None, None
        if "to" in m:
            to = str(m["to"])
            name, sep, p = to.rpartition(":")
            if not sep or not p.isdigit():
                c.add(f"{fld}.to", f"'{to}' is not CONTAINER:PORT", "write it like container1:80")
            else:
                cport = _port(c, int(p), f"{fld}.to")
                if name not in known:
                    c.add(f"{fld}.to", f"no container named '{name}'",
                          f"use one of: {', '.join(sorted(known)) or '(none defined)'}")
                else:
                    target = name
        if hp and proto:
            key = (hp, proto)
            if key in seen:
                c.add(f"{fld}.host_port", f"{proto} port {hp} is already published by {seen[key]}",
                      "each host port and protocol can be published once")
                continue
            seen[key] = fld
        if hp and proto and target and cport:
            out.append(Port(hp, target, cport, proto, host_ip))
    return out


def _sandbox(c: _Collector, raw: Any, uplink: Uplink | None) -> Sandbox | None:
    m = c.mapping(raw, "sandbox", "sandbox")
    if m is None:
        return None
    if uplink is None:
        return None
    net = uplink.address.network
    default_client = f"{list(net.hosts())[-2] if net.num_addresses > 4 else net.broadcast_address - 1}/{net.prefixlen}"
    client = _iface(c, m.get("client", default_client), "sandbox.client")
    internet = _iface(c, m.get("internet", "203.0.113.10/24"), "sandbox.internet")
    upstream = _iface(c, m.get("upstream", "203.0.113.1/24"), "sandbox.upstream")
    if client and client.network != net:
        c.add("sandbox.client", f"{client} is not on the uplink network {net}", f"use an address in {net}")
        client = None
    if client and (client.ip == uplink.address.ip or client.ip == uplink.gateway):
        c.add("sandbox.client", f"{client.ip} is taken by the uplink or its gateway", "use another address")
        client = None
    if internet and upstream and internet.network != upstream.network:
        c.add("sandbox.upstream", f"{upstream} is not on the network of sandbox.internet {internet.network}",
              "put both on one network")
        upstream = None
    if internet and internet.network.overlaps(net):
        c.add("sandbox.internet", f"{internet.network} overlaps the uplink network", "use e.g. 203.0.113.10/24")
        internet = None
    if uplink.gateway is None:
        c.add("uplink.gateway", "the sandbox needs the upstream router's address", "add e.g. 'gateway: 192.168.0.2'")
        return None
    if client and internet and upstream:
        return Sandbox(client, internet, upstream)
    return None
