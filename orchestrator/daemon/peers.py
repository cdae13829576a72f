"""A lab across hosts (issue #15): are the other hosts' VXLAN endpoints reachable over the
underlay? One echo to each, every few seconds, from the host's own namespace. A host whose peer
is down keeps its own half of the lab (its containers, its NAT, its published ports) working;
this says which peer is gone, as a metric and a log event on each change."""

from __future__ import annotations

import asyncio

from .. import logs
from ..diagnose.check import probe

log = logs.get("bridgelab.daemon")
EVERY = 5.0


class Peers:
    def __init__(self, desired, metrics, every: float = EVERY):
        self.desired, self.metrics, self.every = desired, metrics, every
        self.state: dict[str, bool] = {}

    def peers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for x in self.desired().vxlans:
            for p in x.peers:
                out.setdefault(str(p), []).append(x.network)
        return out

    async def run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.every)

    async def round(self) -> dict[str, bool]:
        d = self.desired()
        got = {}
        for peer, nets in self.peers().items():
            out = await asyncio.to_thread(probe.icmp, d.host_ns, peer, 1.0)
            up = out.works
            got[peer] = up
            self.metrics.peer_up.labels(peer).set(1 if up else 0)
            if self.state.get(peer) != up:
                if up:
                    log.info("vxlan peer reachable", peer=peer, networks=nets, seen=out.state)
                else:
                    log.warning("vxlan peer unreachable", peer=peer, networks=nets, seen=out.state,
                                effect="this host's half of those networks works; the other host's containers "
                                       "are out of reach")
            self.state[peer] = up
        return got
