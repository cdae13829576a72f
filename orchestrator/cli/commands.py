"""One function per subcommand: (args, spec) -> exit code."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
import time

from .. import logs
from ..adapters import netns
from ..errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_NOT_UP, EXIT_OK, InputError
from ..lab import desired as plan
from ..lab import naming
from ..lab.spec import Spec
from ..reconcile.lock import LabLock
from ..reconcile.state import State
from .output import Progress, color_enabled, colorizer, plural, summary


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
        print(f"{spec.source}: valid (lab {spec.lab}, {plural(len(spec.containers), 'container')}, "
              f"{plural(len(spec.ports), 'port')})")
    return EXIT_OK


def _report(result, args, verb: str, interrupted: bool = False) -> int:
    c = colorizer(color_enabled() and not args.json)
    dry = getattr(args, "dry_run", False)
    if args.json:
        print(json.dumps({
            "changed": bool(result.applied) and not dry,
            "actions": [a.as_json() for a in result.actions],
            "applied": len(result.applied),
            "errors": [{"action": a.as_json(), "error": e} for a, e in result.errors],
            "interrupted": interrupted,
            "seconds": round(result.seconds, 4),
        }, indent=1))
        return EXIT_INTERRUPTED if interrupted else EXIT_FAIL if result.errors else EXIT_OK
    if not result.actions:
        print(c("32", f"{verb}: nothing to change") + f" ({result.seconds * 1000:.0f} ms)")
    failed = {id(a) for a, _ in result.errors}
    applied = {id(a) for a in result.applied}
    if getattr(args, "verbose", False) or dry or len(result.actions) <= 20:
        for a in result.actions:
            mark = c("31", "✗") if id(a) in failed else (c("32", "+") if dry or id(a) in applied else " ")
            print(f"  {mark} {a.describe()}")
    for a, e in result.errors:
        print(c("31", f"failed: {a.describe()}: {e}"), file=sys.stderr)
    if interrupted:
        print(c("33", f"{verb}: interrupted: {len(result.applied)} of {plural(len(result.actions), 'change')} "
                      f"applied ({summary(result.applied) or 'none'}); run '{up_hint(args)}' to finish"),
              file=sys.stderr)
    elif result.actions:
        n = len(result.actions)
        print(f"{verb}: {plural(n, 'change')} in {result.seconds * 1000:.0f} ms ({summary(result.actions)})"
              + (" (dry run)" if dry else ""))
    return EXIT_INTERRUPTED if interrupted else EXIT_FAIL if result.errors else EXIT_OK


def cmd_up(args, spec: Spec) -> int:
    from ..reconcile.engine import Engine, Result
    mode = plan.HOST if args.host else plan.SANDBOX
    if mode == plan.HOST:
        for w in spec.warnings:
            print(f"warning: {w}", file=sys.stderr)
    desired = plan.desired(spec, mode)
    eng = Engine(desired, spec.source)
    eng.progress = Progress(sys.stderr.isatty() and not args.json)
    t0 = time.perf_counter()

    async def run():
        try:
            return await eng.reconcile(dry_run=args.dry_run)
        finally:
            eng.close()

    if args.dry_run:
        return _report(asyncio.run(run()), args, "up")
    with LabLock(spec.lab, "up"):
        try:
            res = asyncio.run(run())
        except KeyboardInterrupt:
            done = Result(list(eng.applied), [], time.perf_counter() - t0, applied=list(eng.applied))
            return _report(done, args, "up", interrupted=True)
        from ..adapters import services
        services.cap_logs(spec.lab)
        return _report(res, args, "up")


def parse_metrics_addr(text: str) -> tuple[str, int] | None:
    """HOST:PORT, [IPv6]:PORT or 'off' (None)."""
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"--metrics-addr {text!r}: give HOST:PORT (e.g. 127.0.0.1:9477), a port 0 "
                         "for any free one, or 'off'")
    try:
        ipaddress.ip_address(host or "127.0.0.1")
    except ValueError:
        raise InputError(f"--metrics-addr {text!r}: {host!r} is not an IP address of this host") from None
    return host or "127.0.0.1", int(port)


def cmd_run(args, spec: Spec) -> int:
    from ..daemon.metrics import check_bindable
    from ..daemon.run import Options, run

    mode = plan.HOST if args.host else plan.SANDBOX
    if mode == plan.HOST:
        for w in spec.warnings:
            logs.get().warning("topology", warning=w)
    if args.resync <= 0:
        raise InputError("--resync must be positive")
    if args.flap_heals < 2:
        raise InputError("--flap-heals must be at least 2")
    if args.check_interval < 0 or 0 < args.check_interval < 1:
        raise InputError("--check-interval must be 0 (never) or at least 1 second")
    addr = parse_metrics_addr(args.metrics_addr)
    if addr is not None:
        check_bindable(*addr)  # a port in use is bad input, found before the lab is touched
    opts = Options(heal=not args.no_heal, resync=args.resync, down_on_exit=args.down_on_exit,
                   flap_heals=args.flap_heals, probes=not args.no_probes, bpf_stats=args.bpf_stats,
                   metrics_addr=None if addr is None else f"[{addr[0]}]:{addr[1]}" if ":" in addr[0]
                   else f"{addr[0]}:{addr[1]}", topology=args.file,
                   check_interval=args.check_interval, enter=getattr(args, "_enter", None),
                   children=getattr(args, "children", None) or [])
    if opts.enter:
        # a lab host of a multi-host sandbox: its metrics listen here, where a scraper on this
        # machine reaches them; everything else happens inside the host's namespace
        import socket
        if addr is not None:
            s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
            s.listen(16)
            opts.metrics_socket = s
        netns.switch(opts.enter)
    with LabLock(spec.lab, "daemon"):
        return run(plan.desired(spec, mode), spec.source, opts, spec)


def cmd_down(args, spec: Spec) -> int:
    from ..reconcile.teardown import teardown

    lab = spec.lab if args.lab is None else args.lab
    naming.check_lab(lab)
    rd = naming.run_dir()
    if "." not in lab and os.path.isdir(rd) and any(n.startswith(lab + ".") for n in os.listdir(rd)):
        from . import multihost   # a lab across hosts: its hosts' parts too
        args.lab = lab
        return multihost._down(args, spec)
    with LabLock(lab, "down"):
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
        print(render(report, colorizer(color_enabled()), up_hint(args)))
    return EXIT_OK if report["up"] else EXIT_NOT_UP


def cmd_ls(args, spec: Spec) -> int:
    from ..diagnose.status import labs, render_labs
    found = labs()
    print(json.dumps(found, indent=1) if args.json else render_labs(found, colorizer(color_enabled())))
    return EXIT_OK


EXEC_OPTIONS = {"-f", "--file", "--host", "--json"}


def cmd_exec(args, spec: Spec) -> int:
    before = args.argv[:args.argv.index("--")] if "--" in args.argv else args.argv
    misplaced: list[str] = []
    for i, a in enumerate(before):
        if a.split("=")[0] in EXEC_OPTIONS:
            misplaced.append(a)
            if a in ("-f", "--file") and i + 1 < len(before):
                misplaced.append(before[i + 1])
    if misplaced:
        raise InputError(f"{' '.join(misplaced)} after the node would be taken for the command (and the default "
                         f"lab used); options go before the node: bridgelab exec {' '.join(misplaced)} {args.node} -- CMD")
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if any("\0" in a for a in argv):
        raise InputError("an argument holds a NUL byte")
    desired = plan.desired(spec, _mode(args, spec.lab))
    if args.node not in desired.nodes:
        raise InputError(f"no node '{args.node}' in lab {spec.lab}; nodes: {', '.join(desired.nodes)}")
    ns = desired.nodes[args.node]
    if ns is not None and not netns.exists(ns):
        print(f"bridgelab exec: node '{args.node}' is not up (no namespace {ns}); run '{up_hint(args)}'",
              file=sys.stderr)
        return EXIT_NOT_UP
    if not argv:  # a shell in the node, told where it is
        shell = os.environ.get("SHELL") or "/bin/sh"
        os.environ["PS1"] = f"[{spec.lab}:{args.node}] \\w \\$ "
        argv = [shell]
    if ns is not None:
        netns.switch(ns)  # for good: exec replaces this process
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(f"bridgelab exec: {argv[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"bridgelab exec: {argv[0]}: permission denied", file=sys.stderr)
        return 126


def cmd_logs(args, spec: Spec) -> int:
    from ..diagnose import logs as svclogs
    return svclogs.run(spec, plan.desired(spec, _mode(args, spec.lab)), args)


def cmd_doctor(args, spec: Spec) -> int:
    from ..diagnose import doctor

    cs = doctor.checks()
    if args.json:
        print(json.dumps(doctor.as_json(cs), indent=1))
    else:
        print(doctor.render(cs, colorizer(color_enabled())))
    return EXIT_OK


def cmd_trace(args, spec: Spec) -> int:
    from ..diagnose import trace

    if args.port is not None and not 0 < args.port < 65536:
        raise InputError("--port must be 1-65535")
    if args.ring_pages < 1 or args.ring_pages & (args.ring_pages - 1):
        raise InputError("--ring-pages must be a power of 2")
    if args.count < 0 or args.timeout < 0:
        raise InputError("--count and --timeout must not be negative")
    desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    if args.node and args.node not in desired.nodes:
        raise InputError(f"no node '{args.node}' in lab {spec.lab}; nodes: {', '.join(desired.nodes)}")
    if args.host_filter:
        try:
            ipaddress.ip_network(args.host_filter, strict=False)
        except ValueError as e:
            raise InputError(f"--addr: {e}") from None
    return trace.run(desired, args, up_hint(args))


def cmd_explain(args, spec: Spec) -> int:
    from ..diagnose import explain

    desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    return explain.run(spec, desired, args, up_hint(args))


def cmd_check(args, spec: Spec) -> int:
    from ..diagnose import check as chk
    from ..diagnose.check import matrix as mx
    from ..diagnose.check import render as rd
    from ..diagnose.trace import missing_namespace

    desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    gone = missing_namespace(desired)
    if gone:
        print(f"bridgelab check: lab {spec.lab} is not up (no namespace {gone}); run '{up_hint(args)}'", file=sys.stderr)
        return EXIT_NOT_UP
    if args.matrix:
        m = mx.matrix(spec, desired)
        print(json.dumps(m, indent=1) if args.json else mx.render(m, color_enabled()))
        return EXIT_OK
    if not spec.expect:
        raise InputError(f"{spec.source} declares no expectations: add an expect: list (or use --matrix)")
    t0 = time.monotonic()
    results = chk.check(spec, desired)
    for r in results:
        if not r.holds:
            chk.why(spec, desired, r, up_hint(args), live=not args.quick)
    took = time.monotonic() - t0
    if args.junit:
        with open(args.junit, "wb") as f:
            f.write(rd.junit(spec.lab, results, took))
    if args.json:
        print(json.dumps({"lab": spec.lab, "seconds": round(took, 3), "results": [r.as_dict() for r in results]},
                         indent=1))
    else:
        print(rd.table(spec.lab, results, color_enabled()))
    return EXIT_FAIL if any(r.status == "failed" for r in results) else EXIT_OK


def cmd_drops(args, spec: Spec) -> int:
    from ..diagnose import drops

    return drops.run(spec.lab, args)


def cmd_graph(args, spec: Spec) -> int:
    from ..lab import graph

    if spec.hosts:   # a lab across hosts: every host's part and the sandbox around them
        from .multihost import union
        desired = union(spec, [h.name for h in spec.hosts])
    else:
        desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    if args.json:
        print(json.dumps(graph.as_dict(spec, desired), indent=1))
    elif args.format in ("svg", "html"):
        state = {n: ("up" if ns is None or netns.exists(ns) else "missing") for n, ns in desired.nodes.items()} \
            if os.geteuid() == 0 else None
        svg = _graphviz(graph.dot(spec, desired, state))
        print(svg if args.format == "svg" else graph.page(spec, desired, svg[svg.find("<svg"):], state))
    elif args.format == "dot":
        print(graph.dot(spec, desired))
    else:
        print(graph.mermaid(spec, desired))
    return EXIT_OK


def _graphviz(text: str) -> str:
    import shutil
    import subprocess
    if not shutil.which("dot"):
        raise InputError("--format svg and html need Graphviz: apt-get install graphviz (make setup does)")
    r = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"dot: {r.stderr.strip()}")
    return r.stdout


COMMANDS = {"up": cmd_up, "run": cmd_run, "down": cmd_down, "doctor": cmd_doctor, "trace": cmd_trace,
            "explain": cmd_explain, "drops": cmd_drops, "status": cmd_status, "validate": cmd_validate,
            "exec": cmd_exec, "graph": cmd_graph, "ls": cmd_ls, "logs": cmd_logs, "check": cmd_check}
