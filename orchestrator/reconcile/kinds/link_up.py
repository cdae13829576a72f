"""Links administratively up: every link of the lab, and each namespace's loopback."""

from __future__ import annotations

import asyncio
import time

from ... import logs
from ...lab.resources import Desired
from .base import P_LINK, Action, DiffContext, ExplainContext, Finding, Kind

log = logs.get("bridgelab.reconcile")


class LinkUpKind(Kind):
    name = "up"
    metric = "link"
    verbs = {"set-up": P_LINK}

    def count(self, d) -> int:
        return 0  # counted as links (bridge, veth): a link down is that link drifting

    def diff(self, cx: DiffContext) -> None:
        for u in cx.d.up:
            key = (u.ns, u.name)
            if key in cx.created_up:
                continue
            cur = cx.obs.links(u.ns).links.get(u.name)
            if key in cx.recreated or cur is None or not cur.up:
                cx.add(self.act("set-up", u.ns, u.name, caused_by=cx.cause_of(u.ns, u.name)))

    async def apply(self, a: Action, eng) -> None:
        await eng.rtnl.set_link(a.ns, eng.idx(a.ns, a.target), up=True)

    async def after_phase(self, phase: int, acts: list[Action], eng) -> None:
        if phase == P_LINK:
            await until_transmitting(eng, acts)

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding("link_down", cx.node, f"{cx.node}: link {a.target} is down",
                       f"ip {cx.nsarg(a.ns)}link set {a.target} up   (or: {cx.up})")


def peers_to_await(d: Desired, acts: list[Action]) -> dict[str | None, set[str]]:
    """{namespace: veth ends} to see transmitting before addresses go on: the peer of every
    veth end this pass sets up. The end set up gets working queues as it opens; its peer, up
    already, gets them from linkwatch, later."""
    peer = {(e.ns, e.name): o for v in d.veths for e, o in ((v.a, v.b), (v.b, v.a))}
    out: dict[str | None, set[str]] = {}
    for a in acts:
        p = peer.get((a.ns, a.target)) if a.verb == "set-up" else None
        if p is not None:
            out.setdefault(p.ns, set()).add(p.name)
    return out


async def until_transmitting(eng, acts: list[Action], limit: float = 1.0) -> None:
    """Addresses and routes come after the links can carry traffic both ways. A veth end
    that was already up when its peer came up (the bridge port of a pair made anew, a
    container's end when its port is set up again) drops what is sent through it until the
    kernel's linkwatch work attaches its qdisc; a container given its address in that gap
    may have its first ARP answered into nothing and then wait a second to ask again (seen
    in 1 of ~100 heals of a deleted veth). Usually no wait at all: one link dump per
    namespace of such peers (all bridge ports: one). Bounded: past LIMIT the pass goes on
    and says so."""
    ends = peers_to_await(eng.d, acts)
    if not ends:
        return
    t0 = time.monotonic()
    deadline, polls = t0 + limit, 0
    while True:
        waiting = {ns: await eng.rtnl.not_yet_transmitting(ns, names) for ns, names in ends.items()}
        ends = {ns: names for ns, names in waiting.items() if names}
        if not ends:
            if polls:  # rare, and the reason a pass took longer: worth a line
                log.info("waited for links to transmit", ms=round(1000 * (time.monotonic() - t0), 2), polls=polls)
            return
        polls += 1
        if time.monotonic() > deadline:
            log.warning("links still not transmitting; going on", links={str(k): sorted(v) for k, v in ends.items()},
                        waited_s=limit)
            return
        await asyncio.sleep(0.001)


KIND = LinkUpKind()
