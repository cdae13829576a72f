"""The expectations, checked continuously (issue #17): every --check-interval (jittered), never
while a heal pass runs or is due, and again right after each heal. The probe is the cheap one of
`bridgelab check` (one echo, one connect, one request); only a failure pays for the full
explain, run as `bridgelab explain` in a child process so its eBPF compile never stays in the
daemon. A failure seen while the lab is being repaired is `healing`, not a violation, and is
looked at again once the repair is done."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable

from .. import logs
from ..diagnose import check as chk
from ..lab.resources import Desired
from ..lab.spec import Spec

log = logs.get("bridgelab.daemon")

HEAL_GRACE = 2.0   # seconds after a pass that changed something: a failure then is the heal's
EXPLAINS = 2       # full explains at once (each a child process compiling its trace probes)


class Checker:
    def __init__(self, spec: Callable[[], Spec], desired: Callable[[], Desired], healer, metrics,
                 interval: float, explain_argv: Callable[[], list[str]]):
        self.spec, self.desired, self.healer, self.metrics = spec, desired, healer, metrics
        self.interval = interval
        self.explain_argv = explain_argv     # the `bridgelab explain` command line for this lab
        self.kick = asyncio.Event()
        self.state: dict[str, bool] = {}     # name -> holds, as last reported
        self.healing_since: dict[str, float] = {}   # name -> when it first failed during a repair
        self.last_heal = 0.0
        self.rounds = 0
        self._declare()

    def _declare(self) -> None:
        for e in self.spec().expect:
            for res in ("ok", "failed", "healing", "skipped"):
                self.metrics.expect_checks.labels(e.name, res)

    def after_pass(self, res) -> None:
        """Healer hook: a pass that repaired something is followed by a check at once."""
        if res.actions:
            self.last_heal = time.monotonic()
            self.kick.set()

    def retarget(self) -> None:
        """After a reload: series of expectations no longer declared go away."""
        names = {e.name for e in self.spec().expect}
        for name in [n for n in self.state if n not in names]:
            self.state.pop(name)
            for m in (self.metrics.expect_ok,):
                try:
                    m.remove(name)
                except KeyError:
                    pass
        self._declare()
        self.kick.set()

    def _healing(self) -> bool:
        """A repair is running, due, or just done (--no-heal: never; nothing is repaired)."""
        return self.healer.heal and (self.healer.busy or self.healer.dirty.is_set()
                                     or time.monotonic() - self.last_heal < HEAL_GRACE)

    async def run(self) -> None:
        if not self.spec().expect:
            return
        while True:
            try:
                await asyncio.wait_for(self.kick.wait(), self.interval * random.uniform(0.9, 1.1))
            except asyncio.TimeoutError:
                pass
            self.kick.clear()
            waited = time.monotonic()
            while self.healer.heal and (self.healer.busy or self.healer.dirty.is_set()) \
                    and time.monotonic() - waited < self.interval:   # never beside a heal
                await asyncio.sleep(0.05)
            await self.round()

    async def round(self) -> list:
        spec, d = self.spec(), self.desired()
        results = await asyncio.to_thread(chk.check, spec, d)
        self.rounds += 1
        recheck = False
        fresh = []
        for r in results:
            if r.skipped:
                self.metrics.expect_checks.labels(r.name, "skipped").inc()
                continue
            self.metrics.expect_seconds.observe(r.seconds)
            self.metrics.expect_packets.inc(r.packets)
            if r.holds:
                self.metrics.expect_checks.labels(r.name, "ok").inc()
                self._restored(r)
                continue
            since = self.healing_since.get(r.name)
            # a repair explains a failure for two intervals at most: one that outlasts them
            # (a heal in backoff, a fault the daemon cannot undo) is a violation
            if self._healing() and (since is None or time.monotonic() - since < 2 * self.interval):
                self.metrics.expect_checks.labels(r.name, "healing").inc()
                if since is None and self.state.get(r.name, True):
                    self.healing_since[r.name] = time.monotonic()
                    log.info("expectation failing while healing", expectation=r.name, seen=r.state,
                             expected=r.expected, note="checked again when the repair is done")
                recheck = True
                continue
            self.healing_since.pop(r.name, None)
            self.metrics.expect_checks.labels(r.name, "failed").inc()
            if self.state.get(r.name, True):
                fresh.append(r)
        if fresh:   # explained side by side, at most EXPLAINS at once
            gate = asyncio.Semaphore(EXPLAINS)

            async def one(r):
                async with gate:
                    await self._violated(r)
            await asyncio.gather(*(one(r) for r in fresh))
        if recheck:
            asyncio.get_running_loop().call_later(HEAL_GRACE, self.kick.set)
        return results

    def _restored(self, r) -> None:
        self.healing_since.pop(r.name, None)
        self.metrics.expect_ok.labels(r.name).set(1)
        was = self.state.get(r.name)
        self.state[r.name] = True
        if was is False:
            log.info("expectation restored", expectation=r.name, src=r.src, to=r.to, proto=r.proto,
                     expected=r.expected, seen=r.state)
            for labels in [k for k in self._failing_labels() if k[0] == r.name]:
                self.metrics.expect_failing.remove(*labels)

    def _failing_labels(self) -> list[tuple]:
        return [tuple(s.labels[k] for k in ("expectation", "cause", "verdict", "fix"))
                for m in self.metrics.expect_failing.collect() for s in m.samples]

    async def _violated(self, r) -> None:
        self.metrics.expect_ok.labels(r.name).set(0)
        self.state[r.name] = False
        if r.cause:
            pass   # said already (a flow that cannot be resolved)
        elif r.expected == "blocked":
            chk.why(self.spec(), self.desired(), r, "")
        else:
            # the static checks first, in a thread (cheap: the lab's drift on the flow's path); the
            # full explain, with its eBPF trace of the flow, only when they find nothing
            rep = None
            try:
                flow = chk.flow_of(self.spec(), self.desired(), next(e for e in self.spec().expect if e.name == r.name))
                rep = await asyncio.to_thread(chk.static_cause, self.spec(), self.desired(), flow, r.state,
                                              "bridgelab up")
            except Exception as e:  # the full explain below says more
                log.debug("static explain failed", expectation=r.name, error=str(e))
            if rep is None:
                rep = await self._explain(r)
            r.cause, r.verdict, r.fix = rep.get("cause") or "", rep.get("verdict") or "", rep.get("fix") or ""
        log.warning("expectation violated", expectation=r.name, src=r.src, to=r.to, proto=r.proto,
                    expected=r.expected, seen=r.state, cause=r.cause, verdict=r.verdict, fix=r.fix)
        self.metrics.expect_failing.labels(r.name, r.cause or "unknown", r.verdict[:200], (r.fix or "")[:200]).set(1)

    async def _explain(self, r) -> dict:
        argv = [*self.explain_argv(), r.src, r.to, "--proto", r.proto, "--json"]
        try:
            p = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(p.communicate(), 90)
            return json.loads(out) if out else {"cause": "explain_failed", "verdict": err.decode()[-300:]}
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            return {"cause": "explain_failed", "verdict": f"explain could not run: {e}"}


def explain_argv(topology: str | None, host: bool) -> list[str]:
    argv = [sys.executable, "-m", "orchestrator", "explain"]
    if topology:
        argv += ["-f", topology]
    if host:
        argv.append("--host")
    return argv
