"""Addresses on the lab's links. On every device the lab owns, the topology's addresses are
all of its addresses: one nobody declared (a spec changed from .11 to .21, a container given
another's address) is drift, removed."""

from __future__ import annotations

import ipaddress

from ...lab.resources import Address
from .base import P_ADDR, P_PORT, Action, DiffContext, ExplainContext, Finding, Kind

# what the kernel puts on a device by itself
IMPLICIT = {("lo", ipaddress.ip_interface("127.0.0.1/8")), ("lo", ipaddress.ip_interface("::1/128"))}


def implicit(dev: str, iface) -> bool:
    return (dev, iface) in IMPLICIT or (iface.version == 6 and iface.ip.is_link_local)


class AddressKind(Kind):
    name = "address"
    metric = "address"
    # deletions a phase earlier: removing an interface's primary address takes its secondaries
    # with it (promote_secondaries is off by default), and the new address may be one of those
    verbs = {"add-address": P_ADDR, "delete-address": P_PORT}

    def wanted(self, d):
        return d.addresses

    def diff(self, cx: DiffContext) -> None:
        for a in cx.d.addresses:
            if (a.ns, a.dev) in cx.recreated or (a.dev, a.iface) not in cx.obs.links(a.ns).addresses:
                cx.add(self.act("add-address", a.ns, a.dev, str(a.iface), a, caused_by=cx.cause_of(a.ns, a.dev)))
        want = {(a.ns, a.dev, a.iface) for a in cx.d.addresses}
        for ns, st in cx.obs.ns.items():
            ours = cx.d.devices(ns)
            for dev, iface in sorted(st.addresses, key=str):
                if dev in ours and (ns, dev, iface) not in want and not implicit(dev, iface) \
                        and (ns, dev) not in cx.recreated:
                    cx.add(self.act("delete-address", ns, dev, str(iface), Address(ns, dev, iface)))

    async def apply(self, a: Action[Address], eng) -> None:
        ad = a.payload
        if a.verb == "delete-address":
            await eng.rtnl.delete_address(ad.ns, eng.idx(ad.ns, ad.dev), ad.iface)
        else:
            await eng.rtnl.add_address(ad.ns, eng.idx(ad.ns, ad.dev), ad.iface)

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        if a.verb == "delete-address":
            return Finding("address_extra", cx.node, f"{cx.node}: {a.target} has address {a.detail}, which the "
                           "topology does not give it (it may answer for or shadow another node)",
                           f"ip {cx.nsarg(a.ns)}addr del {a.detail} dev {a.target}   (or: {cx.up})")
        return Finding("address_missing", cx.node, f"{cx.node}: address {a.detail} missing on {a.target}", cx.up)


KIND = AddressKind()
