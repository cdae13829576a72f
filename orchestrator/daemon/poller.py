"""What no event announces, polled every 20 ms (~0.2 ms of work a tick: 1% of a core to notice
a sysctl within 20 ms): sysctl values, /run/netns names, the services' processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..adapters import netns, services, sysctl
from ..lab.naming import ns_prefixes
from ..reconcile.engine import Engine
from .doorbells import Doorbells
from .metrics import Metrics

LOG_TICKS = 50  # polls between looks at the services' log sizes (50 x 20 ms: a second)


class Poller:
    def __init__(self, engine: Engine, doorbells: Doorbells, metrics: Metrics, ring: Callable, every: float,
                 heal: bool = True):
        self.engine = engine
        self.doorbells = doorbells
        self.metrics = metrics
        self._ring = ring
        self.every = every
        # --no-heal: what is wrong stays wrong, and ringing about it every 20 ms made a pass
        # (and a "drift" log line) every tick; ring once per drift instead. When healing, every
        # sighting rings: a value undone again between two ticks looks the same as before.
        self.once = not heal
        self.rung: set[tuple] = set()
        self.now: set[tuple] = set()

    def ring(self, cause: str, ns: str | None = None, scope: str = "all") -> None:
        key = (cause, ns)
        self.now.add(key)
        if self.once and key in self.rung:
            return
        self.rung.add(key)
        self._ring(cause, ns, scope=scope)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                self.poll_once()
            except OSError as e:  # a namespace or process vanished while we looked: look again
                self.ring(f"poll: {e}", scope="all")

    def poll_once(self) -> None:
        self.now = set()
        try:
            self._poll()
        finally:
            self.rung &= self.now   # a drift gone is rung about again if it comes back

    def _poll(self) -> None:
        d = self.engine.d
        self.ticks = getattr(self, "ticks", 0) + 1
        if self.ticks % LOG_TICKS == 0:  # a stat of each service log, once a second
            services.cap_logs(d.lab)
        want_ns = {n.name for n in d.namespaces}
        self.metrics.tasks.set(len(asyncio.all_tasks()))
        self.metrics.sockets.set(len(self.doorbells) + len(self.engine.rtnl._handles))
        present = set(netns.list_names(ns_prefixes(d.lab)))
        # a missing or replaced namespace is dumped afresh anyway, and what its loss did to
        # the others' links rang their own doorbells: no need to re-dump everything
        if present != want_ns:
            self.ring("namespace " + ", ".join(sorted(want_ns ^ present)), scope="none")
            return
        for ns in self.doorbells.rtnl_namespaces():
            if ns is not None and netns.inode(ns) != self.doorbells.inode(ns):
                self.ring("namespace replaced", ns, scope="none")
        for s in d.sysctls:
            if s.ns is None or s.ns in present:
                v = sysctl.read(s.ns, s.key)
                if v is not None and v != s.value:
                    self.ring(f"sysctl {s.key}={v}", s.ns, scope="none")
        line = self.engine.st.impair.get("delayline")
        if line and not services.running(line):
            services.reap(line["pid"])
            self.ring("the delay line is not running", scope="none")
        for s in d.services:
            rec = self.engine.st.services.get(s.name)
            if rec and not services.alive(rec, s.ns):
                services.reap(rec["pid"])
                self.ring(f"service {s.name} not running", s.ns, scope="none")
