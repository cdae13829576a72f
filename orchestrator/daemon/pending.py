"""The pending-pass record: what the doorbells rang for since the last pass, merged.

Pure (unit-tested without root). Rings coalesce: a burst of events becomes one pass, which
re-dumps only the namespaces whose doorbell rang (or all of them when any ring asks for it, or
when events were lost).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_CAUSES = 8


@dataclass
class Ring:
    """One doorbell ring. SCOPE says what the next pass must dump afresh: "ns" the links,
    addresses and routes of namespace NS; "none" nothing (sysctls, nftables and services are
    read on every pass anyway); "all" every namespace."""

    cause: str
    ns: str | None = None
    lost: bool = False
    scope: str = "all"


@dataclass
class Pass:
    """What one pass is for, taken from the record."""

    causes: list[str]
    first: float | None  # when the first ring of it came (heal latency is measured from here)
    only: set | None  # namespaces to dump afresh; None: all of them
    lost: bool
    rings: int


@dataclass
class Pending:
    causes: list[str] = field(default_factory=list)
    first: float | None = None
    only: set | None = field(default_factory=set)
    lost: bool = False
    rings: int = 0

    def add(self, ring: Ring, now: float) -> None:
        if ring.lost or ring.scope == "all" or self.only is None:
            self.only = None
        elif ring.scope == "ns":
            self.only.add(ring.ns)
        if self.first is None:
            self.first = now
        self.rings += 1
        if len(self.causes) < MAX_CAUSES:
            self.causes.append(f"{ring.ns or 'host'}: {ring.cause}" if ring.ns is not None or ring.cause else ring.cause)
        self.lost |= ring.lost

    def take(self) -> Pass:
        """The pass to run now; the record starts afresh."""
        p = Pass(self.causes, self.first, self.only, self.lost, self.rings)
        self.causes, self.first, self.only, self.lost, self.rings = [], None, set(), False, 0
        return p

    def forget_causes(self) -> None:
        """What rang during a pass was mostly our own repair echoing back: keep the look, drop
        those causes, which would mislabel the next drift."""
        self.causes = []
