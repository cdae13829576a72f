"""explain's live check: one probe of the flow from SRC, traced by the eBPF probes (a trace
session, probes/session.py) and by nftables tracing in the host (the rule that dropped it)."""
from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from ...adapters import netns
from ...lab.resources import Desired
from .flow import Flow


@dataclass
class Live:
    result: str = ""          # replied, connected, refused, timeout, unreachable, sent
    packets: list = field(default_factory=list)
    rules: list = field(default_factory=list)   # nftables trace lines with a drop verdict
    degraded: str = ""


class NftTrace:
    """nftables tracing of the flow in one namespace: a table of ours that only sets nftrace on
    the probe's packets, removed afterwards, and `nft monitor trace` to read the verdicts."""

    def __init__(self, ns: str | None, flow: Flow):
        from ...adapters import nft
        self.nft, self.ns = nft, ns
        self.table = f"bridgelab_explain_{os.getpid()}"
        ip = "ip6" if flow.family == 6 else "ip"
        match = f"{ip} saddr {flow.src_addr}" if flow.src_addr else f"{ip} daddr {flow.dst_addr}"
        fam = "inet"
        self.fam = fam
        nft.run(ns, f"add table {fam} {self.table}")
        for chain, hook in (("pre", "prerouting"), ("out", "output")):
            nft.run(ns, f"add chain {fam} {self.table} {chain} {{ type filter hook {hook} priority -500; }}")
            nft.run(ns, f"add rule {fam} {self.table} {chain} {match} meta nftrace set 1")
        cmd = ["nft", "-a", "monitor", "trace"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     preexec_fn=netns.setns_child(ns))
        time.sleep(0.2)

    def stop(self) -> list[dict]:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        try:
            self.nft.run(self.ns, f"delete table {self.fam} {self.table}")
        except Exception:
            pass
        return parse_trace(out)


def parse_trace(out: str) -> list[dict]:
    """The drop verdicts in `nft -a monitor trace` output (pure)."""
    rules = []
    for line in out.splitlines():
        m = re.match(r"trace id \w+ (\w+) (\S+) (\S+) rule (.*?)(?: # handle (\d+))? \(verdict (\w+)", line)
        if m and m.group(6) in ("drop", "reject"):
            rules.append({"family": m.group(1), "table": m.group(2), "chain": m.group(3), "rule": m.group(4),
                          "handle": int(m.group(5)) if m.group(5) else None, "verdict": m.group(6)})
            continue
        m = re.match(r"trace id \w+ (\w+) (\S+) (\S+) policy (drop)", line)
        if m:
            rules.append({"family": m.group(1), "table": m.group(2), "chain": m.group(3), "rule": None,
                          "handle": None, "verdict": "policy drop"})
    return rules


def probe(flow: Flow) -> str:
    if flow.proto == "icmp":
        r = subprocess.run(["ping", "-n", "-c", "1", "-W", "1", flow.dst_addr], capture_output=True, text=True,
                           preexec_fn=netns.setns_child(flow.src_ns))
        return "replied" if r.returncode == 0 else "timeout"
    fam = socket.AF_INET6 if flow.family == 6 else socket.AF_INET
    with netns.entered(flow.src_ns):
        s = socket.socket(fam, socket.SOCK_STREAM if flow.proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.settimeout(1.5)
        s.connect((flow.dst_addr, flow.port))
        if flow.proto == "tcp":
            return "connected"
        # connected UDP: the ICMP port unreachable of a closed port comes back as ECONNREFUSED
        s.send(b"bridgelab explain")
        s.recv(2048)
        return "replied"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return {errno.ECONNREFUSED: "refused", errno.ENETUNREACH: "unreachable",
                errno.EHOSTUNREACH: "unreachable"}.get(e.errno, f"error {errno.errorcode.get(e.errno, e.errno)}")
    finally:
        s.close()


def live(flow: Flow, d: Desired) -> Live:
    from ...probes.events import set_filter
    from ...probes.loader import TraceFilter
    from ...probes.session import TraceSession
    out = Live()
    flt = TraceFilter(proto={"icmp": 1, "tcp": 6, "udp": 17}[flow.proto])
    set_filter(flt, flow.src_addr or flow.dst_addr)
    s = TraceSession(d, flt)
    trace = None
    try:
        notes = s.start()
        out.degraded = "; ".join(notes) if notes else ""
        if not s.ok:
            out.degraded = f"no packet trace: {s.p.families['tc'].reason}"
        if flow.via_host:
            try:
                trace = NftTrace(d.host_ns, flow)
            except Exception as e:  # nft tracing is a bonus: say so, carry on
                out.degraded += f"; no nftables trace: {e}"
        out.result = probe(flow)
        time.sleep(0.3)
        s.drain()
        asm = s.assembler()
        s.feed(asm, None)
        out.packets = [pk.as_dict() for pk in asm.finished(None, everything=True)]
    finally:
        if trace is not None:
            out.rules = trace.stop()
        s.close()
    return out
