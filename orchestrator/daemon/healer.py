"""Reconcile passes, one after another: each pass is the engine's reconcile (the same path as
`up`), accounted for in metrics and logs; repairs of flapping resources are held back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .. import logs
from ..lab.resources import Desired
from ..reconcile.engine import Engine, Result
from ..reconcile.kinds import KINDS, METRIC_KINDS, Action
from .backoff import FlapTracker
from .metrics import Metrics
from .pending import Pass, Pending, Ring

log = logs.get("bridgelab.daemon")


class Healer:
    def __init__(self, engine: Engine, metrics: Metrics, heal: bool, flap_heals: int, debounce: float):
        self.engine = engine
        self.metrics = metrics
        self.heal = heal
        self.debounce = debounce
        self.flaps = FlapTracker(heals=flap_heals)
        self.pending = Pending()
        self.dirty = asyncio.Event()
        self.passes = 0
        self.after_pass: list[Callable[[Result], None]] = []  # e.g. re-sync the probes
        self.busy = False  # a pass is running (expectations wait for it, issue #17)
        self.observed: set[tuple] = set()   # --no-heal: drifts already reported, each said once
        self._cause = ""
        engine.on_phase = self._phase_done

    @property
    def d(self) -> Desired:
        return self.engine.d

    def ring(self, cause: str, ns: str | None = None, lost: bool = False, scope: str = "all") -> None:
        """Something may have drifted: a pass will look."""
        self.pending.add(Ring(cause, ns, lost, scope), time.monotonic())
        self.metrics.queue_depth.set(self.pending.rings)
        self.dirty.set()

    async def worker(self, resubscribe: Callable[[], bool]) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(self.debounce)  # coalesce a burst into one pass
            self.dirty.clear()
            p = self.pending.take()
            self.metrics.queue_depth.set(0)
            if p.lost:
                self.metrics.resyncs.labels("lost_events").inc()
                log.warning("resync", reason="lost netlink events (ENOBUFS): full re-observation")
            try:
                await self.run_pass(p)
                self.pending.forget_causes()
            except Exception as e:  # a pass must never kill the daemon: log, count, try again later
                self.metrics.passes.labels("failed").inc()
                log.exception("reconcile pass failed", error=str(e))
                asyncio.get_running_loop().call_later(1.0, self.ring, "retry after failure")
            if resubscribe():  # namespaces made anew: listen there, then look once more
                self.metrics.resyncs.labels("resubscribe").inc()
                self.ring("resubscribed")

    async def run_pass(self, p: Pass) -> Result:
        self.busy = True
        self._cause = "; ".join(p.causes) or "event"
        try:
            res = await self.engine.reconcile(dry_run=not self.heal, allow=self._allowed, only=p.only)
        finally:
            self.busy = False
        self.passes += 1
        self._account(res, p.first, p.only)
        for hook in self.after_pass:
            hook(res)
        return res

    # ---------------------------------------------------------------- backoff

    def _allowed(self, a: Action) -> bool:
        return self.flaps.allowed(a.resource, time.monotonic())

    def _record_heal(self, a: Action) -> None:
        if a.caused_by is not None:
            return  # a consequence of another repair, not this resource being undone
        now = time.monotonic()
        delay = self.flaps.record(a.resource, now)
        if delay is not None:
            log.warning("flapping", resource=a.target, ns=a.ns, kind=a.metric, backoff_seconds=delay,
                        cause="undone repeatedly (an admin or a tool fighting the daemon?)")
            asyncio.get_running_loop().call_later(delay, self.ring, "backoff expired", a.ns)
        self.metrics.flapping.set(self.flaps.flapping(now))

    # ---------------------------------------------------------------- accounting

    def _phase_done(self, applied: list[Action], errors: list[tuple[Action, str]]) -> None:
        """Repairs are counted as each phase ends, not when the pass does: a service waiting to
        listen does not hold back the count of the namespace made before it."""
        for a in applied:
            self._count(a, "applied")
        for a, err in errors:
            self._count(a, "failed")
            log.error("heal failed", resource=a.target, ns=a.ns, action=a.verb, error=err)

    def _count(self, a: Action, outcome: str) -> None:
        self.metrics.drift.labels(a.metric).inc()
        if outcome == "applied":
            self._record_heal(a)
        self.metrics.heal_actions.labels(a.metric, outcome).inc()
        log.info("drift", resource=a.target, ns=a.ns, kind=a.metric, cause=self._cause, action=a.verb,
                 detail=a.detail, outcome=outcome)

    def _account(self, res: Result, first: float | None, only=None) -> None:
        cause = self._cause
        if not self.heal:  # nothing was applied: each drift is only observed, and said once
            key = lambda a: (a.ns, a.resource, a.verb, a.detail)  # noqa: E731
            fresh = [a for a in res.actions if key(a) not in self.observed]
            # a pass over some namespaces only says nothing about the others' drift
            kept = {k for k in self.observed if only is not None and k[0] not in only}
            self.observed = kept | {key(a) for a in res.actions}
            for a in fresh:
                self._count(a, "observed")
        for a in res.held:
            self.metrics.heal_actions.labels(a.metric, "backoff").inc()
        if res.actions and self.heal:
            took = time.monotonic() - (first or time.monotonic())
            self.metrics.heal_seconds.observe(took)
            log.info("healed", actions=len(res.actions), errors=len(res.errors), cause=cause,
                     duration_ms=round(took * 1000, 2), pass_ms=round(res.seconds * 1000, 2))
        stray = self.engine.rtnl.drain_unsolicited()
        if stray:
            self.metrics.unsolicited.inc(len(stray))
            log.warning("unsolicited netlink messages dropped", count=len(stray),
                        messages=[f"{ns}: type {t} seq {q}" for ns, t, q in stray[:5]])
        result = ("failed" if res.errors else "healed" if self.heal else "drift") if res.actions else "clean"
        self.metrics.passes.labels(result).inc()
        self._gauges(res)

    def _gauges(self, res: Result) -> None:
        drifted: dict[str, int] = {}
        if not self.heal:
            for a in res.actions:
                drifted[a.metric] = drifted.get(a.metric, 0) + 1
        totals: dict[str, int] = {}
        for k in KINDS:
            totals[k.metric] = totals.get(k.metric, 0) + k.count(self.d)
        for k in METRIC_KINDS:
            bad = min(drifted.get(k, 0), totals.get(k, 0))
            self.metrics.resources.labels(k, "ok").set(totals.get(k, 0) - bad)
            self.metrics.resources.labels(k, "drift").set(bad)
