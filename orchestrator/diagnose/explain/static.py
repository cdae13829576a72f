"""explain's static check: what the topology itself says about the flow (paths.py: no route,
no route back, a node on the way that does not forward, networks isolated from each other, an
internal network, an impairment on a link), the lab's own drift on the flow's path (the same
dry-run reconcile `up` uses, each drift phrased by its kind), what of the nft table matters for
the flow (libnftables' JSON), and strict rp_filter against the route back to the source."""
from __future__ import annotations

import ipaddress

from ...adapters import nft, sysctl
from ...lab.naming import table_name
from ...lab.resources import Desired
from ...lab.spec import Spec
from ...reconcile.engine import Engine
from ...reconcile.kinds import BY_NAME, Action, ExplainContext, Finding
from .flow import Flow, design, on_path
from .paths import Path

LINK_VERBS = ("set-up", "create-veth", "set-master", "set-hairpin", "delete-link", "add-address", "delete-address",
              "set-impairment", "clear-impairment")


def path_devices(d: Desired, fwd: Path, back: Path) -> set[tuple[str | None, str]]:
    """The devices the flow's packets cross: each hop's in and out, and the far end of a veth
    among them (a container's eth0 and its port on the bridge)."""
    devs = {(h.ns, x) for p in (fwd, back) for h in p.hops for x in (h.dev_in, h.dev_out) if x}
    peers = {(e.ns, e.name): (o.ns, o.name) for v in d.veths for e, o in ((v.a, v.b), (v.b, v.a))}
    devs |= {peers[x] for x in list(devs) if x in peers}
    masters = {(e.ns, e.master) for v in d.veths for e in v.ends if e.master and (e.ns, e.name) in devs}
    return devs | masters


def relevant(a: Action, flow: Flow, d: Desired, devs: set) -> bool:
    """Whether a drift lies on the flow's path (pure)."""
    if a.verb in LINK_VERBS and a.ns == d.host_ns and (a.ns, a.target) not in devs:
        return False
    if a.verb == "start-service" and not (flow.target_node and a.target.startswith(flow.target_node + "/")):
        return False
    if a.verb in ("set-sysctl", "share-sysctl") and a.target.endswith(("ip_forward", "forwarding")) \
            and not flow.via_host and a.ns == d.host_ns:
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


def by_design(spec: Spec, d: Desired, flow: Flow, fwd: Path, back: Path) -> list[Finding]:
    """What the topology as written says (pure): it works by design, or why it cannot."""
    out = []
    if fwd.blocked:
        out.append(_design_finding(spec, d, flow, fwd, back=False))
    elif back.blocked and not (fwd.exits and not fwd.masqueraded):
        out.append(_design_finding(spec, d, flow, back, back=True))
    elif back.blocked:  # out of the lab without NAT: the upstream cannot answer (the seed's lesson)
        out.append(Finding("not_masqueraded", back.at, f"{flow.src_addr} is not masqueraded on the way out (the host "
                           f"masquerades the lab's networks only) and {back.at} has no route back to it",
                           f"route {flow.src}'s traffic out through a network the host masquerades, or give "
                           f"{back.at} a route back"))
    sent = {(q.ns, q.dev): q for q in d.impairments}
    got = {(q.peer_ns, q.peer_dev): q for q in d.impairments}
    seen: set[str] = set()
    for h in [*fwd.hops, *back.hops]:
        for q in (sent.get((h.ns, h.dev_out)), got.get((h.ns, h.dev_in))):
            if q is None or q.name in seen:
                continue
            seen.add(q.name)
            lossy = q.netem.loss_pct >= 100
            out.append(Finding("link_loss" if lossy else "impairment", h.node,
                               f"{q.name}: netem {q.netem.describe()} on the way", "" if not lossy else
                               "lower the loss in the topology's netem for this link", blocking=lossy))
    return out


def _design_finding(spec: Spec, d: Desired, flow: Flow, p: Path, back: bool) -> Finding:
    if p.blocked == "isolated":
        net = _network_of(spec, flow.target_addr)
        return Finding("isolated", flow.src, f"{flow.src} cannot reach {flow.target_node or flow.dst}: they share no "
                       "network and the lab isolates networks" + (f"; attach {flow.src} to {net}" if net else ""),
                       f"add {{network: {net or 'NETWORK'}, address: ...}} to {flow.src}'s networks in the topology")
    if p.blocked == "internal":
        return Finding("internal", p.at, p.detail, "attach the container to a network that is not internal too")
    if p.blocked == "not_a_router":
        return Finding("not_a_router", p.at, p.detail, f"set forwarding: true on {p.at} in the topology")
    if back:
        src_net = _source_net(spec, d, flow)
        return Finding("no_route_back", p.at, f"{p.at} has no route back to {src_net or flow.src_addr}",
                       f"add a route to {src_net or flow.src_addr} to {p.at}'s routes in the topology")
    return Finding("no_route", p.at, p.detail, f"add a route toward {flow.target_addr} to {p.at}'s routes in the topology")


def _network_of(spec: Spec, addr: str) -> str | None:
    ip = ipaddress.ip_address(addr)
    for n in spec.networks:
        for subnet in (n.subnet, n.subnet6):
            if subnet is not None and ip.version == subnet.version and ip in subnet:
                return n.name
    return None


def _source_net(spec: Spec, d: Desired, flow: Flow):
    ip = ipaddress.ip_address(flow.src_addr)
    for a in d.addresses:
        if a.ns == flow.src_ns and a.iface.ip == ip:
            return a.iface.network
    return None


async def static(flow: Flow, spec: Spec, d: Desired, up: str) -> list[Finding]:
    order = on_path(flow, d)
    fwd, back = design(spec, d, flow)
    devs = path_devices(d, fwd, back)
    if flow.dst_node is None:   # a lab across hosts: an address on a stretched network is behind its VXLAN port
        t = ipaddress.ip_address(flow.target_addr) if flow.target_addr else None
        for n in spec.networks:
            if n.peers and t is not None and n.subnet is not None and t in n.subnet:
                devs |= {(x.ns, x.name) for x in d.vxlans if x.master == n.bridge}
    for ns, _dev in devs:   # a bridged flow crosses the host's bridge and ports without being routed there
        order.setdefault(ns, 1)
    eng = Engine(d, "explain")
    try:
        res = await eng.reconcile(dry_run=True)
        neigh = {ns: await eng.rtnl.neighbours(ns) for ns in {a.ns for a in res.actions
                                                              if a.verb == "replace-route" and a.ns in order}}
        out = _findings(res, flow, spec, d, up, order, devs, neigh)
        if flow.via_host and d.host_ns in order:
            # first: it names the route back too (often a foreign route, also in the findings)
            out = await _rp_filter(eng, flow, spec, d, fwd) + out
    finally:
        eng.close()
    for f in out:
        f.order = order.get(d.nodes.get(f.node, d.host_ns), 1) if f.cause != "rp_filter" else -1
    out.sort(key=lambda f: f.order)
    return by_design(spec, d, flow, fwd, back) + out


def _findings(res, flow, spec, d, up, order, devs, neigh) -> list[Finding]:
    node_of = d.ns_nodes()
    facts: dict = {}
    bridges = " and ".join(sorted({dev for ns, dev in devs if ns == d.host_ns and dev in {b.name for b in d.bridges}})) \
        or ", ".join(n.bridge for n in spec.networks) or "its networks"
    src_net = _source_net(spec, d, flow)

    def table_facts() -> dict:
        if not facts:
            fam = d.tables[0].family
            facts.update(nft_facts(nft.table_json(d.host_ns, fam, table_name(spec.lab)), spec.uplink.name))
        return facts
    out = []
    for a in res.actions:
        if a.ns not in order or not relevant(a, flow, d, devs):
            continue
        cx = ExplainContext(d, res.observed, node_of.get(a.ns, "host"), up, bridges, spec.uplink.name,
                            str(src_net or ""), flow,
                            neighbour=lambda ns, addr: neigh.get(ns, {}).get(addr, "no entry"),
                            nft_facts=table_facts)
        out.append(BY_NAME[a.kind].finding(a, cx))
    return out


async def _rp_filter(eng: Engine, flow: Flow, spec: Spec, d: Desired, fwd: Path) -> list[Finding]:
    """Strict reverse-path filtering drops what arrives on an interface the route back does not use."""
    if flow.family != 4:
        return []  # rp_filter is IPv4's (IPv6 has its own, in the fib rules, not a sysctl)
    entering = next((h.dev_in for h in fwd.hops if h.ns == d.host_ns and h.dev_in), None)
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
