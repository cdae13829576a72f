"""What a probe family declares (after retis' collectors: each says whether it can run here,
what it attaches to, and how it degrades): its source, its programs, what it needs from the
kernel, and the line `doctor` shows for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..kernel import Caps

BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_NETFILTER = 32


@dataclass(frozen=True)
class Program:
    fn: str                  # the C function loaded as a program
    prog_type: int
    attach_type: str | None  # the kernel's enum bpf_attach_type name, or None (attaches itself)


@dataclass(frozen=True)
class FamilySpec:
    name: str                           # tc, nf, drops, fdb: the `probe` metric label
    source: str                         # the C file in probes/
    programs: tuple[Program, ...]
    needs: Callable[[Caps], str]        # "" when this kernel can run it, else why not
    attaches: str                       # what it attaches to, for doctor ("will attach: ...")
    ring: str = ""                      # its ring buffer in trace mode
    lost: str = ""                      # the map counting events the ring had no room for
    tracepoint: str = ""                # "category:event" its TRACEPOINT_PROBE attaches to

    @property
    def functions(self) -> tuple[str, ...]:
        """Its programs' C function names, a tracepoint's as bcc names it."""
        if self.tracepoint:
            return ("tracepoint__" + self.tracepoint.replace(":", "__"),)
        return tuple(p.fn for p in self.programs)
