"""Routes in the lab's namespaces, stamped with the lab's route protocol (naming.ROUTE_PROTO)."""

from __future__ import annotations

from ...lab.naming import ROUTE_PROTO
from ...lab.resources import Route
from ..snapshot import RouteEntry
from .base import P_ROUTE, Action, DiffContext, ExplainContext, Finding, Kind


class RouteKind(Kind):
    name = "route"
    metric = "route"
    verbs = {"replace-route": P_ROUTE, "delete-route": P_ROUTE}

    def wanted(self, d):
        return d.routes

    def diff(self, cx: DiffContext) -> None:
        for r in cx.d.routes:
            st = cx.obs.links(r.ns)
            dev = st.links.get(r.dev)
            ok = (dev is not None and (r.ns, r.dev) not in cx.recreated
                  and any(x.dst == r.dst and x.gateway == r.gateway and x.oif == dev.index for x in st.routes))
            if not ok:
                cx.add(self.act("replace-route", r.ns, str(r.dst), f"via {r.gateway} dev {r.dev}", r,
                                caused_by=cx.cause_of(r.ns, r.dev)))
        want = {(r.ns, r.dst) for r in cx.d.routes}
        for ns, st in cx.obs.ns.items():
            if ns is None:
                continue  # the current netns may hold other labs' routes; we add none there
            for x in st.routes:
                if x.proto == ROUTE_PROTO and (ns, x.dst) not in want:
                    cx.add(self.act("delete-route", ns, str(x.dst), "no longer in the topology", x))

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
                           f"({a.describe()})", cx.up)
        want: Route = a.payload
        st = cx.obs.links(a.ns)
        have = [x for x in st.routes if x.dst == want.dst]
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
