"""The table of resource kinds: each in its own module, listed here once, in diff order.

Adding a kind: a value type in lab/resources.py (and a field on Desired), where the topology
implies it in lab/desired.py, a module here subclassing base.Kind, and a line below.
"""

from __future__ import annotations

from . import (address, forward, impairment, link_up, links, mtu, namespace, nft_table, port, route, service,
               sysctl, vxlan)
from .base import Action, DiffContext, ExplainContext, Finding, Kind

KINDS: tuple[Kind, ...] = (
    namespace.KIND,
    links.BRIDGE,
    links.VETH,
    vxlan.KIND,
    port.KIND,
    link_up.KIND,
    mtu.KIND,
    address.KIND,
    route.KIND,
    impairment.KIND,
    sysctl.KIND,
    nft_table.KIND,
    forward.KIND,
    service.KIND,
)
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
# the values of the `kind` metric label, each resource kind once
METRIC_KINDS: tuple[str, ...] = tuple(sorted({k.metric for k in KINDS}))

__all__ = ["KINDS", "BY_NAME", "METRIC_KINDS", "Action", "DiffContext", "ExplainContext", "Finding", "Kind"]
