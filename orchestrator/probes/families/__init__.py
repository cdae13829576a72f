"""The probe families, each in its own module, listed once (compile order: tc and nf share maps
with drops, so they come first)."""

from . import drops, fdb, nf, tc
from .base import FamilySpec, Program

FAMILIES: tuple[FamilySpec, ...] = (tc.FAMILY, nf.FAMILY, drops.FAMILY, fdb.FAMILY)
BY_NAME = {f.name: f for f in FAMILIES}
NAMES = tuple(f.name for f in FAMILIES)

__all__ = ["FAMILIES", "BY_NAME", "NAMES", "FamilySpec", "Program"]
