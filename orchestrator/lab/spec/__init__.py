"""The topology file: parsing and validation, before anything touches the kernel.

Validation collects every problem at once; each names the file, the field (a dotted path such
as ``containers[1].address``) and the fix. Nothing here has side effects. The parts: reading the
file without trusting it (../yamlload.py), the keys (schema.py), the networks, uplink and
sandbox (networks.py), the containers (containers.py), links (links.py), netem (netem.py),
published ports (ports.py), whole-topology checks (checks.py); the values (model.py).
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from typing import Any

from ..naming import LAB_RE, LAB_RULE
from ..yamlload import LoadProblem, parse_yaml, read_file
from . import checks
from .containers import NODE_RE, RESERVED_NODES, Names, containers
from .expect import expectations as parse_expectations
from .expect import nodes_of
from . import hosts as hostmod
from .links import links as parse_links
from .model import (DEFAULT_NETWORK, Attachment, Container, Expectation, Link, LinkEnd, Netem, Network, Port, RouteSpec, Sandbox,
                    Service, Spec, Uplink)
from .networks import networks as parse_networks
from .networks import sandbox as parse_sandbox
from .networks import seed_bridge, uplink as parse_uplink
from .ports import ports as parse_ports
from .problems import IFNAMSIZ, Collector, SpecError

DEFAULT_SPEC_NAME = "seed.yaml"

__all__ = ["DEFAULT_NETWORK", "Attachment", "Container", "Expectation", "IFNAMSIZ", "LAB_RE", "Link", "LinkEnd", "NODE_RE", "Netem", "Network", "Port",
           "RESERVED_NODES", "RouteSpec", "Sandbox", "Service", "Spec", "SpecError", "Uplink", "load", "parse",
           "validate"]


def load(path: str | None) -> Spec:
    """Read and validate a topology file; None means the embedded seed topology."""
    if path is None:
        text = resources.files("orchestrator").joinpath("data", DEFAULT_SPEC_NAME).read_text()
        return parse(text, "<embedded seed.yaml>")
    try:
        text = read_file(path)
    except LoadProblem as e:
        raise SpecError(path, [(e.where, e.message, e.fix)]) from None
    return parse(text, path)


def parse(text: str, source: str = "<string>") -> Spec:
    try:
        raw = parse_yaml(text)
    except LoadProblem as e:
        raise SpecError(source, [(e.where, e.message, e.fix)]) from None
    return validate(raw, source)


def validate(raw: Any, source: str) -> Spec:
    c = Collector(source)
    top = c.mapping(raw, "", "")
    if top is None:
        raise SpecError(source, c.problems)
    lab = top.get("lab")
    if "lab" in top and (not isinstance(lab, str) or not LAB_RE.match(lab)):
        c.add("lab", f"{lab!r} is not a valid lab name" if isinstance(lab, str) else "not a valid lab name",
              f"use {LAB_RULE}")
        lab = None
    seed_form = top.get("bridge") is not None
    if seed_form and top.get("networks") is not None:
        c.add("networks", "given beside bridge:", "describe the lab with one of them: bridge: (one network) or networks:")
    nets = seed_bridge(c, top["bridge"]) if seed_form else parse_networks(c, top.get("networks"))
    up = parse_uplink(c, top.get("uplink"))
    hs = hostmod.hosts(c, top.get("hosts"), top.get("uplink"))
    if up is not None and up.address is None:
        if not hs:
            c.add("uplink.address", "missing", "add address: (the uplink's address and prefix, e.g. 192.168.0.10/24)")
        else:   # the lab as a whole is seen from its first host (each host's part has its own)
            up = replace(up, address=hs[0].address, address6=up.address6 or hs[0].address6)
            if up.gateway is not None and up.gateway not in up.address.network:
                c.add("uplink.gateway", f"{up.gateway} is outside the hosts' network {up.address.network}",
                      "use the upstream router's address on the hosts' LAN")
    taken = {n.bridge: f"{n.where}.{'name' if n.where == 'bridge' else 'bridge'}" for n in nets}
    if up:
        taken[up.name] = "uplink.name"
    if up and up.name in {n.bridge for n in nets}:
        c.add("uplink.name", f"'{up.name}' is also a bridge's name", "give the uplink its own interface name")
    names = Names(nets, taken)
    conts = containers(c, top.get("containers"), nets, names, seed_form)
    raw_conts = top.get("containers") if isinstance(top.get("containers"), list) else []
    where_c = {x["name"]: f"containers[{i}]" for i, x in enumerate(raw_conts) if isinstance(x, dict)
               and isinstance(x.get("name"), str)}
    conts = hostmod.assign(c, conts, raw_conts, hs, where_c)
    clash = sorted({h.name for h in hs} & ({x.name for x in conts} | RESERVED_NODES))
    if clash:
        c.add("hosts", f"host name {clash[0]} is also a node's name", "give hosts names no container or stand-in has")
    named = {x["name"] for x in raw_conts if isinstance(x, dict) and isinstance(x.get("name"), str)}
    links = parse_links(c, top.get("links"), conts, lambda addr, fld: names.claim_address(c, addr, fld))
    hostmod.check_links(c, links, conts)
    ports = parse_ports(c, top.get("ports", []), conts, named, nets, up)
    want6 = any(n.subnet6 for n in nets) or bool(up and up.address6) or any(e.address6 for k in links for e in k.ends)
    sb = parse_sandbox(c, top.get("sandbox", {}) or {}, up, want6)
    checks.overlaps(c, nets, links, up, sb)
    where = {x["name"]: f"containers[{i}]" for i, x in enumerate(raw_conts) if isinstance(x, dict)
             and isinstance(x.get("name"), str)}
    checks.routes(c, conts, nets, links, where)
    expect = parse_expectations(c, top.get("expect", []), nodes_of(named) | {h.name for h in hs})
    if c.problems:
        raise SpecError(source, c.problems)
    assert lab and up and sb
    return Spec(lab=lab, networks=tuple(nets), uplink=up, containers=tuple(conts), ports=tuple(ports), sandbox=sb,
                links=tuple(links), source=source, warnings=tuple(_warnings(nets, source)), seed_form=seed_form,
                expect=tuple(expect), hosts=tuple(hs))


def _warnings(nets: list[Network], source: str) -> list[str]:
    out = []
    for n in nets:
        if n.subnet is not None and not n.subnet.is_private:
            out.append(f"{source}: {n.where}.subnet {n.subnet} is not private address space (RFC 1918); in host mode "
                       "its addresses shadow real hosts on the internet — prefer e.g. 172.18.0.0/16")
    return out
