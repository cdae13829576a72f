"""tc: SCHED_CLS programs on the lab's devices (one end of each veth pair: attach.veth_counting),
ingress and egress, by tcx links (direct packet access: protocol, addresses, ports, ICMP id/seq,
TCP flags)."""

from ..kernel import Caps
from .base import BPF_PROG_TYPE_SCHED_CLS, FamilySpec, Program


def _needs(caps: Caps) -> str:
    return "" if caps.tcx else "this kernel has no tcx links (BPF_TCX_INGRESS, Linux ≥ 6.6)"


FAMILY = FamilySpec(
    name="tc", source="tc_points.c",
    programs=(Program("tc_ingress", BPF_PROG_TYPE_SCHED_CLS, None), Program("tc_egress", BPF_PROG_TYPE_SCHED_CLS, None)),
    needs=_needs, attaches="one end of each veth pair, bridges, VXLAN devices and the uplink, ingress and egress (tcx)",
    ring="tc_events", lost="tc_lost")
