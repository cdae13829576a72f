"""`bridgelab run`: adopt the lab, keep it whole, stop cleanly.

Shape (after kopf's reactor): named root tasks — the reconcile worker, the poller, the periodic
resync and the watchdog — run until a signal resolves the stop future; then they are cancelled,
sockets closed, and the topology left up (the data plane never depends on the daemon) unless
--down-on-exit.

All repairs go through Engine.reconcile, the same path as `up`. One worker runs passes one
after another (events for a resource are handled in order); inside a pass, actions of a phase
run concurrently (independent resources heal in parallel); doorbells that ring while a pass
runs are coalesced into the next one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass

import structlog

from . import droplog, logs, netns, plan
from .adapters import services, sysctl
from .metrics import KIND, KINDS, Metrics
from .model import Desired
from .reconcile import Action, Engine, Result
from .sdnotify import Notifier
from .state import lab_dir
from .watch import Doorbell, nft_doorbell, rtnl_doorbell

log = logs.get("bridgelab.daemon")

FLAP_WINDOW = 30.0  # seconds
PROBE_SYNC_QUIET = 0.25  # seconds without a repair before the probes re-attach
BACKOFF_MAX = 300.0


@dataclass
class Flap:
    heals: deque
    level: int = 0
    until: float = 0.0


@dataclass
class Options:
    heal: bool = True
    resync: float = 30.0
    poll: float = 0.02  # ~0.2 ms of work a tick: 1% of a core for 20 ms to notice a sysctl
    debounce: float = 0.002
    down_on_exit: bool = False
    metrics_addr: str | None = "127.0.0.1:9477"
    flap_heals: int = 5  # heals of one resource within FLAP_WINDOW that make it "flapping"
    probes: bool = True
    bpf_stats: bool = False  # count probe run time (a kernel-wide switch, held while we run)
    drop_log_interval: float = 2.0


class Daemon:
    def __init__(self, desired: Desired, source: str, opts: Options):
        self.d = desired
        self.opts = opts
        self.engine = Engine(desired, source)
        self.metrics = Metrics(desired.lab, desired.mode)
        self.notifier = Notifier()
        self.doorbells: dict[tuple[str | None, str], Doorbell] = {}
        self.flaps: dict[tuple, Flap] = {}
        self._dirty = asyncio.Event()
        self._first_ring: float | None = None
        self._causes: list[str] = []
        self._dirty_ns: set | None = set()  # namespaces to dump afresh; None: all of them
        self._lost = False
        self.passes = 0
        self._queued = 0
        self.metrics_port: int | None = None
        self.probes = None
        self._probe_task: asyncio.Task | None = None
        self._probe_sync_task: asyncio.Task | None = None
        self._probe_sync_wanted = False
        self._probe_sync_lock = threading.Lock()
        self._stats_fd: int | None = None

    # ---------------------------------------------------------------- doorbells

    def ring(self, cause: str, ns: str | None = None, lost: bool = False, scope: str = "all") -> None:
        """Something may have drifted. SCOPE says what the next pass must dump afresh: "ns" the
        links, addresses and routes of namespace NS; "none" nothing (sysctls, nftables and
        services are read on every pass anyway); "all" every namespace."""
        if lost or scope == "all" or self._dirty_ns is None:
            self._dirty_ns = None
        elif scope == "ns":
            self._dirty_ns.add(ns)
        if self._first_ring is None:
            self._first_ring = time.monotonic()
        self._queued += 1
        self.metrics.queue_depth.set(self._queued)
        if len(self._causes) < 8:
            self._causes.append(f"{ns or 'host'}: {cause}" if ns is not None or cause else cause)
        self._lost |= lost
        self._dirty.set()

    def _subscribe(self) -> bool:
        """Open a doorbell in every managed namespace that lacks a current one. True if any."""
        loop = asyncio.get_running_loop()
        opened = False
        for ns in self.d.managed_ns():
            if ns is not None and not netns.exists(ns):
                continue
            try:
                ino = netns.inode(ns)
                for kind, make in (("rtnl", rtnl_doorbell), ("nft", nft_doorbell)):
                    if kind == "nft" and ns != self.d.host_ns:
                        continue
                    bell = self.doorbells.get((ns, kind))
                    if bell is not None and bell.inode == ino:
                        continue
                    if bell is not None:
                        bell.close()
                    self.doorbells[(ns, kind)] = make(loop, ns, self.ring)
                    opened = True
            except OSError as e:
                # someone deleted or is re-creating it right now (a half-made /run/netns entry is
                # an empty file: setns says EINVAL); the poller sees the outcome and rings again
                log.warning("subscribe deferred", ns=ns, error=str(e))
                loop.call_later(0.05, self.ring, f"subscribe {ns}: {e.strerror or e}")
        return opened

    def _close_doorbells(self) -> None:
        for bell in self.doorbells.values():
            bell.close()
        self.doorbells.clear()

    # ---------------------------------------------------------------- backoff

    @staticmethod
    def _key(a: Action) -> tuple:
        return (KIND.get(a.verb, a.verb), a.ns, a.target)

    def _allowed(self, a: Action) -> bool:
        f = self.flaps.get(self._key(a))
        return f is None or time.monotonic() >= f.until

    def _record_heal(self, a: Action) -> None:
        now = time.monotonic()
        f = self.flaps.setdefault(self._key(a), Flap(deque(maxlen=self.opts.flap_heals)))
        f.heals.append(now)
        if len(f.heals) == self.opts.flap_heals and now - f.heals[0] < FLAP_WINDOW:
            f.level += 1
            delay = min(0.5 * 2 ** f.level, BACKOFF_MAX)
            f.until = now + delay
            f.heals.clear()
            log.warning("flapping", resource=a.target, ns=a.ns, kind=self._key(a)[0],
                        backoff_seconds=delay, cause="undone repeatedly (an admin or a tool fighting the daemon?)")
            asyncio.get_running_loop().call_later(delay, self.ring, "backoff expired", a.ns)
        elif f.level and now - f.heals[0] > FLAP_WINDOW:
            f.level = 0
        self.metrics.flapping.set(sum(1 for x in self.flaps.values() if x.until > now))

    # ---------------------------------------------------------------- passes

    async def _pass(self, cause: str, first: float | None, only: set | None = None) -> Result:
        res = await self.engine.reconcile(dry_run=not self.opts.heal, allow=self._allowed, only=only)
        self.passes += 1
        failed = {id(a) for a, _ in res.errors}
        for a in res.actions:
            kind = KIND.get(a.verb, a.verb)
            self.metrics.drift.labels(kind).inc()
            if not self.opts.heal:
                outcome = "observed"
            else:
                outcome = "failed" if id(a) in failed else "applied"
                if outcome == "applied":
                    self._record_heal(a)
            self.metrics.heal_actions.labels(kind, outcome).inc()
            log.info("drift", resource=a.target, ns=a.ns, kind=kind, cause=cause, action=a.verb,
                     detail=a.detail, outcome=outcome)
        for a in res.held:
            self.metrics.heal_actions.labels(KIND.get(a.verb, a.verb), "backoff").inc()
        for a, err in res.errors:
            log.error("heal failed", resource=a.target, ns=a.ns, action=a.verb, error=err)
        if res.actions and self.opts.heal:
            took = time.monotonic() - (first or time.monotonic())
            self.metrics.heal_seconds.observe(took)
            log.info("healed", actions=len(res.actions), errors=len(res.errors), cause=cause,
                     duration_ms=round(took * 1000, 2), pass_ms=round(res.seconds * 1000, 2))
        stray = self.engine.rtnl.drain_unsolicited()
        if stray:
            self.metrics.unsolicited.inc(len(stray))
            log.warning("unsolicited netlink messages dropped", count=len(stray),
                        messages=[f"{ns}: type {t} seq {q}" for ns, t, q in stray[:5]])
        result = ("failed" if res.errors else "healed" if self.opts.heal else "drift") if res.actions else "clean"
        self.metrics.passes.labels(result).inc()
        self._update_gauges(res)
        if self.probes is not None and (res.actions or self.probes.attach_errors or not self.opts.heal):
            self._sync_probes()  # a device or namespace made anew needs its programs again
        return res

    # ---------------------------------------------------------------- probes

    async def start_probes(self) -> None:
        """Compile and attach the eBPF probes (issue #4) after ready: the lab does not wait for a
        compiler. Whatever cannot load or attach is logged with the kernel's reason and exported
        as bridgelab_probe_attached 0; the daemon carries on without it."""
        from .probes.collector import ProbeCollector
        from .probes.loader import Probes
        t0 = time.monotonic()
        p = Probes(self.d.lab)
        try:
            await asyncio.to_thread(p.load)
        except Exception as e:  # bcc missing or broken: say so, run without probes
            log.error("probes unavailable", reason=str(e))
            return
        self.probes = p
        self.probe_collector = None
        await asyncio.to_thread(self._sync_probes_now)
        ports = {e.name for v in self.d.veths for e in (v.a, v.b) if e.master}
        macs = {}
        for v in self.d.veths:
            for e in (v.a, v.b):
                if e.mac:
                    macs[e.mac.lower()] = ({ns: n for n, ns in self.d.nodes.items()}.get(e.ns, "host"), e.name)
        for b in self.d.bridges:
            if b.mac:
                macs[b.mac.lower()] = ({ns: n for n, ns in self.d.nodes.items()}.get(b.ns, "host"), b.name)
        self.probe_collector = ProbeCollector(p, ports, macs)
        self.metrics.registry.register(self.probe_collector)
        if self.opts.bpf_stats:
            from .probes import links
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
        log.info("probes ready", attached=p.attached(), links=sum(len(a.fds) for a in [*p.tc.values(), *p.nf.values()]),
                 errors=p.attach_errors or None, read_packet=p.read_packet,
                 seconds=round(time.monotonic() - t0, 3))

    def _sync_probes(self) -> None:
        """Re-attach after a heal, off the heal's path: in a worker thread (setns, program loads
        and link creation there), coalesced, once repairs have been quiet for PROBE_SYNC_QUIET so
        a burst of them is done first: measured, syncing sooner doubled the heal latency of
        recreated links (the sync competes for the 2 cores and the GIL with the follow-up passes).
        The price: packets on a device made anew are counted from ~0.3 s after its repair."""
        self._probe_sync_wanted = True
        if self._probe_sync_task is None or self._probe_sync_task.done():
            self._probe_sync_task = asyncio.get_running_loop().create_task(
                self._probe_syncer(), name="bridgelab-probe-sync")

    async def _probe_syncer(self) -> None:
        while self._probe_sync_wanted and self.probes is not None:
            self._probe_sync_wanted = False
            await asyncio.sleep(PROBE_SYNC_QUIET)
            if self._probe_sync_wanted:
                continue  # still repairing: wait for quiet
            await asyncio.to_thread(self._sync_probes_now)

    def _sync_probes_now(self) -> None:
        try:
            with self._probe_sync_lock:  # start_probes' first sync and a heal's may overlap
                made = self.probes.sync(self.d)
        except Exception as e:  # never let the tracer take the healer down
            log.exception("probe sync failed", error=str(e))
            return
        if made:
            log.debug("probes attached", links=made)
            if self.probe_collector is not None:
                try:
                    self.probe_collector.fold()
                except Exception as e:
                    log.warning("probe fold failed", error=str(e))
        for where, why in self.probes.attach_errors.items():
            log.warning("probe attach failed", where=where, reason=why)

    def _update_gauges(self, res: Result) -> None:
        drifted: dict[str, int] = {}
        if not self.opts.heal:
            for a in res.actions:
                k = KIND.get(a.verb, a.verb)
                drifted[k] = drifted.get(k, 0) + 1
        totals = {"namespace": len(self.d.namespaces), "link": len(self.d.bridges) + 2 * len(self.d.veths),
                  "bridge_port": sum(1 for v in self.d.veths for e in v.ends if e.master),
                  "address": len(self.d.addresses), "route": len(self.d.routes), "sysctl": len(self.d.sysctls),
                  "nft": len(self.d.tables), "service": len(self.d.services)}
        for k in KINDS:
            bad = min(drifted.get(k, 0), totals.get(k, 0))
            self.metrics.resources.labels(k, "ok").set(totals.get(k, 0) - bad)
            self.metrics.resources.labels(k, "drift").set(bad)

    async def worker(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.opts.debounce)  # coalesce a burst into one pass
            self._dirty.clear()
            first, self._first_ring = self._first_ring, None
            causes, self._causes = self._causes, []
            only, self._dirty_ns = self._dirty_ns, set()
            self._queued = 0
            self.metrics.queue_depth.set(0)
            if self._lost:
                self._lost = False
                self.metrics.resyncs.labels("lost_events").inc()
                log.warning("resync", reason="lost netlink events (ENOBUFS): full re-observation")
            try:
                await self._pass("; ".join(causes) or "event", first, only)
                # what rang during the pass was mostly our own repair echoing back; keep the bell
                # set (one more look) but not those causes, which would mislabel the next drift
                self._causes = []
            except Exception as e:  # a pass must never kill the daemon: log, count, try again later
                self.metrics.passes.labels("failed").inc()
                log.exception("reconcile pass failed", error=str(e))
                asyncio.get_running_loop().call_later(1.0, self.ring, "retry after failure")
            if self._subscribe():  # namespaces made anew: listen there, then look once more
                self.metrics.resyncs.labels("resubscribe").inc()
                self.ring("resubscribed")

    async def poller(self) -> None:
        """What no event announces: sysctls, namespace names, service processes."""
        while True:
            await asyncio.sleep(self.opts.poll)
            try:
                self._poll_once()
            except OSError as e:  # a namespace or process vanished while we looked: look again
                self.ring(f"poll: {e}", scope="all")

    def _poll_once(self) -> None:
        prefix = plan.ns_prefix(self.d.lab)
        want_ns = {n.name for n in self.d.namespaces}
        self.metrics.tasks.set(len(asyncio.all_tasks()))
        self.metrics.sockets.set(len(self.doorbells) + len(self.engine.rtnl._handles))
        present = set(netns.list_names(prefix))
        # a missing or replaced namespace is dumped afresh anyway, and what its loss did to
        # the others' links rang their own doorbells: no need to re-dump everything
        if present != want_ns:
            self.ring("namespace " + ", ".join(sorted(want_ns ^ present)), scope="none")
            return
        for ns, kind in list(self.doorbells):
            if kind == "rtnl" and ns is not None and netns.inode(ns) != self.doorbells[(ns, kind)].inode:
                self.ring("namespace replaced", ns, scope="none")
        for s in self.d.sysctls:
            if s.ns is None or s.ns in present:
                v = sysctl.read(s.ns, s.key)
                if v is not None and v != s.value:
                    self.ring(f"sysctl {s.key}={v}", s.ns, scope="none")
        for s in self.d.services:
            rec = self.engine.st.services.get(s.name)
            if rec and not services.alive(rec, s.ns):
                services.reap(rec["pid"])
                self.ring(f"service {s.name} not running", s.ns, scope="none")

    async def resyncer(self) -> None:
        while True:
            await asyncio.sleep(self.opts.resync)
            self.metrics.resyncs.labels("periodic").inc()
            self.ring("periodic resync")

    async def lag_monitor(self) -> None:
        """The loop's own health: how late a 100 ms sleep wakes up."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.1)
            self.metrics.loop_lag.observe(max(0.0, time.monotonic() - t - 0.1))

    async def drop_reporter(self) -> None:
        """A `drops` log event when the probes count new drops of lab packets, per node, hook and
        reason (the journal is where a user looks when a dashboard shows drops)."""
        prev: dict = {}
        while True:
            await asyncio.sleep(self.opts.drop_log_interval)
            col = getattr(self, "probe_collector", None)
            if col is None:
                continue
            try:
                await self._report_drops(col, prev)
            except Exception as e:  # reporting must never stop the daemon
                log.warning("drop report failed", error=str(e))

    async def _report_drops(self, col, prev: dict) -> None:
        drops = (await asyncio.to_thread(col.samples))["drops"]
        fresh = []
        for (node, hook, reason), total in sorted(drops.items()):
            new = total - prev.get((node, hook, reason), 0)
            if new > 0:
                log.warning("drops", node=node, hook=hook, reason=reason, count=new, total=total)
                fresh.append({"ts": time.time(), "node": node, "hook": hook, "reason": reason, "count": new})
            prev[(node, hook, reason)] = total
        if fresh:
            samples = await asyncio.to_thread(col.drop_samples)
            for f in fresh:
                f["sample"] = samples.get((f["node"], f["hook"], f["reason"]))
            await asyncio.to_thread(droplog.append, self.d.lab, fresh)  # may trim the file: off the loop

    async def watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        while interval:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        structlog.contextvars.bind_contextvars(lab=self.d.lab)  # on every log line of this daemon
        stop: asyncio.Future = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
        if self.opts.metrics_addr:
            _, self.metrics_port = self.metrics.serve(self.opts.metrics_addr)
        t0 = time.monotonic()
        self._subscribe()  # before the first dump: nothing that happens from now on is missed
        res = await self._pass("start: adopt what exists, create what is missing", t0)
        self._subscribe()
        if res.errors:
            log.error("start failed", errors=len(res.errors))
            self._shutdown_sync()
            return 1
        self._write_info()
        self.metrics.ready.set(1)
        log.info("ready", lab=self.d.lab, mode=self.d.mode, adopted_changes=len(res.actions),
                 heal=self.opts.heal, metrics_port=self.metrics_port,
                 seconds=round(time.monotonic() - t0, 3))
        self.notifier.notify("READY=1", f"STATUS=lab {self.d.lab}: {len(res.actions)} changes at start")
        tasks = {name: asyncio.create_task(coro, name=f"bridgelab-{name}") for name, coro in (
            ("worker", self.worker()), ("poller", self.poller()),
            ("resync", self.resyncer()), ("watchdog", self.watchdog()), ("lag", self.lag_monitor()),
            ("drops", self.drop_reporter()))}
        if self.opts.probes:
            self._probe_task = asyncio.create_task(self.start_probes(), name="bridgelab-probes")
        crashed = asyncio.ensure_future(asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION))
        await asyncio.wait([stop, crashed], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if not stop.done():
            for name, t in tasks.items():
                if t.done() and t.exception():
                    log.error("task crashed", task=name, error=repr(t.exception()))
            code = 1
        log.info("stopping", signal=stop.result().name if stop.done() else None)
        self.notifier.notify("STOPPING=1")
        for t in [*tasks.values(), *([self._probe_task] if self._probe_task else [])]:
            t.cancel()
        await asyncio.wait([*tasks.values(), *([self._probe_task] if self._probe_task else [])], timeout=3)
        if self._probe_sync_task is not None:  # let a sync in its thread finish before closing
            self._probe_sync_wanted = False
            await asyncio.wait([self._probe_sync_task], timeout=5)
        crashed.cancel()
        await self._shutdown()
        return code

    def _write_info(self) -> None:
        os.makedirs(lab_dir(self.d.lab), exist_ok=True)
        with open(os.path.join(lab_dir(self.d.lab), "daemon.json"), "w") as f:
            json.dump({"pid": os.getpid(), "metrics_port": self.metrics_port, "heal": self.opts.heal}, f)

    def _shutdown_sync(self) -> None:
        self.metrics.close()  # first: no scrape may read the probes' maps while they close
        if self.probes is not None:
            self.probes.close()  # links are fd-bound: closing them detaches every program
            self.probes = None
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None
        self._close_doorbells()
        self.engine.close()
        self.metrics.close()
        self.notifier.close()

    async def _shutdown(self) -> None:
        self._shutdown_sync()
        try:
            os.unlink(os.path.join(lab_dir(self.d.lab), "daemon.json"))
        except FileNotFoundError:
            pass
        if self.opts.down_on_exit:
            from .teardown import teardown
            removed = await teardown(self.d.lab)
            log.info("down on exit", removed=len(removed))
        else:
            log.info("stopped; the lab stays up (data plane does not depend on the daemon)")


def run(desired: Desired, source: str, opts: Options) -> int:
    return asyncio.run(Daemon(desired, source, opts).run())
