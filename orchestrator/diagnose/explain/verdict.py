"""explain's verdict: one sentence and the fix, from the static findings and the live check.
Pure (unit-tested on recorded JSON)."""
from __future__ import annotations

from ...lab.resources import Desired
from ...probes.reasons import is_loss
from ...reconcile.kinds import Finding
from .flow import Flow
from .live import Live


def _in_ns(ns: str | None) -> str:
    return f"ip netns exec {ns} " if ns else ""


def drops(lv: Live) -> list:
    """The hops where the flow's packets were lost (a free after delivery is not a loss:
    probes/reasons.AFTER_DELIVERY)."""
    return [(h, p) for p in lv.packets for h in p["hops"] if h.get("drop_reason")
            and is_loss(h["drop_reason"]) and not p["verdict"].startswith("delivered")]


def verdict(flow: Flow, findings: list[Finding], lv: Live, d: Desired) -> dict:
    # UDP works when a reply comes back (the probe's datagram asks for one); ICMP port
    # unreachable means nothing listens, silence that the request or its reply was lost
    dropped = drops(lv)
    works = lv.result in ("replied", "connected")
    if works:  # a drop seen beside a success is a copy's (a flooded frame, a raw socket's clone)
        return {"works": True, "cause": None, "verdict": f"{flow.src} → {flow.dst} ({flow.proto}) works"
                + (f", delivered to {flow.target_node}" if flow.target_node and flow.target_node != flow.dst_node else ""),
                "fix": None}
    left = [p for p in lv.packets if p["tuple"] and p["tuple"]["src"] == flow.src_addr]
    blocking = [f for f in findings if f.blocking]
    if blocking:
        return _from_finding(blocking[0], flow, left, d)
    if dropped:
        return _from_drop(dropped[0][0], lv, d)
    return _from_result(flow, lv, left)


def _from_finding(f: Finding, flow: Flow, left: list, d: Desired) -> dict:
    sentence = f.what
    unmasq = next((h for p in left for h in p["hops"] if h["interface"] == d.uplink and h["hook"] == "tc_egress"
                   and h.get("tuple", {}).get("src") == flow.src_addr), None)
    if f.cause == "masquerade_missing" and unmasq:
        sentence += f"; seen: the request left {unmasq['interface']} with source {flow.src_addr} and no reply came back"
    return {"works": False, "cause": f.cause, "verdict": sentence, "fix": f.fix, "node": f.node}


def _from_drop(hop: dict, lv: Live, d: Desired) -> dict:
    reason, node, hook = hop["drop_reason"], hop["node"], hop["hook"].removeprefix("drop@")
    if reason == "NETFILTER_DROP" and lv.rules:
        r = lv.rules[0]
        ns = d.nodes.get(node, d.host_ns)
        if r["rule"]:
            return {"works": False, "cause": "filter_rule", "node": node, "rule": r,
                    "verdict": f"{node}: rule `{r['rule']}` (table {r['family']} {r['table']}, chain {r['chain']}, "
                               f"handle {r['handle']}) drops it at the {hook} hook",
                    "fix": f"{_in_ns(ns)}nft delete rule {r['family']} {r['table']} {r['chain']} handle {r['handle']}"
                           "   (or change the rule to let this flow through)"}
        return {"works": False, "cause": "filter_policy", "node": node, "rule": r,
                "verdict": f"{node}: chain {r['family']} {r['table']} {r['chain']} has policy drop and no rule "
                           "accepts this flow", "fix": "add an accept rule for it, or a policy accept"}
    cause = {"IP_RPFILTER": "rp_filter", "IP_INNOROUTES": "no_route", "IP_OUTNOROUTES": "no_route",
             "NEIGH_FAILED": "wrong_gateway", "NETFILTER_DROP": "filter_rule"}.get(reason, "dropped")
    return {"works": False, "cause": cause, "node": node,
            "verdict": f"dropped at {node} {hook}: the kernel says {reason} (in {hop['function']})",
            "fix": "see the drop reason; `bridgelab trace` shows the whole path"}


def _from_result(flow: Flow, lv: Live, left: list) -> dict:
    if lv.result == "refused":
        how = "a reset (RST) to the SYN" if flow.proto == "tcp" else "ICMP port unreachable"
        return {"works": False, "cause": "not_listening", "node": flow.target_node,
                "verdict": f"nothing listens on {flow.target_addr}:{flow.target_port} in {flow.target_node}: "
                           f"it answered with {how}",
                "fix": f"start the service in {flow.target_node} on port {flow.target_port} "
                       "(the lab's own: bridgelab up), or publish the port it listens on"}
    if lv.result == "unreachable":
        return {"works": False, "cause": "unreachable", "node": flow.src,
                "verdict": f"{flow.src} has no route to {flow.dst_addr} (the kernel refused to send)",
                "fix": f"ip {'-n ' + flow.src_ns + ' ' if flow.src_ns else ''}route   (add the missing route)"}
    last = None
    for p in left:
        if p["hops"]:
            last = p["hops"][-1]
    where = f"{last['node']} {last['interface']} {last['hook']}" if last else f"{flow.src} (never left)"
    return {"works": False, "cause": "no_reply", "node": last["node"] if last else flow.src,
            "verdict": f"the request was last seen at {where} and no reply came back",
            "fix": "run `bridgelab trace --node " + flow.src + "` while retrying to see the path"}
