"""Addresses on the lab's links."""

from __future__ import annotations

from ...lab.resources import Address
from .base import P_ADDR, Action, DiffContext, ExplainContext, Finding, Kind


class AddressKind(Kind):
    name = "address"
    metric = "address"
    verbs = {"add-address": P_ADDR}

    def wanted(self, d):
        return d.addresses

    def diff(self, cx: DiffContext) -> None:
        for a in cx.d.addresses:
            if (a.ns, a.dev) in cx.recreated or (a.dev, a.iface) not in cx.obs.links(a.ns).addresses:
                cx.add(self.act("add-address", a.ns, a.dev, str(a.iface), a, caused_by=cx.cause_of(a.ns, a.dev)))

    async def apply(self, a: Action[Address], eng) -> None:
        ad = a.payload
        await eng.rtnl.add_address(ad.ns, eng.idx(ad.ns, ad.dev), ad.iface)

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding("address_missing", cx.node, f"{cx.node}: address {a.detail} missing on {a.target}", cx.up)


KIND = AddressKind()
