"""VXLAN devices (issue #15): a network present on several lab hosts is one L2 segment, each
host's bridge holding a VXLAN port to the others. Head-end replication: an all-zeros FDB entry
per peer host (broadcast, ARP and unknown unicast go to each), no multicast underlay; unicast
MACs are learnt. The device is made enslaved to its bridge; its MTU is the network's (lowered
by the encapsulation unless the topology gives one), its being up is link_up's, its bridge port
is healed here: a VXLAN device that is not a port of its bridge carries nothing."""

from __future__ import annotations

from ...lab.resources import Vxlan
from .base import P_LINK, P_PORT, P_UNLINK, P_VETH, Action, DiffContext, ExplainContext, Finding, Kind
from .links import _alias, _LinkKind


class VxlanKind(_LinkKind):
    name = "vxlan"
    metric = "vxlan"
    verbs = {"create-vxlan": P_VETH, "delete-link": P_UNLINK, "set-master": P_LINK, "add-flood": P_PORT,
             "delete-flood": P_PORT}

    def wanted(self, d):
        return d.vxlans

    def mine(self, link) -> bool:
        return link.kind == "vxlan"

    async def observe(self, eng, present: set[str]) -> dict | None:
        if not eng.d.vxlans:
            return None
        out = {}
        for x in eng.d.vxlans:
            if x.ns is not None and x.ns not in present:
                continue
            info = await eng.rtnl.vxlan_info(x.ns, x.name)
            if info is None:
                continue
            info["flood"] = await eng.rtnl.flood_entries(x.ns, info["index"])
            out[(x.ns, x.name)] = info
        return out

    def diff(self, cx: DiffContext) -> None:
        seen = cx.obs.parts.get(self.name, {})
        for x in cx.d.vxlans:
            st = cx.obs.links(x.ns)
            cur = st.links.get(x.name)
            info = seen.get((x.ns, x.name))
            if cur is not None and not cx.owned(x.ns, cur.alias):
                cx.conflict(x.ns, x.name, f"a {cur.kind or 'link'} without our alias")
            if cur is not None and (cur.kind != "vxlan" or info is None or info["vni"] != x.vni
                                    or str(info["local"]) != str(x.local) or info["port"] != x.port):
                why = (f"is a {cur.kind}" if cur.kind != "vxlan" else
                       f"vni {info and info['vni']} local {info and info['local']} port {info and info['port']}")
                self.delete(cx, x.ns, x.name, f"{why}, want vni {x.vni} local {x.local} port {x.port}")
                cur = None
            if cur is None or (x.ns, x.master) in cx.recreated:
                if cur is None:
                    cx.add(self.act("create-vxlan", x.ns, x.name, f"vni {x.vni} over {x.dev}", x,
                                    caused_by=cx.cause_of(x.ns, x.name)))
                    cx.recreated.add((x.ns, x.name))
                    cx.created_up.add((x.ns, x.name))
                else:   # its bridge is made anew: the device stays, its port does not
                    cx.add(self.act("set-master", x.ns, x.name, x.master, x, caused_by=f"link {x.master}"))
                for peer in x.peers:
                    cx.add(self.act("add-flood", x.ns, x.name, str(peer), (x, str(peer)),
                                    caused_by=cx.cause_of(x.ns, x.name) or f"link {x.name}"))
                continue
            master = st.by_index(cur.master)
            if master is None or master.name != x.master:
                cx.add(self.act("set-master", x.ns, x.name, x.master, x))
            have = {str(a) for a in info.get("flood", set())}
            want = {str(p) for p in x.peers}
            for peer in sorted(want - have):
                cx.add(self.act("add-flood", x.ns, x.name, peer, (x, peer)))
            for peer in sorted(have - want):
                cx.add(self.act("delete-flood", x.ns, x.name, peer, (x, peer)))

    async def apply(self, a: Action, eng) -> None:
        if a.verb == "delete-link":
            return await self.apply_delete(a, eng)
        if a.verb == "create-vxlan":
            x: Vxlan = a.payload
            master = eng.idx(x.ns, x.master) if x.master else None
            eng.index[(x.ns, x.name)] = await eng.rtnl.create_vxlan(x.ns, x.name, _alias(x.ns, x.alias), x.vni,
                                                                    str(x.local), x.dev, x.port, master, x.mtu)
        elif a.verb == "set-master":
            x = a.payload
            await eng.rtnl.set_link(a.ns, eng.idx(a.ns, a.target), master=eng.idx(a.ns, x.master))
        else:
            x, peer = a.payload
            await eng.rtnl.flood_entry(a.ns, eng.idx(a.ns, a.target), peer, a.verb == "add-flood")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        if a.verb in ("add-flood", "delete-flood"):
            return Finding("vxlan_flood", cx.node, f"{cx.node}: {a.target} does not flood to {a.detail} as the lab "
                           "needs (the other host misses its broadcasts and ARP)" if a.verb == "add-flood" else
                           f"{cx.node}: {a.target} floods to {a.detail}, which is no lab host",
                           f"bridge {cx.nsarg(a.ns)}fdb "
                           f"{'append' if a.verb == 'add-flood' else 'del'} 00:00:00:00:00:00 dev {a.target} dst "
                           f"{a.detail}   (or: {cx.up})")
        if a.verb == "set-master":
            return Finding("vxlan_detached", cx.node, f"{cx.node}: {a.target} is not a port of {a.detail}: the "
                           "network does not reach the other hosts", f"ip {cx.nsarg(a.ns)}link set {a.target} master "
                           f"{a.detail}   (or: {cx.up})")
        return Finding("vxlan_missing", cx.node, f"{cx.node}: {a.target} ({a.detail}) is missing: the network does "
                       "not reach the other hosts", cx.up)


KIND = VxlanKind()
