"""explain's static check: the lab's own drift on the flow's path (the same dry-run reconcile
`up` uses, each drift phrased by its kind), what of the nft table matters for the flow
(through libnftables' JSON), and strict rp_filter against the route back to the source."""
from __future__ import annotations

from ...adapters import nft, sysctl
from ...lab.desired import SCENERY
from ...lab.naming import table_name
from ...lab.resources import Desired
from ...lab.spec import Spec
from ...reconcile.engine import Engine
from ...reconcile.kinds import BY_NAME, Action, ExplainContext, Finding
from .flow import Flow, on_path

LINK_VERBS = ("set-up", "create-veth", "set-master", "set-hairpin", "delete-link")


def relevant(a: Action, flow: Flow, d: Desired, host_links: set[str]) -> bool:
    """Whether a drift lies on the flow's path (pure)."""
    if a.ns == d.host_ns and a.verb in LINK_VERBS and a.target not in host_links:
        return False
    if a.verb == "start-service" and not (flow.target_node and a.target.startswith(flow.target_node + "/")):
        return False
    if a.verb == "set-sysctl" and "ip_forward" in a.target and not flow.via_host:
        return False
    if a.verb == "apply-table" and not flow.via_host and flow.proto == "icmp":
        return False
    return True


def nft_facts(rules: list[dict] | None, uplink: str) -> dict:
    """What of the lab's table a flow leaving or reaching the host depends on, read from the
    table's JSON (pure): present, masquerade out of the uplink, the output-hook DNAT jump."""
    if rules is None:
        return {"present": False}
    masq = local = False
    for item in rules:
        r = item.get("rule")
        if not r:
            continue
        exprs = r.get("expr", [])
        if r["chain"] == "nat_postrouting" and any("masquerade" in x for x in exprs) and any(
                x.get("match", {}).get("left", {}).get("meta", {}).get("key") == "oifname"
                and x["match"].get("right") == uplink for x in exprs):
            masq = True
        if r["chain"] == "nat_output" and any(x.get("jump", {}).get("target") == "publish" for x in exprs):
            local = True
    return {"present": True, "masquerade": masq, "local_dnat": local}


async def static(flow: Flow, spec: Spec, d: Desired, up: str) -> list[Finding]:
    order = on_path(flow, d)
    veth = {c.name: c.host_interface for c in spec.containers}
    host_links = {spec.bridge.name, spec.uplink.name} | {veth[n] for n in (flow.src, flow.target_node, flow.dst_node)
                                                          if n in veth}
    eng = Engine(d, "explain")
    try:
        res = await eng.reconcile(dry_run=True)
        neigh = {ns: await eng.rtnl.neighbours(ns) for ns in {a.ns for a in res.actions
                                                              if a.verb == "replace-route" and a.ns in order}}
        out = _findings(res, flow, spec, d, up, order, host_links, neigh)
        if flow.via_host and d.host_ns in order:
            out += await _rp_filter(eng, flow, spec, d)
    finally:
        eng.close()
    for f in out:
        f.order = order.get(d.nodes.get(f.node, d.host_ns), 1)
    out.sort(key=lambda f: f.order)
    return out


def _findings(res, flow, spec, d, up, order, host_links, neigh) -> list[Finding]:
    node_of = d.ns_nodes()
    facts: dict = {}

    def table_facts() -> dict:
        if not facts:
            facts.update(nft_facts(nft.table_json(d.host_ns, "ip", table_name(spec.lab)), spec.uplink.name))
        return facts
    out = []
    for a in res.actions:
        if a.ns not in order or not relevant(a, flow, d, host_links):
            continue
        cx = ExplainContext(d, res.observed, node_of.get(a.ns, "host"), up, spec.bridge.name, spec.uplink.name,
                            str(spec.bridge.subnet), flow,
                            neighbour=lambda ns, addr: neigh.get(ns, {}).get(addr, "no entry"),
                            nft_facts=table_facts)
        out.append(BY_NAME[a.kind].finding(a, cx))
    return out


async def _rp_filter(eng: Engine, flow: Flow, spec: Spec, d: Desired) -> list[Finding]:
    """Strict reverse-path filtering drops what arrives on an interface the route back does not use."""
    entering = spec.uplink.name if flow.src in SCENERY else (spec.bridge.name if flow.src != "host" else None)
    if not entering or not flow.src_addr:
        return []
    vals = []
    for k in ("all", entering):
        try:
            vals.append(int(sysctl.read(d.host_ns, f"net.ipv4.conf.{k}.rp_filter") or 0))
        except (OSError, ValueError):
            vals.append(0)
    if max(vals) != 1:
        return []
    dev, _ = await eng.rtnl.route_get(d.host_ns, flow.src_addr)
    if dev == entering:
        return []
    in_ns = f"ip netns exec {d.host_ns} " if d.host_ns else ""
    return [Finding("rp_filter", "host", f"host drops {flow.src}'s packets by strict reverse-path filtering "
                    f"(rp_filter=1): they arrive on {entering} but the route back to {flow.src_addr} leaves by "
                    f"{dev or 'nowhere'}",
                    f"{in_ns}sysctl -w net.ipv4.conf.{entering}.rp_filter=2 net.ipv4.conf.all."
                    f"rp_filter=2 (loose), or fix the route to {flow.src_addr}")]
