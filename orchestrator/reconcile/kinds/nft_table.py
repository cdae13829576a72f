"""The lab's nftables table (lab/nft_table.py renders it), replaced whole in one transaction.
What the kernel holds is compared by fingerprint: the table's own listing with counters
stripped, recorded right after we applied it."""

from __future__ import annotations

import hashlib

from ...lab.naming import table_name
from ...lab.resources import NftTable

TABLE_FAMILIES = ("ip", "ip6", "inet")  # whichever the lab's table is in
from .base import P_NFT, Action, DiffContext, ExplainContext, Finding, Kind


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class NftTableKind(Kind):
    name = "nft"
    metric = "nft"
    verbs = {"apply-table": P_NFT}

    def wanted(self, d):
        return d.tables

    def observe(self, eng, present: set[str]) -> dict:
        from ...adapters import nft
        out = {}
        for t in eng.d.tables:
            text = nft.listing(t.ns, t.family, t.name) if t.ns is None or t.ns in present else None
            out[(t.ns, t.family, t.name)] = nft.fingerprint(text) if text is not None else None
        return out

    def diff(self, cx: DiffContext) -> None:
        have = cx.obs.part(self.name, {})
        for t in cx.d.tables:
            fp = have.get((t.ns, t.family, t.name))
            if fp is None or fp != cx.st.nft.get(text_sha(t.text)):
                cx.add(self.act("apply-table", t.ns, f"{t.family} {t.name}",
                                "missing" if fp is None else "differs from the topology", t,
                                caused_by=f"namespace {t.ns}" if t.ns in cx.new_ns else None))

    async def apply(self, a: Action[NftTable], eng) -> None:
        from ...adapters import nft
        t = a.payload
        eng.st.nft = {text_sha(t.text): nft.apply(t.ns, t.family, t.name, t.text)}

    async def teardown(self, td) -> None:
        from ...adapters import nft
        if not td.shared:
            return
        for family in TABLE_FAMILIES:
            if nft.delete(None, family, table_name(td.lab)):
                td.done.append(f"delete-table {family} {table_name(td.lab)}")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        t: NftTable = a.payload
        facts = cx.nft_facts()
        flow = cx.flow
        if not facts.get("present"):
            return Finding("nft_table_missing", cx.node, f"{cx.node}: the lab's nftables table {t.family} {t.name} "
                           "is gone (no masquerade, no published ports)", cx.up)
        if flow is not None and flow.leaves_lab and not facts.get("masquerade"):
            return Finding("masquerade_missing", cx.node,
                           f"{cx.node} does not masquerade {cx.subnet} leaving by {cx.uplink}: requests "
                           f"go out with the container's own source and the upstream has no route back to it",
                           f"{cx.in_ns(a.ns)}nft add rule {t.family} {t.name} nat_postrouting ip saddr {cx.subnet} "
                           f'oifname "{cx.uplink}" masquerade   (or: {cx.up})')
        if flow is not None and flow.src == "host" and flow.port and flow.target_node != flow.dst_node \
                and not facts.get("local_dnat"):
            return Finding("local_dnat_missing", cx.node,
                           f"{cx.node}: nothing DNATs connections the host itself opens to {flow.dst_addr}:{flow.port} "
                           f"(the output-hook part of publishing); they reach the host's own stack, where nothing "
                           f"listens, and are reset — the seed's refused curl", cx.up)
        return Finding("nft_table_changed", cx.node, f"{cx.node}: the lab's nftables table {t.family} {t.name} "
                       "differs from the topology", cx.up)


KIND = NftTableKind()
