"""The probes of one lab: their families as loaded (build.py), their attachments (attach.py)
and the names the kernel's numbers stand for (netns cookies, ifindexes).

A family that cannot compile, load or attach is reported with the kernel's reason and the
others carry on: the daemon runs with whatever this kernel allows, and says what is missing.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from ..lab.resources import Desired
from . import attach, build, kernel, links
from .families import NAMES

PROBE_DIR = os.environ.get("BRIDGELAB_PROBE_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "probes")
FAMILIES = NAMES


@dataclass
class TraceFilter:
    proto: int = 0           # IPPROTO_*; 0 any
    net: int = 0             # network byte order as the packet has it
    mask: int = 0
    port: int = 0
    net6: object = None      # an IPv6 network to follow (ipaddress.IPv6Network)
    ndp: bool = False        # follow neighbour discovery too (ICMPv6 133-137)


@dataclass
class Family:
    name: str
    ok: bool = False
    reason: str = ""
    bpf: object = None
    progs: dict = field(default_factory=dict)      # function name -> fd
    degraded: str = ""
    insns: dict = field(default_factory=dict)      # function name -> its instructions as loaded (maps' fds in)
    license: str = "GPL"
    maps: dict = field(default_factory=dict)       # name -> objects.Map, when made from a compiled object
    owned: list = field(default_factory=list)      # its program and perf event fds (compiled object)


class Probes:
    def __init__(self, lab: str, trace: TraceFilter | None = None, read_packet: bool | None = None,
                 ring_pages: int = 256, probe_dir: str | None = None, fast_bits: int = 11,
                 in_process: bool | None = None):
        self.lab = lab
        self.fast_bits = fast_bits   # log2 of the counters' fast slots (common.h); tests make it tiny
        self.trace = trace
        self.probe_dir = probe_dir or PROBE_DIR
        self.ring_pages = ring_pages
        if read_packet is None:
            # lockdown alone says it (kernel.capabilities would parse the BTF for the same answer)
            read_packet = kernel.lockdown() != "confidentiality" and os.environ.get("BRIDGELAB_PROBE_NO_READ") != "1"
        self.read_packet = read_packet
        # a trace needs bcc's ring buffers and its filter compiled in: it compiles in-process; the
        # metrics probes come from a compiled object (compiled.py), so bcc never loads here
        self.in_process = trace is not None if in_process is None else in_process
        self.owned_map_fds: list[int] = []
        self.compile_info: dict = {}
        self.families: dict[str, Family] = {n: Family(n) for n in NAMES}
        self.tc: dict[tuple[str | None, str], attach.Attachment] = {}
        self.nf: dict[str | None, attach.Attachment] = {}
        self.cookies: dict[int, str] = {}         # netns cookie -> node
        self.ifnames: dict[tuple[int, int], str] = {}  # (cookie, ifindex) -> name
        self.attach_errors: dict[str, str] = {}   # "tc host/veth1" -> reason
        self.lock = threading.Lock()
        self.tc_copies: dict[tuple[str, int], int] = {}
        self.retired_stats = [0, 0]   # run_time_ns, run_cnt of tc copies already closed
        self.stats_enabled = False     # someone holds BPF_ENABLE_STATS: run_stats() means something
        self.known_cookies: dict[int, str] = {}
        self.known_ifnames: dict[tuple[int, int], str] = {}

    def load(self) -> None:
        if self.in_process:
            build.load(self)
            return
        from . import compiled, objects
        obj, self.compile_info = compiled.get(self)
        objects.load(self, obj)

    def sync(self, d: Desired) -> int:
        return attach.sync(self, d)

    def close(self) -> None:
        attach.close(self)

    def attached(self) -> dict[str, bool]:
        """Per probe family: loaded and attached everywhere it should be."""
        out = {}
        for name, fam in self.families.items():
            if not fam.ok:
                out[name] = False
            elif name in ("tc", "nf"):  # list(): a snapshot, the loop thread may be syncing meanwhile
                att = list((self.tc if name == "tc" else self.nf).values())
                out[name] = bool(att) and all(a.fds for a in att)
            else:
                out[name] = True
        return out

    def run_stats(self) -> dict[str, tuple[int, int]]:
        """Per family (run_time_ns, run_cnt), summed over its programs and per-namespace copies;
        zero unless someone holds BPF stats enabled (links.enable_run_stats)."""
        out = {}
        with self.lock:  # sync closes copies under it: no fd read here is stale or reused
            for name, fam in self.families.items():
                if not fam.ok:
                    continue
                fds = list(fam.progs.values()) + (list(self.tc_copies.values()) if name == "tc" else [])
                ns, cnt = self.retired_stats if name == "tc" else (0, 0)
                for fd in fds:
                    try:
                        a, b = links.prog_stats(fd)
                    except OSError:
                        continue
                    ns, cnt = ns + a, cnt + b
                out[name] = (ns, cnt)
        return out

    def table(self, family: str, name: str):
        fam = self.families[family]
        if not fam.ok:
            return None
        if fam.maps:
            return fam.maps.get(name)
        return fam.bpf[name] if fam.bpf is not None else None

    def names(self, cookie: int, ifindex: int) -> tuple[str, str]:
        """(node, interface) for a trace event's netns cookie and ifindex."""
        node = self.known_cookies.get(cookie, "?")
        if not ifindex:
            return node, ""
        return node, self.known_ifnames.get((cookie, ifindex), f"if{ifindex}")
