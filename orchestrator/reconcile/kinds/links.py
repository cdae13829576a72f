"""Links the lab creates: bridges (like docker0, and the sandbox's LAN switch) and veth pairs.

In a namespace the lab shares (host mode) every link we create carries the alias
``bridgelab:<lab>:<role>``; a same-named link without it is a stranger's and a conflict (exit 3),
never taken over. In the lab's own namespaces everything is ours.
"""

from __future__ import annotations

from ...lab import naming
from ...lab.resources import Bridge, Veth
from .base import P_BRIDGE, P_UNLINK, P_VETH, Action, DiffContext, ExplainContext, Finding, Kind


def _alias(ns: str | None, alias: str) -> str | None:
    """Links in a namespace we share carry our alias (the one we run in, a lab host's machine
    namespace); in the lab's own, the namespace says it."""
    return alias if ns is None or ns.startswith(naming.MACHINE_PREFIX) else None


class _LinkKind(Kind):
    metric = "link"

    async def apply_delete(self, a: Action, eng) -> None:
        idx = eng.index.pop((a.ns, a.target), None)
        if idx is not None:
            await eng.rtnl.delete_link(a.ns, idx)

    def delete(self, cx: DiffContext, ns: str | None, name: str, why: str) -> None:
        if (ns, name) not in cx.deleting:
            cx.deleting.add((ns, name))
            cx.add(self.act("delete-link", ns, name, why))

    async def teardown(self, td) -> None:
        """Host mode: the links carrying our alias in the current namespace (a veth's other end
        goes with it)."""
        if not td.shared:
            return
        prefix = naming.alias_prefix(td.lab)
        rtnl = td.netlink()
        cur = await rtnl.observe(None)
        for link in cur.links.values():
            if link.alias and link.alias.startswith(prefix) and self.mine(link):
                await rtnl.delete_link(None, link.index)
                td.done.append(f"delete-link {link.name}")

    def mine(self, link) -> bool:
        return True

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding("link_missing", cx.node, f"{cx.node}: {a.target} is missing ({a.describe()})", cx.up)


class BridgeKind(_LinkKind):
    name = "bridge"
    verbs = {"create-bridge": P_BRIDGE, "delete-link": P_UNLINK}

    def wanted(self, d):
        return d.bridges

    def mine(self, link) -> bool:
        return link.kind == "bridge"

    def diff(self, cx: DiffContext) -> None:
        for b in cx.d.bridges:
            cur = cx.obs.links(b.ns).links.get(b.name)
            if cur is not None and cur.kind != "bridge":
                if not cx.owned(b.ns, cur.alias):
                    cx.conflict(b.ns, b.name, f"kind {cur.kind}")
                self.delete(cx, b.ns, b.name, f"is a {cur.kind}, want a bridge")
                cur = None
            elif cur is not None and not cx.owned(b.ns, cur.alias):
                cx.conflict(b.ns, b.name, "a bridge without our alias")
            if cur is None:
                cx.add(self.act("create-bridge", b.ns, b.name, payload=b, caused_by=cx.cause_of(b.ns, b.name)))
                cx.recreated.add((b.ns, b.name))
                cx.created_up.add((b.ns, b.name))

    async def apply(self, a: Action[Bridge], eng) -> None:
        if a.verb == "delete-link":
            return await self.apply_delete(a, eng)
        b = a.payload
        eng.index[(b.ns, b.name)] = await eng.rtnl.create_bridge(b.ns, b.name, _alias(b.ns, b.alias), b.mac, b.mtu)


class VethKind(_LinkKind):
    name = "veth"
    verbs = {"create-veth": P_VETH, "delete-link": P_UNLINK}

    def wanted(self, d):
        return d.veths

    def count(self, d) -> int:
        return 2 * len(d.veths)

    def mine(self, link) -> bool:
        return link.kind == "veth"

    def diff(self, cx: DiffContext) -> None:
        for v in cx.d.veths:
            ends = [cx.obs.links(e.ns).links.get(e.name) if (e.ns is None or e.ns in cx.obs.namespaces) else None
                    for e in v.ends]
            a, b = ends
            if (a is not None and b is not None and a.kind == "veth" and b.kind == "veth"
                    and a.peer_index == b.index and b.peer_index == a.index):
                continue
            for e, cur in zip(v.ends, ends):
                if cur is None:
                    continue
                if not cx.owned(e.ns, cur.alias):
                    cx.conflict(e.ns, e.name, f"kind {cur.kind}")
                self.delete(cx, e.ns, e.name, "half of a broken veth pair")
            cause = cx.cause_of(v.a.ns, v.a.name) or cx.cause_of(v.b.ns, v.b.name)
            cx.add(self.act("create-veth", v.a.ns, v.a.name, f"peer {v.b.name} in {v.b.ns}", v, caused_by=cause))
            cx.recreated.update({(v.a.ns, v.a.name), (v.b.ns, v.b.name)})
            cx.created_up.add((v.a.ns, v.a.name))

    async def apply(self, a: Action[Veth], eng) -> None:
        if a.verb == "delete-link":
            return await self.apply_delete(a, eng)
        ve = a.payload
        master = eng.idx(ve.a.ns, ve.a.master) if ve.a.master else None
        ia, ib = await eng.rtnl.create_veth(ve.a.ns, ve.a.name, _alias(ve.a.ns, ve.alias), master,
                                            eng.wants_up(ve.a.ns, ve.a.name), ve.b.ns, ve.b.name,
                                            ve.a.mac, ve.b.mac, ve.a.mtu or ve.b.mtu)
        eng.index[(ve.a.ns, ve.a.name)] = ia
        eng.index[(ve.b.ns, ve.b.name)] = ib


BRIDGE = BridgeKind()
VETH = VethKind()
