"""The `bridgelab` command line.

Exit codes (stable; scripts and later tools rely on them):
  0  success (for `up`: the lab is as the topology says, changed or not)
  1  a kernel operation failed; what was applied is reported
  2  bad input: topology file or arguments; nothing was applied
  3  conflict: a resource the lab needs exists and belongs to someone else; nothing was applied
  4  the lab is not up (status, exec)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from . import logs, netns, plan
from .model import ConflictError
from . import spec as specmod
from .state import State, UnsafeLabName

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_CONFLICT, EXIT_NOT_UP = 0, 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep our wording
        self.print_usage(sys.stderr)
        print(f"bridgelab: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


def _color(enabled: bool):
    def c(code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if enabled else text
    return c


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bridgelab", description="Docker-style bridge labs from a topology file.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    def common(sp, host=True):
        sp.add_argument("-f", "--file", help="topology YAML (default: the embedded seed lab)")
        if host:
            sp.add_argument("--host", action="store_true",
                            help="apply to the current network namespace with a real uplink (lab hosts)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = sub.add_parser("up", help="build the lab, or repair it; changes nothing if it is whole")
    common(sp)
    sp.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    sp = sub.add_parser("run", help="the daemon: adopt or build the lab, then keep it whole")
    common(sp)
    sp.add_argument("--no-heal", action="store_true", help="observe and report drift, repair nothing")
    sp.add_argument("--resync", type=float, default=30.0, metavar="SECONDS",
                    help="full re-observation interval backing up the event path (default 30)")
    sp.add_argument("--down-on-exit", action="store_true", help="tear the lab down on SIGTERM/SIGINT")
    sp.add_argument("--flap-heals", type=int, default=5, metavar="N",
                    help="a resource healed N times within 30 s is flapping: back off (default 5)")
    sp.add_argument("--metrics-addr", default="127.0.0.1:9477",
                    help="Prometheus endpoint HOST:PORT (port 0: any free port; 'off': none)")
    sp.add_argument("--no-probes", action="store_true", help="run without the eBPF probes")
    sp.add_argument("--bpf-stats", action="store_true",
                    help="have the kernel count the probes' run time (bridgelab_probe_run_seconds_total)")
    sp = sub.add_parser("down", help="remove everything the lab created, and nothing else")
    common(sp, host=False)
    sp.add_argument("--lab", help="lab name (default: the topology's)")
    sp = sub.add_parser("status", help="nodes, links, addresses, ports and drift")
    common(sp)
    sp = sub.add_parser("validate", help="check a topology file, touch nothing")
    common(sp, host=False)
    sp = sub.add_parser("exec", help="run a command in a node's network namespace")
    sp.add_argument("-f", "--file")
    sp.add_argument("--host", action="store_true")
    sp.add_argument("node", help="a container name, host, or (sandbox) gateway, client, internet")
    sp.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sp = sub.add_parser("doctor", help="what this kernel and machine offer the lab and its probes")
    sp.add_argument("-f", "--file")
    sp.add_argument("--json", action="store_true")
    sp = sub.add_parser("trace", help="follow matching packets through the lab hop by hop (eBPF)")
    common(sp)
    sp.add_argument("--node", help="packets from or to this node (its address)")
    sp.add_argument("--addr", dest="host_filter", metavar="ADDR[/LEN]", help="packets from or to this host or net")
    sp.add_argument("--port", type=int, help="TCP/UDP source or destination port")
    sp.add_argument("--proto", choices=("tcp", "udp", "icmp"))
    sp.add_argument("--direction", choices=("in", "out"), help="out: sent by the node/address; in: sent to it")
    sp.add_argument("--count", type=int, default=0, help="stop after N packets")
    sp.add_argument("--timeout", type=float, default=0, help="stop after SECONDS")
    sp.add_argument("--ring-pages", type=int, default=256, help="ring buffer size per probe, in pages (power of 2)")
    sp = sub.add_parser("explain", help="where and why a flow dies in the lab, and the fix")
    common(sp)
    sp.add_argument("src", help="a lab node: a container, host, or (sandbox) gateway, client, internet")
    sp.add_argument("dst", help="a node, an address, NODE:PORT or ADDR:PORT (host:8888: a published port)")
    sp.add_argument("--port", type=int)
    sp.add_argument("--proto", choices=("tcp", "udp", "icmp"))
    sp = sub.add_parser("drops", help="top drop reasons, hooks and nodes the daemon's probes saw")
    common(sp)
    sp.add_argument("--since", default="10m", help="how far back: 30s, 10m, 2h (default 10m)")
    sp = sub.add_parser("graph", help="the topology as a picture (Mermaid or Graphviz)")
    common(sp)
    sp.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    return p


def _load(args) -> specmod.Spec:
    return specmod.load(args.file)


def _mode(args, lab: str) -> str:
    if getattr(args, "host", False):
        return plan.HOST
    st = State.load(lab)
    return st.mode if st else plan.SANDBOX


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(os.environ.get("BRIDGELAB_LOG_LEVEL", "info" if args.cmd == "run" else "warning"))
    try:
        spec = _load(args)
    except specmod.SpecError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": "invalid-topology", **e.as_json()}, indent=1))
        else:
            print(e.render(), file=sys.stderr)
        return EXIT_INPUT
    if os.geteuid() != 0 and args.cmd not in ("validate", "graph"):
        print("bridgelab: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces)", file=sys.stderr)
        return EXIT_FAIL
    try:
        return {"up": cmd_up, "run": cmd_run, "down": cmd_down, "doctor": cmd_doctor, "trace": cmd_trace, "explain": cmd_explain, "drops": cmd_drops, "status": cmd_status, "validate": cmd_validate,
                "exec": cmd_exec, "graph": cmd_graph}[args.cmd](args, spec)
    except ConflictError as e:
        print(f"bridgelab: conflict: {e}; nothing was applied", file=sys.stderr)
        return EXIT_CONFLICT
    except UnsafeLabName as e:
        print(f"bridgelab: {e}; nothing was changed", file=sys.stderr)
        return EXIT_INPUT


def cmd_validate(args, spec) -> int:
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


def cmd_up(args, spec) -> int:
    mode = plan.HOST if args.host else plan.SANDBOX
    if mode == plan.HOST:
        for w in spec.warnings:
            print(f"warning: {w}", file=sys.stderr)
    desired = plan.desired(spec, mode)
    from .reconcile import Engine

    async def run():
        eng = Engine(desired, spec.source)
        try:
            return await eng.reconcile(dry_run=args.dry_run)
        finally:
            eng.close()

    return _report(asyncio.run(run()), args, "up")


def cmd_run(args, spec) -> int:
    from .daemon import Options, run

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


def cmd_down(args, spec) -> int:
    from .teardown import teardown

    from .state import UnsafeLabName, check_lab
    lab = spec.lab if args.lab is None else args.lab
    try:
        check_lab(lab)
    except UnsafeLabName as e:
        print(f"bridgelab down: --lab: {e}; nothing was removed", file=sys.stderr)
        return EXIT_INPUT
    done = asyncio.run(teardown(lab))
    if args.json:
        print(json.dumps({"lab": lab, "removed": done}, indent=1))
    else:
        for d in done:
            print(f"  - {d}")
        print(f"down: lab {lab}: " + (f"{len(done)} removed" if done else "nothing to remove"))
    return EXIT_OK


def cmd_status(args, spec) -> int:
    from .status import collect, render
    mode = _mode(args, spec.lab)
    desired = plan.desired(spec, mode)
    report = asyncio.run(collect(desired, spec))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(render(report, _color(sys.stdout.isatty())))
    return EXIT_OK if report["up"] else EXIT_NOT_UP


def cmd_exec(args, spec) -> int:
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
        print(f"bridgelab exec: node '{args.node}' is not up (no namespace {ns}); run 'bridgelab up'",
              file=sys.stderr)
        return EXIT_NOT_UP
    if ns is not None:
        netns.switch(ns)  # for good: exec replaces this process
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(f"bridgelab exec: {argv[0]}: command not found", file=sys.stderr)
        return 127


def cmd_doctor(args, spec) -> int:
    from . import doctor

    cs = doctor.checks()
    if args.json:
        print(json.dumps(doctor.as_json(cs), indent=1))
    else:
        print(doctor.render(cs, _color(sys.stdout.isatty())))
    return EXIT_OK


def cmd_trace(args, spec) -> int:
    from . import trace

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
        import ipaddress
        try:
            ipaddress.IPv4Network(args.host_filter, strict=False)
        except ValueError as e:
            print(f"bridgelab trace: --addr: {e}", file=sys.stderr)
            return EXIT_INPUT
    return trace.run(desired, args)


def cmd_explain(args, spec) -> int:
    from . import explain

    desired = plan.desired(spec, plan.HOST if args.host else plan.SANDBOX)
    return explain.run(spec, desired, args, args.file or "")


def cmd_drops(args, spec) -> int:
    from . import droplog

    return droplog.run(spec.lab, args)


def cmd_graph(args, spec) -> int:
    from . import graph

    mode = plan.HOST if args.host else plan.SANDBOX
    desired = plan.desired(spec, mode)
    if args.json:
        print(json.dumps(graph.as_dict(spec, desired), indent=1))
    elif args.format == "dot":
        print(graph.dot(spec, desired))
    else:
        print(graph.mermaid(spec, desired))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
