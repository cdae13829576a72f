"""Flap detection: a resource someone keeps undoing is repaired with exponential backoff.

Pure (a clock is passed in; unit-tested without root). Only repairs of a resource that was
undone again count: a port re-added because its bridge was made anew is a consequence of that
repair (Action.caused_by), not someone fighting the daemon over the port.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

FLAP_WINDOW = 30.0  # seconds
BACKOFF_MAX = 300.0


@dataclass
class Flap:
    heals: deque
    level: int = 0
    until: float = 0.0


@dataclass
class FlapTracker:
    heals: int = 5  # repairs of one resource within FLAP_WINDOW that make it "flapping"
    window: float = FLAP_WINDOW
    flaps: dict[tuple, Flap] = field(default_factory=dict)

    def allowed(self, key: tuple, now: float) -> bool:
        f = self.flaps.get(key)
        return f is None or now >= f.until

    def record(self, key: tuple, now: float) -> float | None:
        """A repair of KEY was applied; the backoff delay if it is flapping now, else None."""
        f = self.flaps.setdefault(key, Flap(deque(maxlen=self.heals)))
        f.heals.append(now)
        if len(f.heals) == self.heals and now - f.heals[0] < self.window:
            f.level += 1
            delay = min(0.5 * 2 ** f.level, BACKOFF_MAX)
            f.until = now + delay
            f.heals.clear()
            return delay
        if f.level and now - f.heals[0] > self.window:
            f.level = 0
        return None

    def flapping(self, now: float) -> int:
        return sum(1 for f in self.flaps.values() if f.until > now)
