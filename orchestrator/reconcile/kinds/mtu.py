"""MTUs of the lab's links where the topology sets one (a network's `mtu`, a link's): made with
it, and set back if someone changes it."""

from __future__ import annotations

from .base import P_LINK, Action, DiffContext, ExplainContext, Finding, Kind


def wanted_mtus(d) -> dict[tuple[str | None, str], int]:
    out = {(b.ns, b.name): b.mtu for b in d.bridges if b.mtu}
    out.update({(e.ns, e.name): e.mtu for v in d.veths for e in v.ends if e.mtu})
    return out


class MtuKind(Kind):
    name = "mtu"
    metric = "link"
    verbs = {"set-mtu": P_LINK}

    def count(self, d) -> int:
        return 0  # a link's MTU drifting is that link drifting

    def diff(self, cx: DiffContext) -> None:
        for (ns, dev), mtu in sorted(wanted_mtus(cx.d).items(), key=str):
            if (ns, dev) in cx.recreated:
                continue  # made with it
            cur = cx.obs.links(ns).links.get(dev)
            if cur is not None and cur.mtu and cur.mtu != mtu:
                cx.add(self.act("set-mtu", ns, dev, f"{cur.mtu} -> {mtu}", mtu))

    async def apply(self, a: Action[int], eng) -> None:
        await eng.rtnl.set_link(a.ns, eng.idx(a.ns, a.target), mtu=a.payload)

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding("mtu", cx.node, f"{cx.node}: {a.target} has MTU {a.detail.split(' ')[0]}, the topology says "
                       f"{a.payload}", f"ip {cx.nsarg(a.ns)}link set {a.target} mtu {a.payload}   (or: {cx.up})")


KIND = MtuKind()
