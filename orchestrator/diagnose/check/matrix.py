"""`bridgelab check --matrix`: every node to every other (ICMP) and to every published port, the
picture of what the lab allows. Each cell is one probe (probe.py), all in parallel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ...errors import InputError
from ...lab.resources import Desired
from ...lab.spec import Expectation, Spec
from . import WORKERS, check_one


def nodes(spec: Spec, d: Desired) -> list[str]:
    """The nodes with an address (not the sandbox's LAN switch), in the lab's order."""
    from ..explain.flow import node_addresses
    have = set(node_addresses(spec, d.mode, 4)) | set(node_addresses(spec, d.mode, 6))
    return [n for n in d.nodes if n in have]


def columns(spec: Spec, d: Desired) -> list[tuple[str, str, str]]:
    """(column title, target as explain takes it, protocol)."""
    cols = [(n, n, "icmp") for n in nodes(spec, d)]
    cols += [(f"host:{p.host_port}/{p.protocol}", f"host:{p.host_port}", p.protocol) for p in spec.ports
             if p.host_ip is None or not p.host_ip.is_loopback]
    return cols


def matrix(spec: Spec, d: Desired) -> dict:
    cols = columns(spec, d)
    cells = [(src, title, Expectation(f"{src}>{title}", src, target, proto, None, "works"))
             for src in nodes(spec, d) for title, target, proto in cols if target != src]

    def one(item):
        src, title, e = item
        try:
            r = check_one(spec, d, e)
            return src, title, r.state, r.flow.get("dst_addr", "")
        except InputError as err:
            return src, title, f"error {err}", ""
    with ThreadPoolExecutor(WORKERS) as pool:
        got = list(pool.map(one, cells))
    rows = nodes(spec, d)
    out: dict[str, dict[str, str]] = {src: {} for src in rows}
    addrs: dict[str, dict[str, str]] = {src: {} for src in rows}
    for src, title, state, addr in got:
        out[src][title] = state
        addrs[src][title] = addr
    return {"lab": spec.lab, "rows": rows, "columns": [c[0] for c in cols], "cells": out,
            "addresses": addrs}


def render(m: dict, color: bool) -> str:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"lab {m['lab']}: who reaches whom (✓ works, ✗ does not; ICMP to nodes, TCP/UDP to published ports)",
              title_justify="left")
    t.add_column("from \\ to")
    for c in m["columns"]:
        t.add_column(c, justify="center")
    for src in m["rows"]:
        row = []
        for c in m["columns"]:
            state = m["cells"][src].get(c)
            row.append("·" if state is None else "[green]✓[/]" if state in ("replied", "connected") else "[red]✗[/]")
        t.add_row(src, *row)
    c = Console(record=True, width=200, color_system="standard" if color else None, force_terminal=color,
                file=open("/dev/null", "w"))
    c.print(t)
    return "\n".join(x.rstrip() for x in c.export_text(styles=color).rstrip("\n").splitlines())
