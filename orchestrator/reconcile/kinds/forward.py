"""Our accepts in someone else's forward chain whose policy is drop (Docker's `iptables -P
FORWARD DROP`): in netfilter every base chain on a hook must let a packet pass, so an accept in
our own table does not help (adapters/forward.py)."""

from __future__ import annotations

from ...lab.naming import table_name
from ...lab.resources import ForwardAccess
from .base import P_NFT, Action, DiffContext, ExplainContext, Finding, Kind


class ForwardKind(Kind):
    name = "forward"
    metric = "nft"
    verbs = {"open-forward": P_NFT}

    def count(self, d) -> int:
        return 0  # part of the lab's nftables state

    def observe(self, eng, present: set[str]) -> dict:
        from ...adapters import forward
        own = {t.name for t in eng.d.tables}
        return {f.ns: forward.observe(f.ns, eng.d.lab, own) for f in eng.d.forward
                if f.ns is None or f.ns in present}

    def diff(self, cx: DiffContext) -> None:
        from ...adapters.forward import wanted
        gates = cx.obs.part(self.name, {})
        for f in cx.d.forward:
            for g in gates.get(f.ns, []):
                if g.ours != wanted(f.bridges):
                    cx.add(self.act("open-forward", f.ns, str(g), f"policy drop; {g.ours} of {wanted(f.bridges)} "
                                    "bridgelab accepts in place", (g, f)))

    async def apply(self, a: Action, eng) -> None:
        from ...adapters import forward
        gate, access = a.payload
        fa: ForwardAccess = access
        forward.open_gate(a.ns, eng.d.lab, fa.bridges, gate)

    async def teardown(self, td) -> None:
        from ...adapters import forward
        if td.shared and forward.close_all(None, td.lab, {table_name(td.lab)}):
            td.done.append("close-forward (our accepts in foreign forward chains)")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding("forward_blocked", cx.node, f"{cx.node}: {a.target} has policy drop and the lab's accepts "
                       "are not in it: forwarded lab traffic is dropped there", cx.up)


KIND = ForwardKind()
