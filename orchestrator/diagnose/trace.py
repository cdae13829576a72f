"""`bridgelab trace`: follow matching packets through the lab, hop by hop.

Loads its own copy of the probes in trace mode (the daemon's metrics probes keep running beside
it), filtered in the kernel by protocol, host/net and port; events come up through BPF ring
buffers (probes/session.py). Lost events are counted by the kernel, shown as they happen and in
the summary.
"""
from __future__ import annotations

import ipaddress
import json
import signal
import sys
import time

from ..adapters import netns
from ..errors import EXIT_FAIL, EXIT_NOT_UP, EXIT_OK
from ..lab.resources import Desired

PROTOS = {"icmp": 1, "tcp": 6, "udp": 17}
REORDER_NS = 5_000_000


def node_addresses(d: Desired, node: str) -> list[str]:
    """The node's first address of each family (a dual-stack node is followed in both)."""
    ns = d.nodes.get(node)
    out: dict[int, str] = {}
    for a in d.addresses:
        if a.ns == ns and a.dev != "lo" and not a.iface.ip.is_link_local:
            out.setdefault(a.iface.version, str(a.iface.ip))
    return [out[v] for v in sorted(out)]



def missing_namespace(d: Desired) -> str | None:
    """The first of the lab's namespaces that is not there (the lab is not up), or None."""
    return next((ns for ns in d.managed_ns() if ns is not None and not netns.exists(ns)), None)


def run(d: Desired, args, up_hint: str = "bridgelab up") -> int:
    from ..probes.events import render, set_filter
    from ..probes.loader import TraceFilter
    from ..probes.session import TraceSession

    host = args.host_filter
    hosts = [host] if host else (node_addresses(d, args.node) if args.node else [])
    flt = TraceFilter(proto=PROTOS.get(args.proto or "", 0), port=args.port or 0, ndp=bool(getattr(args, "ndp", False)))
    for h in hosts:
        set_filter(flt, h)
    host = ",".join(hosts) or None
    gone = missing_namespace(d)
    if gone:
        print(f"bridgelab trace: lab {d.lab} is not up (no namespace {gone}); run '{up_hint}'", file=sys.stderr)
        return EXIT_NOT_UP
    s = TraceSession(d, flt, args.ring_pages)
    for note in s.start():
        print(f"trace: {note}", file=sys.stderr)
    if not s.ok:
        print("bridgelab trace: the tc probes could not load; nothing to trace with (see bridgelab doctor)",
              file=sys.stderr)
        s.close()
        return EXIT_FAIL
    asm = s.assembler()
    shown = {"packets": 0}

    def emit(packets) -> bool:
        for pk in packets:
            if args.direction and not _direction_ok(pk, args.direction, host):
                continue
            shown["packets"] += 1
            if args.json:
                print(json.dumps({"packet": shown["packets"], **pk.as_dict()}), flush=True)
            else:
                print(render(pk, shown["packets"]) + "\n", flush=True)
            if args.count and shown["packets"] >= args.count:
                return True
        return False

    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    print(f"tracing lab {d.lab}: proto={args.proto or 'any'} host={host or 'any'} port={args.port or 'any'}"
          f" (probes: {', '.join(n for n, f in s.p.families.items() if f.ok)}; Ctrl-C stops)", file=sys.stderr,
          flush=True)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    lost_seen, done = 0, False
    try:
        while not stop["now"] and not done:
            s.poll(10)
            lost = s.lost()
            if lost > lost_seen:
                msg = f"LOST {lost - lost_seen} events (ring buffer full; total {lost}): raise --ring-pages or narrow the filter"
                print(json.dumps({"lost_events": lost, "new": lost - lost_seen}) if args.json else msg,
                      file=sys.stderr if not args.json else sys.stdout, flush=True)
                lost_seen = lost
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            s.feed(asm, now - REORDER_NS)
            done = emit(asm.finished(now))
            if deadline and time.monotonic() > deadline:
                break
        if not done:
            s.drain()
            s.feed(asm, None)
            emit(asm.finished(None, everything=True))
    finally:
        lost = s.lost()
        s.close()
    summary = {"packets": shown["packets"], "events": s.events, "lost_events": lost}
    print(json.dumps({"summary": summary}) if args.json else
          f"{shown['packets']} packets, {s.events} events, {lost} events lost", file=sys.stderr
          if not args.json else sys.stdout, flush=True)
    return EXIT_OK


def _direction_ok(pk, direction: str, host: str | None) -> bool:
    first = next((h.tuple for h in pk.hops if h.tuple), None)
    if not first or not host:
        return True
    src = ipaddress.ip_address(first["src"])
    src_in = any(src in ipaddress.ip_network(h, strict=False) for h in host.split(","))
    return src_in if direction == "out" else not src_in
