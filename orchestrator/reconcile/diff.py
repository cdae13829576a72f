"""Desired vs observed -> the fewest actions. Pure (unit-tested without root): each kind diffs
its own resources, in the registry's order, sharing what earlier kinds decided."""

from __future__ import annotations

from ..lab.resources import Desired
from .kinds import KINDS, Action, DiffContext
from .snapshot import Observed
from .state import State


def diff(d: Desired, o: Observed, st: State) -> list[Action]:
    cx = DiffContext(d, o, st)
    for kind in KINDS:
        kind.diff(cx)
    return cx.acts
