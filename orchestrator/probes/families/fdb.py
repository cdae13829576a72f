"""fdb: tracepoint bridge:br_fdb_update, a bridge learning a source MAC or seeing it move port;
the lab's MACs are deterministic, so each event is named by the node owning the MAC."""

from ..kernel import Caps, TRACEFS, tracepoint
from .base import FamilySpec


def _needs(caps: Caps) -> str:
    return "" if tracepoint("bridge/br_fdb_update") else f"tracepoint bridge:br_fdb_update not found under {TRACEFS}"


FAMILY = FamilySpec(name="fdb", source="bridge_fdb.c", programs=(), needs=_needs, tracepoint="bridge:br_fdb_update",
                    attaches="bridge:br_fdb_update (FDB learning)")
