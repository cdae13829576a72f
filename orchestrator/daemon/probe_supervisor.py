"""The eBPF probes inside the daemon: compiled and attached after ready (the lab never waits
for a compiler), re-attached off the heal's path after repairs, and their collector registered
with the metrics. Whatever cannot load or attach is logged with the kernel's reason and
exported as bridgelab_probe_attached 0; the daemon carries on without it."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from .. import logs
from ..lab.resources import Desired
from ..probes import memory
from .metrics import Metrics

log = logs.get("bridgelab.daemon")

PROBE_SYNC_QUIET = 0.25  # seconds without a repair before the probes re-attach


def network_labels(d: Desired) -> dict[tuple[str, str], str]:
    """(node, interface) -> network, for the datapath metrics' `network` label."""
    nodes = d.ns_nodes()
    return {(nodes.get(ns, "host"), dev): net for (ns, dev), net in d.networks.items()}


class ProbeSupervisor:
    def __init__(self, d: Desired, metrics: Metrics, bpf_stats: bool):
        self.d = d
        self.metrics = metrics
        self.bpf_stats = bpf_stats
        self.probes = None
        self.collector = None
        self._stats_fd: int | None = None
        self._sync_task: asyncio.Task | None = None
        self._sync_wanted = False
        self._lock = threading.Lock()

    async def start(self) -> None:
        from ..probes.collector import ProbeCollector
        from ..probes.loader import Probes
        t0 = time.monotonic()
        p = Probes(self.d.lab)
        try:
            await asyncio.to_thread(p.load)
        except Exception as e:  # bcc missing or broken: say so, run without probes
            log.error("probes unavailable", reason=str(e))
            return
        self.probes = p
        await asyncio.to_thread(self.sync_now)
        from ..probes.attach import mirrors
        self.collector = ProbeCollector(p, self.d.bridge_ports(), self.d.macs(), network_labels(self.d),
                                        mirrors(p, self.d))
        self.metrics.registry.register(self.collector)
        if self.bpf_stats:
            from ..probes import links
            try:
                self._stats_fd = links.enable_run_stats()
                p.stats_enabled = True
            except OSError as e:
                log.warning("bpf stats unavailable", error=str(e))
        for name, fam in p.families.items():
            if not fam.ok:
                log.error("probe not attached", probe=name, reason=fam.reason)
            elif fam.degraded:
                log.warning("probe degraded", probe=name, reason=fam.degraded)
        mem = await asyncio.to_thread(memory.release)   # the compiler is done: give its memory back
        log.info("probes ready", attached=p.attached(), links=sum(len(a.fds) for a in [*p.tc.values(), *p.nf.values()]),
                 errors=p.attach_errors or None, read_packet=p.read_packet,
                 seconds=round(time.monotonic() - t0, 3), memory=mem, compiled=p.compile_info or None)

    def after_pass(self, res) -> None:
        if self.probes is not None and (res.actions or self.probes.attach_errors):
            self.request_sync()  # a device or namespace made anew needs its programs again

    def retarget(self, d: Desired) -> None:
        self.d = d
        if self.collector is not None:
            self.collector.ports, self.collector.macs = d.bridge_ports(), d.macs()
            self.collector.networks = network_labels(d)
            from ..probes.attach import mirrors
            self.collector.mirrors = mirrors(self.probes, d)
        self.request_sync()

    def request_sync(self) -> None:
        """Re-attach after a heal, off the heal's path: in a worker thread (setns, program loads
        and link creation there), coalesced, once repairs have been quiet for PROBE_SYNC_QUIET so
        a burst of them is done first: measured, syncing sooner doubled the heal latency of
        recreated links (the sync competes for the 2 cores and the GIL with the follow-up passes).
        The price: packets on a device made anew are counted from ~0.3 s after its repair."""
        self._sync_wanted = True
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._syncer(), name="bridgelab-probe-sync")

    async def _syncer(self) -> None:
        while self._sync_wanted and self.probes is not None:
            self._sync_wanted = False
            await asyncio.sleep(PROBE_SYNC_QUIET)
            if self._sync_wanted:
                continue  # still repairing: wait for quiet
            await asyncio.to_thread(self.sync_now)

    def sync_now(self) -> None:
        try:
            with self._lock:  # the first sync and a heal's may overlap
                made = self.probes.sync(self.d)
        except Exception as e:  # never let the tracer take the healer down
            log.exception("probe sync failed", error=str(e))
            return
        if made:
            log.debug("probes attached", links=made)
            if self.collector is not None:   # after the start (whose own release follows it)
                try:
                    self.collector.fold()
                except Exception as e:
                    log.warning("probe fold failed", error=str(e))
        for where, why in self.probes.attach_errors.items():
            log.warning("probe attach failed", where=where, reason=why)

    async def stop(self) -> None:
        if self._sync_task is not None:  # let a sync in its thread finish before closing
            self._sync_wanted = False
            await asyncio.wait([self._sync_task], timeout=5)

    def close(self) -> None:
        if self.probes is not None:
            self.probes.close()  # links are fd-bound: closing them detaches every program
            self.probes = None
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None
