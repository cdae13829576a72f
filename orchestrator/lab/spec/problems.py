"""Collecting problems (every one at once, each with the field and the fix) and reading values.

Values are shown as the YAML spelled them (`true`, `null`, `'x'`), never as Python (`True`,
`None`)."""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any

from .schema import SCHEMA

IFNAMSIZ = 15  # bytes, without the trailing NUL
# letters, digits, '-' and '_': a dot is a separator in sysctl paths (net.ipv4.conf.br.0.x), a
# quote or '#' breaks an nft rule, and 'all' and 'default' are sysctl directories of their own
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
RESERVED_IFNAMES = {"lo", "all", "default"}


class SpecError(Exception):
    """One or more problems in a topology file. ``problems`` holds (field, message, fix)."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''} in the "
                 "topology, nothing applied"]
        for fld, msg, fix in self.problems:
            lines.append(f"{self.source}: {fld}: {msg}" + (f" — fix: {fix}" if fix else ""))
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "file": self.source,
            "problems": [{"field": f, "message": m, "fix": x} for f, m, x in self.problems],
        }


def show(value: Any) -> str:
    """VALUE as the YAML spelled it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if value else "''"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    return str(value)


def kind(value: Any) -> str:
    return {type(None): "nothing", bool: "true/false", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def join(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


class Collector:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[tuple[str, str, str]] = []

    def add(self, fld: str, msg: str, fix: str = "") -> None:
        self.problems.append((fld, msg, fix))

    def mapping(self, value: Any, fld: str, schema_key: str) -> dict | None:
        schema = SCHEMA[schema_key]
        if not isinstance(value, dict):
            self.add(fld or "(top level)", f"expected a mapping, got {kind(value)}",
                     f"write it as 'key: value' lines with the keys {', '.join(schema)}")
            return None
        for key in value:
            if key not in schema:
                close = difflib.get_close_matches(str(key), list(schema), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(schema)}"
                self.add(join(fld, str(key)), "unknown key", hint)
        for key, required in schema.items():
            if required and value.get(key) is None:
                self.add(join(fld, key), "missing", f"add '{key}:' to {fld or 'the top level'}")
        return value

    def listing(self, value: Any, fld: str, what: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(fld, f"expected a list, got {kind(value)}", f"write each {what} as a '- ' item")
            return []
        return value

    def flag(self, value: Any, fld: str, default: bool = False) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(fld, f"{show(value)} is not true or false", "write true or false")
            return default
        return value

    # ------------------------------------------------------------------ values

    def ifname(self, value: Any, fld: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.add(fld, f"interface name must be a non-empty string, got {kind(value)}", "e.g. 'veth1'")
            return None
        if len(value.encode()) > IFNAMSIZ:
            self.add(fld, f"interface name '{value}' is {len(value.encode())} bytes; Linux allows {IFNAMSIZ}",
                     f"shorten it, e.g. '{value[:IFNAMSIZ]}'")
            return None
        if not IFNAME_RE.match(value) or value in RESERVED_IFNAMES:
            self.add(fld, f"{show(value)} is not a usable interface name",
                     "use letters, digits, '-' or '_' (no dots or quotes; not lo, all or default)")
            return None
        return value

    def addr(self, value: Any, fld: str, version: int = 4) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError
            return cls(str(value))
        except ValueError:
            self.add(fld, f"{show(value)} is not an IPv{version} address",
                     "write it like 172.168.1.11" if version == 4 else 'write it like "fd00:168:1::11" (quoted)')
            return None

    def any_addr(self, value: Any, fld: str):
        try:
            return ipaddress.ip_address(str(value)) if isinstance(value, str) else None
        except ValueError:
            pass
        self.add(fld, f"{show(value)} is not an IP address", "write it like 127.0.0.1 or \"::1\"")
        return None

    def iface(self, value: Any, fld: str, version: int = 4):
        s = str(value) if isinstance(value, str) else None
        example = "192.168.0.10/24" if version == 4 else '"2001:db8:0:1::10/64"'
        if s is None:
            self.add(fld, f"{show(value)} is not an address with a prefix", f"write it like {example}")
            return None
        if "/" not in s:
            self.add(fld, f"{show(value)} needs a prefix length", f"write it like {s}/{24 if version == 4 else 64}")
            return None
        try:
            iface = (ipaddress.IPv4Interface if version == 4 else ipaddress.IPv6Interface)(s)
        except ValueError:
            self.add(fld, f"{show(value)} is not an IPv{version} address with prefix", f"write it like {example}")
            return None
        if version == 4 and iface.network.prefixlen < 31 and iface.ip in (iface.network.network_address,
                                                                             iface.network.broadcast_address):
            self.add(fld, f"{iface.ip} is the network or broadcast address of {iface.network}",
                     "pick a host address inside the network")
            return None
        return iface

    def network(self, value: Any, fld: str, version: int = 4, smallest: int = 29):
        cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        example = "172.20.0.0/24" if version == 4 else '"fd00:20::/64"'
        s = str(value) if isinstance(value, str) else None
        try:
            if s is None:
                raise ValueError(f"{kind(value)}, not text")
            net = cls(s, strict=True)
        except ValueError as e:
            fix = f"write it like {example}"
            try:
                fix = f"use the network address: {cls(s, strict=False)}"
            except (ValueError, TypeError):
                pass
            self.add(fld, f"{show(value)} is not an IPv{version} network ({e})", fix)
            return None
        if net.prefixlen > smallest:
            self.add(fld, f"{net} is too small for a network with containers", f"use /{smallest} or larger")
            return None
        return net

    def port(self, value: Any, fld: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.add(fld, f"{show(value)} is not a port number", "use a whole number from 1 to 65535")
            return None
        return value

    def whole(self, value: Any, fld: str, lo: int, hi: int, what: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.add(fld, f"{show(value)} is not a valid {what}", f"use a whole number from {lo} to {hi}")
            return None
        return value
