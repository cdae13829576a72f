"""The command line's grammar: every subcommand with what it does, its options and examples."""

from __future__ import annotations

import argparse
import sys
import textwrap

from .. import __version__
from ..errors import EXIT_INPUT


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep our wording
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


class _Help(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {x}" for x in lines)


def _nodes(prefix, parsed_args, **_):
    """Completion of node names from the topology the command line names (argcomplete)."""
    try:
        from ..lab import desired, spec
        s = spec.load(getattr(parsed_args, "file", None))
        return [n for n in desired.desired(s, desired.HOST if getattr(parsed_args, "host", False)
                                           else desired.SANDBOX).nodes if n.startswith(prefix)]
    except Exception:
        return []


COMMANDS: list[tuple[str, str, str, tuple[str, ...]]] = [
    # name, one line, what it does, examples
    ("up", "build the lab, or repair it; changes nothing if it is whole",
     "Builds the lab from the topology, or repairs whatever differs from it, through the same\n"
     "reconcile the daemon heals with. Prints a summary (-v: every action); a second run changes\n"
     "nothing and says so.",
     ("bridgelab up", "bridgelab up -f lab.yaml --dry-run", "bridgelab up --host -f /etc/bridgelab/topology.yaml")),
    ("run", "the daemon: adopt or build the lab, then keep it whole",
     "Adopts what exists, builds what is missing, then watches netlink, nftables, sysctls and the\n"
     "services and heals every drift through the same reconcile as `up`. Exports Prometheus\n"
     "metrics, attaches eBPF probes. SIGHUP re-reads the topology file (a bad one is refused and\n"
     "the old one kept); SIGTERM stops the daemon and leaves the lab up.",
     ("bridgelab run", "bridgelab run -f lab.yaml --metrics-addr 127.0.0.1:0", "kill -HUP $(pidof -s bridgelab)")),
    ("down", "remove everything the lab created, and nothing else",
     "Removes the lab's namespaces, its services, and in host mode the links, table and sysctls it\n"
     "set in the current namespace (a sysctl another lab still needs stays).",
     ("bridgelab down", "bridgelab down --lab seed")),
    ("status", "nodes, links, addresses, ports, services and drift",
     "What the kernel holds for the lab and how it differs from the topology (exit 4 when the lab\n"
     "is not up).", ("bridgelab status", "bridgelab status --json | jq .drift")),
    ("ls", "the labs on this machine, with their daemons",
     "Every lab with a state directory or namespaces on this machine.", ("bridgelab ls", "bridgelab ls --json")),
    ("validate", "check a topology file, touch nothing",
     "Every problem at once, each with the file, the field and the fix (exit 2).", ("bridgelab validate -f lab.yaml",)),
    ("exec", "run a command in a node's network namespace (a shell without one)",
     "Runs CMD in the node's namespace; its exit code is passed through. Options go before the node.",
     ("bridgelab exec container1 -- ping -c1 172.168.1.12", "bridgelab exec -f lab.yaml client",
      "bridgelab exec client -- curl -s 192.168.0.10:8888")),
    ("logs", "a service's log (NODE or NODE/SERVICE)",
     "The output of the lab's services, kept capped under the lab's run directory.",
     ("bridgelab logs container1", "bridgelab logs container1/http:80 -n 50", "bridgelab logs container2 --follow")),
    ("doctor", "what this kernel and machine offer the lab and its probes",
     "Kernel facts the probes stand on, checked against the running system, and which probes will\n"
     "attach here and why not.", ("bridgelab doctor", "bridgelab doctor --json")),
    ("trace", "follow matching packets through the lab hop by hop (eBPF)",
     "Loads probes in trace mode beside the daemon's, filtered in the kernel, and prints each\n"
     "packet's path with NAT rewrites and drops.",
     ("bridgelab trace --node container1 --proto icmp --count 2", "bridgelab trace --addr 192.168.0.100 --port 8888 --json")),
    ("explain", "where and why a flow dies in the lab, and the fix",
     "A static check along the flow's path, a live probe traced by eBPF and nftables, one verdict\n"
     "and its fix. Exit 0 the flow works, 1 it does not, 2 bad input.",
     ("bridgelab explain container1 gateway", "bridgelab explain client host:8888",
      "bridgelab explain container1 container2:5353 --proto udp", "bridgelab explain -6 container1 internet")),
    ("check", "the topology's expectations (expect:), each probed once",
     "Runs every expectation of the topology once, in parallel, and prints a table; for each that\n"
     "fails, explain's verdict and fix. --junit writes JUnit XML for a CI job; --matrix probes every\n"
     "pair of nodes (ICMP) and every published port instead. Exit 0 all hold, 1 one fails, 2 bad\n"
     "input, 4 the lab is not up.",
     ("bridgelab check", "bridgelab check -f lab.yaml --junit check.xml", "bridgelab check --matrix")),
    ("drops", "top drop reasons, hooks and nodes the daemon's probes saw",
     "From the daemon's drops.jsonl: the top reasons, hooks and nodes, each with a sample tuple.",
     ("bridgelab drops", "bridgelab drops --since 1h --json")),
    ("graph", "the topology as a picture (Mermaid or Graphviz)", "The lab's nodes, bridges and links.",
     ("bridgelab graph", "bridgelab graph -f examples/routers.yaml --format svg > lab.svg",
      "bridgelab graph --format html > lab.html")),
]


def _common(sp, host=True, as_=True):
    sp.add_argument("-f", "--file", help="topology YAML (default: the embedded seed lab)")
    if as_:
        sp.add_argument("--as", dest="as_", action="append", metavar="HOST",
                        help="a lab across hosts (hosts:): act as this lab host, on its part only")
    if host:
        sp.add_argument("--host", action="store_true",
                        help="apply to the current network namespace with a real uplink (lab hosts)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def _run_options(sp) -> None:
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
    sp.add_argument("--check-interval", type=float, default=10.0, metavar="SECONDS",
                    help="check the topology's expectations this often, jittered (default 10; 0: never)")


def _trace_options(sp) -> None:
    sp.add_argument("--node", help="packets from or to this node (its addresses, both families)").completer = _nodes
    sp.add_argument("--addr", dest="host_filter", metavar="ADDR[/LEN]",
                    help="packets from or to this host or net (IPv4 or IPv6)")
    sp.add_argument("--port", type=int, help="TCP/UDP source or destination port")
    sp.add_argument("--proto", choices=("tcp", "udp", "icmp"), help="icmp: ICMP and ICMPv6")
    sp.add_argument("--ndp", action="store_true",
                    help="follow IPv6 neighbour discovery too (left out by default, as ARP is)")
    sp.add_argument("--direction", choices=("in", "out"), help="out: sent by the node/address; in: sent to it")
    sp.add_argument("--count", type=int, default=0, help="stop after N packets")
    sp.add_argument("--timeout", type=float, default=0, help="stop after SECONDS")
    sp.add_argument("--ring-pages", type=int, default=256, help="ring buffer size per probe, in pages (power of 2)")


def _options(name: str, sp) -> None:
    if name == "up":
        _common(sp)
        sp.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
        sp.add_argument("-v", "--verbose", action="store_true", help="every action, not only the summary")
    elif name == "run":
        _common(sp)
        _run_options(sp)
    elif name == "down":
        _common(sp, host=False)
        sp.add_argument("--lab", help="lab name (default: the topology's)")
    elif name in ("status", "graph", "drops"):
        _common(sp)
    elif name in ("validate", "ls"):
        _common(sp, host=False, as_=False)
    elif name == "exec":
        sp.add_argument("-f", "--file", help="topology YAML (default: the embedded seed lab)")
        sp.add_argument("--host", action="store_true", help="the lab runs in host mode")
        sp.add_argument("--as", dest="as_", action="append", metavar="HOST", help="a lab across hosts: this lab host")
        sp.add_argument("node", help="a container, host, or (sandbox) gateway, client, internet").completer = _nodes
        sp.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS... (none: an interactive shell)")
    elif name == "logs":
        _common(sp)
        sp.add_argument("service", metavar="NODE[/SERVICE]", help="e.g. container1 or container1/http:80").completer = _nodes
        sp.add_argument("-n", "--lines", type=int, default=40, help="how many lines of the end (default 40)")
        sp.add_argument("--follow", action="store_true", help="keep printing what is written")
    elif name == "doctor":
        sp.add_argument("-f", "--file", help="topology YAML (default: the embedded seed lab)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
    elif name == "trace":
        _common(sp)
        _trace_options(sp)
    elif name == "explain":
        _common(sp)
        sp.add_argument("src", help="a lab node: a container, host, or (sandbox) gateway, client, internet").completer = _nodes
        sp.add_argument("dst", help="a node, an address, NODE:PORT or ADDR:PORT (host:8888: a published port)")
        sp.add_argument("--port", type=int)
        sp.add_argument("--proto", choices=("tcp", "udp", "icmp"), help="icmp is ICMPv6 for an IPv6 flow")
        fam = sp.add_mutually_exclusive_group()
        fam.add_argument("-4", dest="ip_version", action="store_const", const=4,
                         help="a node named as DST by its IPv4 address (the default)")
        fam.add_argument("-6", dest="ip_version", action="store_const", const=6,
                         help="a node named as DST by its IPv6 address (dual-stack labs)")
    if name == "check":
        _common(sp)
        sp.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML to FILE")
        sp.add_argument("--matrix", action="store_true", help="every node to every node and published port")
        sp.add_argument("--quick", action="store_true",
                        help="explain failures from the static checks only (no eBPF trace of the failing flow)")
    if name == "drops":
        sp.add_argument("--since", default="10m", help="how far back: 30s, 10m, 2h (default 10m)")
    if name == "graph":
        sp.add_argument("--format", choices=("mermaid", "dot", "svg", "html"), default="mermaid",
                        help="svg and html need Graphviz (`dot`); html is one page that works offline")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bridgelab", formatter_class=_Help,
                description="Docker-style bridge labs from a topology file: built, healed, traced with eBPF,\n"
                            "exported to Prometheus.",
                epilog=textwrap.dedent("""\
                    exit codes: 0 ok, 1 a kernel operation failed, 2 bad input, 3 conflict with a
                    stranger's resource, 4 the lab is not up, 5 busy (a daemon manages the lab),
                    130 interrupted. `bridgelab COMMAND --help` for each command.
                    shell completion: eval "$(register-python-argcomplete bridgelab)" """))
    p.add_argument("--version", action="version", version=f"bridgelab {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, short, what, examples in COMMANDS:
        sp = sub.add_parser(name, help=short, description=what, epilog=_examples(*examples), formatter_class=_Help)
        _options(name, sp)
    return p
