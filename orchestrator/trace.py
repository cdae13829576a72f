"""`bridgelab trace`: follow matching packets through the lab, hop by hop.

Loads its own copy of the probes in trace mode (the daemon's metrics probes keep running beside
it), filtered in the kernel by protocol, host/net and port; events come up through BPF ring
buffers. Lost events are counted by the kernel, shown as they happen and in the summary.
"""
from __future__ import annotations

import ctypes as ct
import json
import signal
import sys
import time

from . import logs, netns
from .model import Desired

log = logs.get("bridgelab.trace")
PROTOS = {"icmp": 1, "tcp": 6, "udp": 17}
REORDER_NS = 5_000_000


def node_address(d: Desired, node: str) -> str | None:
    ns = d.nodes.get(node)
    for a in d.addresses:
        if a.ns == ns and a.dev != "lo":
            return str(a.iface.ip)
    return None


def run(d: Desired, args) -> int:
    from .probes.events import Assembler, Event, parse_net, render
    from .probes.loader import Probes, TraceFilter
    from .probes.reasons import Symbols, reason_names

    host = args.host_filter
    if args.node and not host:
        host = node_address(d, args.node)
    flt = TraceFilter(proto=PROTOS.get(args.proto or "", 0), port=args.port or 0)
    if host:
        flt.net, flt.mask = parse_net(host)
    missing = [ns for ns in d.managed_ns() if ns is not None and not netns.exists(ns)]
    if missing:
        print(f"bridgelab trace: lab {d.lab} is not up (no namespace {missing[0]}); run 'bridgelab up'",
              file=sys.stderr)
        return 4
    p = Probes(d.lab, trace=flt, ring_pages=args.ring_pages)
    p.load()
    for name, fam in p.families.items():
        if not fam.ok:
            print(f"trace: probe {name} unavailable: {fam.reason}", file=sys.stderr)
        elif fam.degraded:
            print(f"trace: probe {name} degraded: {fam.degraded}", file=sys.stderr)
    if not p.families["tc"].ok:
        print("bridgelab trace: the tc probes could not load; nothing to trace with (see bridgelab doctor)",
              file=sys.stderr)
        p.close()
        return 1
    p.sync(d)
    for where, why in p.attach_errors.items():
        print(f"trace: cannot attach {where}: {why}", file=sys.stderr)
    ports = {e.name for v in d.veths for e in (v.a, v.b) if e.master}

    def names(cookie: int, ifindex: int) -> tuple[str, str]:
        node = p.known_cookies.get(cookie, "?")
        if not ifindex:
            return node, ""
        return node, p.known_ifnames.get((cookie, ifindex), f"if{ifindex}")

    asm = Assembler(names, ports, Symbols().name, reason_names())
    stats = {"events": 0, "packets": 0}

    pending: list = []

    def on_event(_ctx, data, _size):
        pending.append(Event.from_buffer_copy(ct.string_at(data, ct.sizeof(Event))))
        return 0

    def feed(cutoff: int | None) -> None:
        # three rings, one per probe family: merge them in time order before assembling, and hold
        # back the last few ms in case a slower ring still has earlier hops
        pending.sort(key=lambda e: e.ts)
        n = len(pending) if cutoff is None else next((i for i, e in enumerate(pending) if e.ts > cutoff), len(pending))
        for e in pending[:n]:
            asm.feed(e)
        stats["events"] += n
        del pending[:n]

    managers = []
    for fam, ring in (("tc", "tc_events"), ("nf", "nf_events"), ("drops", "drop_events")):
        b = p.families[fam].bpf
        if b is not None:
            b[ring].open_ring_buffer(on_event)
            managers.append(b)
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    print(f"tracing lab {d.lab}: proto={args.proto or 'any'} host={host or 'any'} port={args.port or 'any'}"
          f" (probes: {', '.join(n for n, f in p.families.items() if f.ok)}; Ctrl-C stops)", file=sys.stderr,
          flush=True)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    lost_seen = 0
    from bcc.libbcc import lib

    def emit(packets) -> bool:
        for pk in packets:
            if args.direction and not _direction_ok(pk, args.direction, host):
                continue
            stats["packets"] += 1
            if args.json:
                print(json.dumps({"packet": stats["packets"], **pk.as_dict()}), flush=True)
            else:
                print(render(pk, stats["packets"]) + "\n", flush=True)
            if args.count and stats["packets"] >= args.count:
                return True
        return False

    done = False
    try:
        while not stop["now"] and not done:
            got = 0
            for b in managers:
                got += max(0, lib.bpf_consume_ringbuf(b._ringbuf_manager) or 0)
            if not got:
                managers[0].ring_buffer_poll(10)
            lost = _lost(p)
            if lost > lost_seen:
                msg = f"LOST {lost - lost_seen} events (ring buffer full; total {lost}): raise --ring-pages or narrow the filter"
                print(json.dumps({"lost_events": lost, "new": lost - lost_seen}) if args.json else msg,
                      file=sys.stderr if not args.json else sys.stdout, flush=True)
                lost_seen = lost
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            feed(now - REORDER_NS)
            done = emit(asm.finished(now))
            if deadline and time.monotonic() > deadline:
                break
        if not done:
            for b in managers:
                lib.bpf_consume_ringbuf(b._ringbuf_manager)
            feed(None)
            emit(asm.finished(None, everything=True))
    finally:
        lost = _lost(p)
        p.close()
    summary = {"packets": stats["packets"], "events": stats["events"], "lost_events": lost}
    print(json.dumps({"summary": summary}) if args.json else
          f"{stats['packets']} packets, {stats['events']} events, {lost} events lost", file=sys.stderr
          if not args.json else sys.stdout, flush=True)
    return 0


def _lost(p) -> int:
    total = 0
    for fam, table in (("tc", "tc_lost"), ("nf", "nf_lost"), ("drops", "drop_lost")):
        t = p.table(fam, table)
        if t is not None:
            total += sum(int(x) for x in t[0])
    return total


def _direction_ok(pk, direction: str, host: str | None) -> bool:
    first = next((h.tuple for h in pk.hops if h.tuple), None)
    if not first or not host:
        return True
    import ipaddress
    net = ipaddress.IPv4Network(host, strict=False)
    src_in = ipaddress.IPv4Address(first["src"]) in net
    return src_in if direction == "out" else not src_in
