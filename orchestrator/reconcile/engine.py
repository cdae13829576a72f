"""Observe, diff, apply by phase through the kernel adapters.

``Engine.reconcile`` is the one path that changes the kernel: `up`, adoption after a restart
and healing call it; `status` and `explain` call it as a dry run. Actions of one phase run
concurrently; each is applied by the kind that made it (kinds/).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field

from .. import logs
from ..adapters import netns
from ..adapters.rtnl import Rtnl
from ..errors import ConflictError
from ..lab.naming import ns_prefixes
from ..lab.resources import Desired
from .diff import diff
from .kinds import BY_NAME, KINDS, Action
from .kinds.base import PHASE_NAMES
from .snapshot import NsState, Observed
from . import shared
from .state import State

log = logs.get("bridgelab.reconcile")


@dataclass
class Result:
    actions: list[Action]
    errors: list[tuple[Action, str]]
    seconds: float
    observed: Observed | None = None
    held: list[Action] = field(default_factory=list)
    applied: list[Action] = field(default_factory=list)  # what was done before an error or a stop

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class Engine:
    """Holds the kernel adapters for one lab and reconciles it."""

    def __init__(self, desired: Desired, source: str = ""):
        self.d = desired
        self.source = source
        self.rtnl = Rtnl()
        loaded = State.load(desired.lab)
        # a state file from the other mode with anything in it: refuse rather than mix the two
        self._adopting_other_mode = (loaded is not None and loaded.mode != desired.mode
                                     and bool(loaded.services or loaded.nft))
        self.st = loaded or State(lab=desired.lab, mode=desired.mode, source=source)
        self.st.check_here()
        self.index: dict[tuple[str | None, str], int] = {}
        self._ns_ino: dict[str, int] = {}
        self._up = {(u.ns, u.name) for u in desired.up}
        self._last: Observed | None = None
        self.phase_seconds: dict[int, float] = {}
        self.progress = None  # an object with start(total), phase(name, done), stop(): `up` on a terminal
        self.applied: list[Action] = []  # so far in the current pass (what an interrupted `up` reports)
        self.on_phase = None  # (applied, errors) of each phase as it ends: the daemon counts repairs at once

    def close(self) -> None:
        self.rtnl.close()

    def retarget(self, desired: Desired) -> None:
        """Reconcile toward a new desired state from now on (the daemon's reload)."""
        self.d = desired
        self._up = {(u.ns, u.name) for u in desired.up}
        self._last = None

    # ------------------------------------------------------------------ what kinds use

    def idx(self, ns: str | None, name: str) -> int:
        try:
            return self.index[(ns, name)]
        except KeyError:
            raise RuntimeError(f"link {name} not found in {ns or 'the current netns'}") from None

    def wants_up(self, ns: str | None, name: str) -> bool:
        return (ns, name) in self._up

    def create_namespaces(self, names: list[str]) -> None:
        # an IPv4-only topology gets IPv4-only namespaces: no IPv6 addrconf work in them (a third
        # of `up`), as Docker does for networks without IPv6
        netns.create_many(names, ipv4_only=not self.d.ipv6)

    def namespace_made(self, name: str) -> None:
        self._ns_ino[name] = netns.inode(name)
        self.index[(name, "lo")] = 1

    # ------------------------------------------------------------------ observe

    async def observe(self, only: set | None = None) -> Observed:
        """Dump every managed namespace, or with ONLY, just those (plus any made anew since the
        last look) and reuse the previous dump for the rest: the daemon knows from its
        per-namespace doorbells which ones changed."""
        d = self.d
        present = set(netns.list_names(ns_prefixes(d.lab)))
        look = [ns for ns in d.managed_ns() if ns is None or ns in present]
        last = dict(self._last.ns) if (only is not None and self._last is not None) else {}
        fresh = []
        for ns in look:
            # a namespace we hold a socket for may have been deleted and made anew: reopen
            if ns is not None and self._ns_ino.get(ns) != netns.inode(ns):
                self.rtnl.forget(ns)
                self._ns_ino[ns] = netns.inode(ns)
                last.pop(ns, None)
            if ns not in last or ns in (only or ()):
                fresh.append(ns)
        states = await asyncio.gather(*(self.rtnl.observe(ns, v6=d.ipv6) for ns in fresh))
        by_ns = {ns: last[ns] for ns in look if ns in last}
        by_ns.update(zip(fresh, states))
        for ns in present - set(look):
            by_ns[ns] = NsState()
        parts = {}
        for k in KINDS:
            got = k.observe(self, present)
            parts[k.name] = await got if inspect.isawaitable(got) else got
        self.index = {(ns, name): link.index for ns, st in by_ns.items() for name, link in st.links.items()}
        self._last = Observed(present, by_ns, {k: v for k, v in parts.items() if v is not None})
        return self._last

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, dry_run: bool = False, allow=None, only: set | None = None) -> Result:
        """Observe, diff, apply. ALLOW (action -> bool) holds back actions, e.g. for backoff."""
        t0 = time.perf_counter()
        if self._adopting_other_mode:
            raise ConflictError(f"lab {self.d.lab} is up in {self.st.mode} mode; "
                                f"run 'bridgelab down' before bringing it up in {self.d.mode} mode")
        obs = await self.observe(only)
        acts = diff(self.d, obs, self.st)
        held: list[Action] = []
        if allow is not None:
            held = [a for a in acts if not allow(a)]
            acts = [a for a in acts if allow(a)]
        res = Result(acts, [], 0.0, obs, held)
        if not dry_run and acts:
            self._last = None  # what we change is dumped afresh next time, whatever rang
            await self._apply(acts, res)
        res.seconds = time.perf_counter() - t0
        return res

    async def _apply(self, acts: list[Action], res: Result) -> None:
        netns.preflight()  # e.g. a private mount namespace: refused before the first change
        by_phase: dict[int, list[Action]] = {}
        for a in acts:
            by_phase.setdefault(a.phase, []).append(a)
        self.st.mode = self.d.mode
        self.st.source = self.source or self.st.source
        if self.d.mode == "host":
            self.st.netns = shared.ns_identity()
        self.phase_seconds = {}
        self.applied = res.applied
        if self.progress is not None:
            self.progress.start(len(acts))
        try:
            for phase in sorted(by_phase):
                t0 = time.perf_counter()
                done, failed = len(res.applied), len(res.errors)
                await self._phase(by_phase[phase], res)
                if self.on_phase is not None:
                    self.on_phase(res.applied[done:], res.errors[failed:])
                if self.progress is not None:
                    self.progress.phase(PHASE_NAMES[phase], len(res.applied) + len(res.errors))
                if not res.errors:
                    for kind in {BY_NAME[a.kind] for a in by_phase[phase]}:
                        await kind.after_phase(phase, acts, self)
                self.phase_seconds[phase] = time.perf_counter() - t0
                if res.errors:
                    break  # later phases build on this one
        finally:
            if self.progress is not None:
                self.progress.stop()
            self.st.save()  # also when interrupted: what was started is remembered

    async def _phase(self, batch: list[Action], res: Result) -> None:
        single: list[Action] = []
        for name in dict.fromkeys(a.kind for a in batch):
            mine = [a for a in batch if a.kind == name]
            errs = await BY_NAME[name].apply_batch(mine, self)
            if errs is None:
                single += mine
            else:
                res.errors += errs
                failed = {id(a) for a, _ in errs}
                res.applied += [a for a in mine if id(a) not in failed]
        results = await asyncio.gather(*(BY_NAME[a.kind].apply(a, self) for a in single), return_exceptions=True)
        for a, r in zip(single, results):
            if isinstance(r, BaseException):
                if isinstance(r, (KeyboardInterrupt, asyncio.CancelledError)):
                    raise r
                res.errors.append((a, f"{type(r).__name__}: {r}"))
            else:
                res.applied.append(a)
