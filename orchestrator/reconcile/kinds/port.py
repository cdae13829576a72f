"""Bridge ports: each veth end enslaved to its bridge, in hairpin mode where ports are published
(br_netfilter DNATs a bridged frame and sends it back out the port it came in by)."""

from __future__ import annotations

from ...lab.resources import VethEnd
from .base import P_LINK, P_PORT, Action, DiffContext, ExplainContext, Finding, Kind


class PortKind(Kind):
    name = "port"
    metric = "bridge_port"
    verbs = {"set-master": P_LINK, "set-hairpin": P_PORT}

    def wanted(self, d):
        return [e for v in d.veths for e in v.ends if e.master]

    def diff(self, cx: DiffContext) -> None:
        for v in cx.d.veths:
            for e in v.ends:
                if not e.master:
                    continue
                if (e.ns, e.name) in cx.recreated:  # made with its master in the same request
                    if e.hairpin:
                        cx.add(self.act("set-hairpin", e.ns, e.name, "on", e, caused_by=cx.cause_of(e.ns, e.name)))
                    continue
                st = cx.obs.links(e.ns)
                cur = st.links.get(e.name)
                master = st.by_index(cur.master) if cur else None
                bridge_new = (e.ns, e.master) in cx.recreated
                cause = f"link {e.master} in {e.ns or 'the current netns'}" if bridge_new else None
                if master is None or master.name != e.master or bridge_new:
                    cx.add(self.act("set-master", e.ns, e.name, e.master, e, caused_by=cause))
                if e.hairpin and (not cur.hairpin or master is None or master.name != e.master or bridge_new):
                    cx.add(self.act("set-hairpin", e.ns, e.name, "on", e, caused_by=cause))

    async def apply(self, a: Action[VethEnd], eng) -> None:
        e = a.payload
        if a.verb == "set-master":
            await eng.rtnl.set_link(a.ns, eng.idx(a.ns, a.target), master=eng.idx(a.ns, e.master))
        else:
            await eng.rtnl.set_hairpin(a.ns, eng.idx(a.ns, a.target), True)

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        e: VethEnd = a.payload
        return Finding("port_detached", cx.node, f"{cx.node}: {a.target} is not attached to the bridge as the lab needs",
                       f"ip {cx.nsarg(a.ns)}link set {a.target} master {e.master}   (or: {cx.up})")


KIND = PortKind()
