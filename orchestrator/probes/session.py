"""A trace session: probes loaded in trace mode beside the daemon's, attached to the lab, their
ring buffers opened into one list of events, merged in time order and assembled per packet.
`bridgelab trace` and explain's live check both run one (collection apart from output, as
pwru keeps it)."""
from __future__ import annotations

import ctypes as ct

from ..lab.resources import Desired
from .events import Assembler, Event
from .families import BY_NAME
from .loader import Probes, TraceFilter
from .reasons import Symbols, reason_names


class TraceSession:
    def __init__(self, d: Desired, flt: TraceFilter, ring_pages: int = 256):
        self.d = d
        self.p = Probes(d.lab, trace=flt, ring_pages=ring_pages)
        self.pending: list[Event] = []
        self.managers: list = []
        self.events = 0

    def start(self) -> list[str]:
        """Load, attach and open the rings; what could not be had, as lines to show."""
        p = self.p
        p.load()
        notes = [f"probe {n} unavailable: {f.reason}" if not f.ok else f"probe {n} degraded: {f.degraded}"
                 for n, f in p.families.items() if not f.ok or f.degraded]
        if not p.families["tc"].ok:
            return notes
        p.sync(self.d)
        notes += [f"cannot attach {w}: {why}" for w, why in p.attach_errors.items()]
        for name in ("tc", "nf", "drops"):
            fam = p.families[name]
            if fam.ok and fam.bpf is not None:
                fam.bpf[BY_NAME[name].ring].open_ring_buffer(self._on_event)
                if fam.bpf not in self.managers:
                    self.managers.append(fam.bpf)
        return notes

    @property
    def ok(self) -> bool:
        return self.p.families["tc"].ok

    def _on_event(self, _ctx, data, _size) -> int:
        self.pending.append(Event.from_buffer_copy(ct.string_at(data, ct.sizeof(Event))))
        return 0

    def assembler(self) -> Assembler:
        return Assembler(self.p.names, self.d.bridge_ports(), Symbols().name, reason_names())

    def poll(self, timeout_ms: int = 10) -> int:
        """Read what the rings hold; wait up to TIMEOUT_MS when they are empty."""
        from bcc.libbcc import lib
        got = sum(max(0, lib.bpf_consume_ringbuf(b._ringbuf_manager) or 0) for b in self.managers)
        if not got and self.managers and timeout_ms:
            self.managers[0].ring_buffer_poll(timeout_ms)
        return got

    def drain(self) -> None:
        from bcc.libbcc import lib
        for b in self.managers:
            lib.bpf_consume_ringbuf(b._ringbuf_manager)

    def feed(self, asm: Assembler, cutoff: int | None) -> None:
        """Hand events up to CUTOFF (ns) to the assembler in time order. Three rings, one per
        family: a slower ring may still hold earlier hops, so the last few ms wait."""
        self.pending.sort(key=lambda e: e.ts)
        n = len(self.pending) if cutoff is None else next(
            (i for i, e in enumerate(self.pending) if e.ts > cutoff), len(self.pending))
        for e in self.pending[:n]:
            asm.feed(e)
        self.events += n
        del self.pending[:n]

    def lost(self) -> int:
        total = 0
        for name in ("tc", "nf", "drops"):
            t = self.p.table(name, BY_NAME[name].lost)
            if t is not None:
                total += sum(int(x) for x in t[0])
        return total

    def close(self) -> None:
        self.p.close()
