"""`bridgelab run`: adopt the lab, keep it whole, stop cleanly.

Shape (after kopf's reactor, _core/reactor/running.py): a flat list of named root tasks — the
healer's worker, the poller, the periodic resync, the watchdog, the loop-lag monitor, the drop
reporter and the probes' start — run until a signal resolves the stop future or one of them
crashes; then all are cancelled, sockets closed, and the topology left up (the data plane
never depends on the daemon) unless --down-on-exit.

All repairs go through Engine.reconcile, the same path as `up` (healer.py). The parts: the
pending-pass record (pending.py), flap backoff (backoff.py), doorbells (doorbells.py), the
poller (poller.py), the probe supervisor (probe_supervisor.py), the drop reporter
(drop_reporter.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

import structlog

from .. import logs
from ..lab.naming import lab_dir, lab_file
from ..lab.resources import Desired
from ..lab.spec import Spec
from ..reconcile.engine import Engine
from .checker import Checker, explain_argv
from .doorbells import Doorbells
from .drop_reporter import DropReporter
from .healer import Healer
from .metrics import Metrics
from .pending import Pass
from .poller import Poller
from .probe_supervisor import ProbeSupervisor
from .sdnotify import Notifier

log = logs.get("bridgelab.daemon")


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
    topology: str | None = None  # the file SIGHUP re-reads (None: the embedded seed lab)
    check_interval: float = 10.0  # the expectations (issue #17), jittered ±10%; 0: never
    enter: str | None = None      # a lab host of a multi-host sandbox: its namespace, entered once
                                  # the metrics socket is bound (where a scraper can reach it)
    metrics_socket: object = None  # bound and listening already (a lab host: before entering it)
    children: list = field(default_factory=list)  # (host, argv): per-host daemons this one keeps running


class Daemon:
    def __init__(self, desired: Desired, source: str, opts: Options, spec: Spec | None = None):
        self.opts = opts
        self.spec = spec
        self.engine = Engine(desired, source)
        self.metrics = Metrics(desired.lab, desired.mode, desired.host_name)
        self.notifier = Notifier()
        self.healer = Healer(self.engine, self.metrics, opts.heal, opts.flap_heals, opts.debounce)
        self.ring = self.healer.ring
        self.doorbells = Doorbells(desired, self.ring)
        self.poller = Poller(self.engine, self.doorbells, self.metrics, self.ring, opts.poll, opts.heal)
        self.probes = ProbeSupervisor(desired, self.metrics, opts.bpf_stats)
        self.healer.after_pass.append(self.probes.after_pass)
        self.drops = DropReporter(desired.lab, lambda: self.probes.collector, opts.drop_log_interval)
        self.checker = None
        if spec is not None and spec.expect and opts.check_interval > 0:
            self.checker = Checker(lambda: self.spec, lambda: self.engine.d, self.healer, self.metrics,
                                   opts.check_interval,
                                   lambda: explain_argv(opts.topology, desired.mode == "host"))
            self.healer.after_pass.append(self.checker.after_pass)
        self.metrics_port: int | None = None

    @property
    def d(self) -> Desired:
        return self.engine.d

    # ---------------------------------------------------------------- root tasks

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

    async def watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        while interval:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def root_tasks(self) -> list[tuple[str, Coroutine]]:
        tasks = [
            ("worker", self.healer.worker(self.doorbells.subscribe)),
            ("poller", self.poller.run()),
            ("resync", self.resyncer()),
            ("watchdog", self.watchdog()),
            ("lag", self.lag_monitor()),
            ("drops", self.drops.run()),
        ]
        if self.opts.probes:
            tasks.append(("probes", self.probes.start()))
        if self.checker is not None:
            tasks.append(("checks", self.checker.run()))
        if self.opts.children:
            tasks.append(("hosts", self.hosts()))
        if self.d.vxlans:
            from .peers import Peers
            tasks.append(("peers", Peers(lambda: self.engine.d, self.metrics).run()))
        return tasks

    async def hosts(self) -> None:
        """A multi-host sandbox's daemons, one per lab host, each its own process (as on real
        machines): started, restarted if one dies (logged), stopped with this one (by pid)."""
        self.procs: dict = {}
        try:
            while True:
                for host, argv in self.opts.children:
                    p = self.procs.get(host)
                    if p is None or p.returncode is not None:
                        if p is not None:
                            log.warning("host daemon exited; starting it again", host=host, code=p.returncode)
                        self.procs[host] = await asyncio.create_subprocess_exec(*argv)
                        log.info("host daemon started", host=host, pid=self.procs[host].pid)
                await asyncio.sleep(1.0)
        finally:
            for p in self.procs.values():
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
            for p in self.procs.values():
                try:
                    await asyncio.wait_for(p.wait(), 10)
                except asyncio.TimeoutError:
                    p.kill()

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        structlog.contextvars.bind_contextvars(lab=self.d.lab)  # on every log line of this daemon
        stop: asyncio.Future = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.opts.metrics_addr:
            _, self.metrics_port = self.metrics.serve(self.opts.metrics_addr, self.opts.metrics_socket)
        if not await self._start():
            self._close()
            return 1
        tasks = {name: asyncio.create_task(coro, name=f"bridgelab-{name}") for name, coro in self.root_tasks()}
        ending = [t for name, t in tasks.items() if name != "probes"]  # the probes' start may finish
        crashed = asyncio.ensure_future(asyncio.wait(ending, return_when=asyncio.FIRST_EXCEPTION))
        await asyncio.wait([stop, crashed], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if not stop.done():
            for name, t in tasks.items():
                if t.done() and not t.cancelled() and t.exception():
                    log.error("task crashed", task=name, error=repr(t.exception()))
            code = 1
        log.info("stopping", signal=stop.result().name if stop.done() else None)
        self.notifier.notify("STOPPING=1")
        for t in tasks.values():
            t.cancel()
        await asyncio.wait(tasks.values(), timeout=3)
        await self.probes.stop()
        crashed.cancel()
        await self._shutdown()
        return code

    async def _start(self) -> bool:
        t0 = time.monotonic()
        self.doorbells.subscribe()  # before the first dump: nothing that happens from now on is missed
        res = await self.healer.run_pass(Pass(["start: adopt what exists, create what is missing"], t0, None,
                                              False, 0))
        self.doorbells.subscribe()
        if res.errors:
            log.error("start failed", errors=len(res.errors))
            return False
        self._write_info()
        self.metrics.ready.set(1)
        log.info("ready", lab=self.d.lab, mode=self.d.mode, adopted_changes=len(res.actions),
                 heal=self.opts.heal, metrics_port=self.metrics_port,
                 seconds=round(time.monotonic() - t0, 3))
        self.notifier.notify("READY=1", f"STATUS=lab {self.d.lab}: {len(res.actions)} changes at start")
        return True

    def reload(self) -> None:
        """SIGHUP: read the topology again; if it is valid and names the same lab, reconcile toward
        it from now on (what changed is applied by the next pass). A bad file changes nothing."""
        from ..lab import desired as plan
        from ..lab import spec as specmod
        try:
            spec = specmod.load(self.opts.topology)
        except specmod.SpecError as e:
            log.error("reload refused", source=e.source, problems=[f"{f}: {m}" for f, m, _ in e.problems][:10],
                      keeping="the topology loaded before")
            self.metrics.reloads.labels("refused").inc()
            return
        if spec.lab != self.d.lab:
            log.error("reload refused", source=spec.source, problems=[f"lab: {spec.lab}, the daemon runs {self.d.lab}"],
                      keeping="the topology loaded before")
            self.metrics.reloads.labels("refused").inc()
            return
        new = plan.desired(spec, self.d.mode)
        self.engine.retarget(new)
        self.engine.source = spec.source
        self.doorbells.d = new
        self.probes.retarget(new)
        self.spec = spec
        if self.checker is not None:
            self.checker.retarget()
        self.metrics.reloads.labels("applied").inc()
        log.info("reloaded", source=spec.source)
        self.ring("topology reloaded")

    def _write_info(self) -> None:
        os.makedirs(lab_dir(self.d.lab), mode=0o700, exist_ok=True)
        with open(lab_file(self.d.lab, "daemon.json"), "w") as f:
            json.dump({"pid": os.getpid(), "metrics_port": self.metrics_port, "heal": self.opts.heal}, f)

    def _close(self) -> None:
        self.metrics.close()  # first: no scrape may read the probes' maps while they close
        self.probes.close()
        self.doorbells.close()
        self.engine.close()
        self.notifier.close()

    async def _shutdown(self) -> None:
        self._close()
        try:
            os.unlink(lab_file(self.d.lab, "daemon.json"))
        except FileNotFoundError:
            pass
        if self.opts.down_on_exit:
            from ..reconcile.teardown import teardown
            removed = await teardown(self.d.lab)
            log.info("down on exit", removed=len(removed))
        else:
            log.info("stopped; the lab stays up (data plane does not depend on the daemon)")


def run(desired: Desired, source: str, opts: Options, spec: Spec | None = None) -> int:
    return asyncio.run(Daemon(desired, source, opts, spec).run())
