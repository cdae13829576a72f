"""nf: BPF_PROG_TYPE_NETFILTER programs at chosen hooks and priorities around DNAT, FORWARD and
SNAT in every lab namespace (points.py), reading the hook state through its BTF pointers."""

from ..kernel import Caps
from ..points import CONTAINER_NF, NF_POINTS
from .base import BPF_PROG_TYPE_NETFILTER, FamilySpec, Program


def _needs(caps: Caps) -> str:
    return "" if caps.netfilter_link else "this kernel has no netfilter BPF links (BPF_NETFILTER, Linux ≥ 6.4)"


FAMILY = FamilySpec(
    name="nf", source="nf_hooks.c",
    programs=tuple(Program(f"nf_p{p.id}", BPF_PROG_TYPE_NETFILTER, "BPF_NETFILTER") for p in NF_POINTS)
    + tuple(Program(f"nf_c{p.id}", BPF_PROG_TYPE_NETFILTER, "BPF_NETFILTER") for p in CONTAINER_NF),
    needs=_needs, attaches="netfilter hooks around DNAT, FORWARD and SNAT in every lab namespace",
    ring="nf_events", lost="nf_lost")
