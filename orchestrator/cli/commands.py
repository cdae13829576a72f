"""One function per subcommand: (args, spec) -> exit code."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys

from .. import logs
from ..adapters import netns
from ..errors import EXIT_FAIL, EXIT_INPUT, EXIT_NOT_UP, EXIT_OK
from ..lab import desired as plan
from ..lab import naming
from ..lab.spec import Spec
from ..reconcile.state import State


def _color(enabled: bool):
    def c(code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if enabled else text
    return c


def _mode(args, lab: str) -> str:
    if getattr(args, "host", False):
        return plan.HOST
    st = State.load(lab)
    return st.mode if st else plan.SANDBOX


def up_hint(args) -> str:
    """`bridgelab up` as this user would type it again: with the file they gave."""
    return "bridgelab up" + (f" -f {args.file}" if getattr(args, "file", None) else "") + \
        (" --host" if getattr(args, "host", False) else "")


def cmd_validate(args, spec: Spec) -> int:
    if args.json:
        print(json.dumps({"valid": True, "lab": spec.lab, "warnings": list(spec.warnings)}))
    else:
        for w in spec.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"{spec.source}: valid (lab {spec.lab}, {len(spec.containers)} containers, {len(spec.ports)} ports)")
    return EXIT_OK


def _report(result, args, verb: str) -> int:
    c = _color(sys.stdout.isatty() and not args.json)
    if args.json:
        print(json.dumps({
            "changed": result.changed and not getattr(args, "dry_run", False),
            "actions": [a.as_json() for a in result.actions],
            "errors": [{"action": a.as_json(), "error": e} for a, e in result.errors],
            "seconds": round(result.seconds, 4),
        }, indent=1))
    else:
        if not result.actions:
            print(c("32", f"{verb}: nothing to change") + f" ({result.seconds * 1000:.0f} ms)")
        failed = {id(a) for a, _ in result.errors}
        for a in result.actions:
            mark = c("31", "✗") if id(a) in failed else c("32", "+")
            print(f"  {mark} {a.describe()}")
        for a, e in result.errors:
            print(c("31", f"failed: {a.describe()}: {e}"), file=sys.stderr)
        if result.actions:
            n = len(result.actions)
            print(f"{verb}: {n} change{'s' if n != 1 else ''} in {result.seconds * 1000:.0f} ms"
                  + (" (dry run)" if getattr(args, "dry_run", False) else ""))
    return EXIT_FAIL if result.errors else EXIT_OK


def cmd_up(args, spec: Spec) -> int:
    mode = plan.HOST if args.host else plan.SANDBOX
    if mode == plan.HOST:
        for w in spec.warnings:
            print(f"warning: {w}", file=sys.stderr)
    desired = plan.desired(spec, mode)
    from ..reconcile.engine import Engine

    async def run():
        eng = Engine(desired, spec.source)
        try:
            return await eng.reconcile(dry_run=args.dry_run)
        finally:
            eng.close()

    return _report(asyncio.run(run()), args, "up")


def cmd_run(args, spec: Spec) -> int:
    from ..daemon.run import Options, run

    mode = plan.HOST if args.host else plan.SANDBOX
    if mode == plan.HOST:
        for w in spec.warnings:
            logs.get().warning("topology", warning=w)
    if args.resync <= 0:
        print("bridgelab run: --resync must be positive", file=sys.stderr)
        return EXIT_INPUT
    if args.flap_heals < 2:
        print("bridgelab run: --flap-heals must be at least 2", file=sys.stderr)
        return EXIT_INPUT
    opts = Options(heal=not args.no_heal, resync=args.resync, down_on_exit=args.down_on_exit,
                   flap_heals=args.flap_heals, probes=not args.no_probes, bpf_stats=args.bpf_stats,
                   metrics_addr=None if args.metrics_addr == "off" else args.metrics_addr)
    return run(plan.desired(spec, mode), spec.source, opts)


def cmd_down(args, spec: Spec) -> int:
    from ..reconcile.teardown import teardown

    lab = spec.lab if args.lab is None else args.lab
    naming.check_lab(lab)
    done = asyncio.run(teardown(lab))
    if args.json:
        print(json.dumps({"lab": lab, "removed": done}, indent=1))
    else:
        for d in done:
            print(f"  - {d}")
        print(f"down: lab {lab}: " + (f"{len(done)} removed" if done else "nothing to remove"))
    return EXIT_OK


def cmd_status(args, spec: Spec) -> int:
    from ..diagnose.status import collect, render
    desired = plan.desired(spec, _mode(args, spec.lab))
    report = asyncio.run(collect(desired, spec))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(render(report, _color(sys.stdout.isatty()), up_hint(args)))
    return EXIT_OK if report["up"] else EXIT_NOT_UP


def cmd_exec(args, spec: Spec) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("bridgelab exec: give a command after --, e.g. bridgelab exec container1 -- ping -c1 172.168.1.12",
              file=sys.stderr)
        return EXIT_INPUT
    desired = plan.desired(spec, _mode(args, spec.lab))
    if args.node not in desired.nodes:
        print(f"bridgelab exec: no node '{args.node}' in lab {spec.lab}; nodes: {', '.join(desired.nodes)}",
              file=sys.stderr)
        return EXIT_INPUT
    ns = desired.nodes[args.node]
    if ns is not None and not netns.exists(ns):
        print(f"bridgelab exec: node '{args.node}' is not up (no namespace {ns}); run '{up_hint(args)}'",
              file=sys.stderr)
        return EXIT_NOT_UP
    if ns is not None:
        netns.switch(ns)  # for good: exec replaces this process
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(f"bridgelab exec: {argv[0]}: command not found", file=sys.stderr)
        return 127


def cmd_doctor(args, spec: Spec) -> int:
    from ..diagnose import doctor

    cs = doctor.checks()
    if args.json:
        print(json.dumps(doctor.as_json(cs), indent=1))
    else:
        print(doctor.render(cs, _color(sys.stdout.isatty())))
    return EXIT_OK


def cmd_trace(args, spec: Spec) -> int:
    from ..diagnose import trace

    if args.port is not None and not 0 < args.port < 65536:
        print("bridgelab trace: --port must be 1-65535", file=sys.stderr)
        return EXIT_INPUT
    if args.ring_pages < 1 or args.ring_pages & (args.ring_pages - 1):
        print("bridgelab trace: --ring-pages must be a power of 2", file=sys.stderr)
        return EXIT_INPUT
    desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    if args.node and args.node not in desired.nodes:
        print(f"bridgelab trace: no node '{args.node}' in lab {spec.lab}; nodes: {', '.join(desired.nodes)}",
              file=sys.stderr)
        return EXIT_INPUT
    if args.host_filter:
        try:
            ipaddress.IPv4Network(args.host_filter, strict=False)
        except ValueError as e:
            print(f"bridgelab trace: --addr: {e}", file=sys.stderr)
            return EXIT_INPUT
    return trace.run(desired, args, up_hint(args))


def cmd_explain(args, spec: Spec) -> int:
    from ..diagnose import explain

    desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    return explain.run(spec, desired, args, up_hint(args))


def cmd_drops(args, spec: Spec) -> int:
    from ..diagnose import drops

    return drops.run(spec.lab, args)


def cmd_graph(args, spec: Spec) -> int:
    from ..lab import graph

    desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    if args.json:
        print(json.dumps(graph.as_dict(spec, desired), indent=1))
    elif args.format == "dot":
        print(graph.dot(spec, desired))
    else:
        print(graph.mermaid(spec, desired))
    return EXIT_OK


COMMANDS = {"up": cmd_up, "run": cmd_run, "down": cmd_down, "doctor": cmd_doctor, "trace": cmd_trace,
            "explain": cmd_explain, "drops": cmd_drops, "status": cmd_status, "validate": cmd_validate,
            "exec": cmd_exec, "graph": cmd_graph}
