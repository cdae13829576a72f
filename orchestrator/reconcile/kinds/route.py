"""Routes in the lab's namespaces, stamped with the lab's route protocol (naming.ROUTE_PROTO).

In a namespace the lab owns outright the topology's routes are all of its routes: a foreign
one (a 128.0.0.0/1 hijacking a container's traffic, a blackhole, a second default route with
another metric, a route in another table) is drift, removed; routes the kernel derives from
addresses follow the addresses. In a namespace the lab shares (host mode) only routes through
the lab's own devices are its business."""

from __future__ import annotations

from ...lab.naming import ROUTE_PROTO
from ...lab.resources import Route
from ..snapshot import RTPROT_KERNEL, RouteEntry
from .base import P_ROUTE, Action, DiffContext, ExplainContext, Finding, Kind

RT_TABLE_MAIN = 254


def metric(dst) -> int:
    """The metric the kernel gives a route added without one: 0 for IPv4, 1024 for IPv6."""
    return 0 if dst.version == 4 else 1024


def _is(x: RouteEntry, r: Route, oif: int | None) -> bool:
    return (x.dst == r.dst and x.gateway == r.gateway and x.oif == oif and x.table == RT_TABLE_MAIN
            and x.type == 1 and x.priority == metric(r.dst))


def _replaced_by(x: RouteEntry, r: Route) -> bool:
    """The entry `replace-route R` overwrites in place (same destination, table and metric)."""
    return x.dst == r.dst and x.table == RT_TABLE_MAIN and x.priority == metric(r.dst)


class RouteKind(Kind):
    name = "route"
    metric = "route"
    verbs = {"replace-route": P_ROUTE, "delete-route": P_ROUTE}

    def wanted(self, d):
        return d.routes

    def diff(self, cx: DiffContext) -> None:
        replacing = []
        for r in cx.d.routes:
            st = cx.obs.links(r.ns)
            dev = st.links.get(r.dev)
            ok = dev is not None and (r.ns, r.dev) not in cx.recreated \
                and any(_is(x, r, dev.index) for x in st.routes)
            if not ok:
                replacing.append(r)
                cx.add(self.act("replace-route", r.ns, str(r.dst), f"via {r.gateway} dev {r.dev}", r,
                                caused_by=cx.cause_of(r.ns, r.dev)))
        for ns, st in cx.obs.ns.items():
            self._foreign(cx, ns, st, replacing)

    def _foreign(self, cx: DiffContext, ns, st, replacing: list[Route]) -> None:
        owned = cx.owned_ns(ns)
        ours = {st.links[n].index for n in cx.d.devices(ns) if n in st.links}
        wanted = [(r, st.links[r.dev].index if r.dev in st.links else None) for r in cx.d.routes if r.ns == ns]
        for x in st.routes:
            # in a namespace the lab shares, only routes through its own devices are its to judge:
            # the route protocol is every lab's, and another lab's routes there are that lab's
            if x.proto == RTPROT_KERNEL or (not owned and x.oif not in ours):
                continue
            link = st.by_index(x.oif)
            dev = link.name if link is not None else None
            if any(_is(x, r, oif) for r, oif in wanted):
                continue
            if any(_replaced_by(x, r) for r in replacing if r.ns == ns):
                continue  # replace-route overwrites it
            why = "no longer in the topology" if x.proto == ROUTE_PROTO else "not in the topology"
            cx.add(self.act("delete-route", ns, str(x.dst), f"{x.describe(dev)}: {why}", x))

    async def apply(self, a: Action, eng) -> None:
        if a.verb == "delete-route":
            x: RouteEntry = a.payload
            await eng.rtnl.delete_route(a.ns, x)
            return
        r: Route = a.payload
        await eng.rtnl.replace_route(r.ns, r.dst, r.gateway, eng.idx(r.ns, r.dev))

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        if a.verb == "delete-route":
            return Finding("route_extra", cx.node, f"{cx.node}: a route the lab did not make is in the way "
                           f"({a.detail}): it may take this flow elsewhere",
                           f"ip {cx.nsarg(a.ns)}route del {a.detail.split(':')[0]}   (or: {cx.up})")
        want: Route = a.payload
        st = cx.obs.links(a.ns)
        have = [x for x in st.routes if x.dst == want.dst and x.table == RT_TABLE_MAIN]
        if not have:
            what = "default route" if want.dst.prefixlen == 0 else f"route to {want.dst}"
            return Finding("default_route_missing" if want.dst.prefixlen == 0 else "route_missing", cx.node,
                           f"{cx.node} has no {what}: it cannot send beyond its own subnet"
                           if want.dst.prefixlen == 0 else f"{cx.node} has no {what}",
                           f"ip {cx.nsarg(a.ns)}route add {_dst(want)} via {want.gateway} dev {want.dev}   "
                           f"(or: {cx.up})")
        gw = str(have[0].gateway) if have[0].gateway else "?"
        state = cx.neighbour(a.ns, gw)
        return Finding("wrong_gateway", cx.node, f"{cx.node}'s {_what(want)} goes via {gw}, which does not answer "
                       f"ARP (neighbour {state}); the lab's gateway there is {want.gateway}",
                       f"ip {cx.nsarg(a.ns)}route replace {_dst(want)} via {want.gateway} dev {want.dev}   "
                       f"(or: {cx.up})")


def _dst(r: Route) -> str:
    return "default" if r.dst.prefixlen == 0 else str(r.dst)


def _what(r: Route) -> str:
    return "default route" if r.dst.prefixlen == 0 else f"route to {r.dst}"


KIND = RouteKind()
