"""The command line's grammar: every subcommand with its options."""

from __future__ import annotations

import argparse
import sys

from ..errors import EXIT_INPUT


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep our wording
        self.print_usage(sys.stderr)
        print(f"bridgelab: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


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


