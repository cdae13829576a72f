"""drops: tracepoint skb:kfree_skb with the kernel's drop reason, attributed to the lab node and
hook where the nf probes saw the skb last."""

from ..kernel import Caps, TRACEFS, tracepoint
from .base import FamilySpec


def _needs(caps: Caps) -> str:
    if tracepoint("skb/kfree_skb"):
        return ""
    return (f"tracepoint skb:kfree_skb not found: tracefs not mounted at {TRACEFS} (make setup mounts it) "
            "or not in this kernel")


FAMILY = FamilySpec(name="drops", source="drops.c", programs=(), needs=_needs, tracepoint="skb:kfree_skb",
                    attaches="skb:kfree_skb with the kernel's drop reason", ring="drop_events", lost="drop_lost")
