"""`bridgelab explain SRC DST`: where and why a flow dies in the lab, and what to do about it.

Three steps, as a person debugging the seed would take them:
  1. static (static.py): the lab's own drift from its topology on this flow's path (the same
     dry-run reconcile `up` uses: links down, routes missing or wrong, sysctls, the nft table,
     services), what of the nft table matters for the flow (masquerade, local DNAT), rp_filter
     against the reverse route;
  2. live (live.py): one probe of the flow from SRC, traced by the eBPF probes (hop by hop, drops
     with the kernel's reason) and by nftables tracing in the host (the rule that dropped it);
  3. verdict (verdict.py): one sentence and the fix.
Flow resolution is flow.py, the text rendering render.py. Exit 0: the flow works; 1: it does
not; 2: bad input.
"""
from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict

from ...adapters import netns
from ...errors import InputError
from ...lab.resources import Desired
from ...lab.spec import Spec
from .flow import Flow, resolve
from .live import Live, live
from .render import render
from .static import static
from .verdict import verdict

EXIT_WORKS, EXIT_BROKEN, EXIT_INPUT = 0, 1, 2

__all__ = ["Flow", "Live", "explain", "render", "resolve", "run", "static", "verdict"]


def _source_for(ns: str | None, addr: str) -> str | None:
    from ...adapters.rtnl import Rtnl

    async def go():
        r = Rtnl()
        try:
            return (await r.route_get(ns, addr))[1]
        finally:
            r.close()
    return asyncio.run(go())


def explain(spec: Spec, d: Desired, flow: Flow, up: str) -> dict:
    missing = [ns for ns in d.managed_ns() if ns is not None and not netns.exists(ns)
               and ns in (flow.src_ns, d.host_ns, d.nodes.get(flow.target_node or "", ""))]
    if missing:
        out = {"works": False, "cause": "lab_not_up", "verdict": f"the lab is not up (no namespace {missing[0]})",
               "fix": up}
        findings, lv = [], Live()
    else:
        findings = asyncio.run(static(flow, spec, d, up))
        lv = live(flow, d)
        out = verdict(flow, findings, lv, d)
    return {"flow": asdict(flow), **out,
            "static": [asdict(f) for f in findings], "live": {"result": lv.result, "packets": lv.packets,
                                                               "nft_trace_drops": lv.rules, "degraded": lv.degraded}}


def run(spec: Spec, d: Desired, args, up: str = "bridgelab up") -> int:
    try:
        flow = resolve(spec, d, args.src, args.dst, args.port, args.proto, source_for=_source_for,
                       version=getattr(args, "ip_version", None))
    except InputError as e:
        print(f"bridgelab explain: {e}", file=sys.stderr)
        return EXIT_INPUT
    report = explain(spec, d, flow, up)
    print(json.dumps(report, indent=1) if args.json else render(report))
    return EXIT_WORKS if report["works"] else EXIT_BROKEN
