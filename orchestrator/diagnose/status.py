"""`bridgelab status`: what the kernel holds for the lab, and how it drifts from the topology."""

from __future__ import annotations

import json
import os

from ..lab import resources as m
from ..lab.naming import lab_file
from ..lab.spec import Spec
from ..reconcile.engine import Engine
from ..reconcile.state import State


def daemon_info(lab: str) -> dict | None:
    """The running daemon of LAB, if any (its pid is checked, not trusted)."""
    try:
        with open(lab_file(lab, "daemon.json")) as f:
            info = json.load(f)
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return info


async def collect(d: m.Desired, spec: Spec) -> dict:
    eng = Engine(d, spec.source)
    try:
        res = await eng.reconcile(dry_run=True)
    finally:
        eng.close()
    obs = res.observed
    assert obs is not None
    st = State.load(d.lab)
    nodes = []
    for node, ns in d.nodes.items():
        present = ns is None or ns in obs.namespaces
        links = []
        if present:
            nst = obs.links(ns)
            own = d.devices(ns) | {"lo"}
            if ns is None:
                own.add(spec.uplink.name)
            for name, link in sorted(nst.links.items(), key=lambda kv: kv[1].index):
                if name not in own:
                    continue
                master = nst.by_index(link.master)
                links.append({
                    "name": name, "index": link.index, "kind": link.kind or "", "up": link.up,
                    "master": master.name if master else None,
                    "addresses": sorted(str(a) for dev, a in nst.addresses if dev == name),
                })
        nodes.append({"node": node, "ns": ns, "present": present, "links": links})
    svc = [{"name": s.name, "node": s.node, "state": obs.part("service", {}).get(s.name, "dead"),
            "pid": (st.services.get(s.name) or {}).get("pid") if st else None} for s in d.services]
    up = st is not None and all(n["present"] for n in nodes)
    return {
        "lab": d.lab, "mode": d.mode, "source": st.source if st else spec.source, "up": up,
        "nodes": nodes,
        "ports": [{"host_port": p.host_port, "protocol": p.protocol, "host_ip": str(p.host_ip) if p.host_ip else "*",
                   "to": f"{p.container}:{p.container_port}",
                   "target": f"{spec.container(p.container).address}:{p.container_port}"} for p in spec.ports],
        "services": svc,
        "daemon": daemon_info(d.lab),
        "drift": [a.as_json() for a in res.actions] if st is not None else [],
    }


def render(r: dict, c, up: str = "bridgelab up") -> str:
    dmn = r.get("daemon")
    out = [f"lab {r['lab']} ({r['mode']} mode): " + (c("32", "up") if r["up"] else c("31", "not up"))
           + (f", daemon pid {dmn['pid']} (metrics :{dmn['metrics_port']})" if dmn else ", no daemon")]
    for n in r["nodes"]:
        head = f"  {n['node']:<12} {n['ns'] or '(current netns)'}"
        out.append(head if n["present"] else head + c("31", "  missing"))
        for link in n["links"]:
            state = c("32", "UP") if link["up"] else c("31", "DOWN")
            master = f" master {link['master']}" if link["master"] else ""
            out.append(f"      {link['name']:<10} {state:<4}{master} {' '.join(link['addresses'])}")
    if r["ports"]:
        out.append("  published ports:")
        for p in r["ports"]:
            out.append(f"      {p['protocol']}/{p['host_port']} on {p['host_ip']} -> {p['to']} ({p['target']})")
    if r["services"]:
        out.append("  services:")
        for s in r["services"]:
            col = "32" if s["state"] == "running" else "31"
            out.append(f"      {s['name']:<24} {c(col, s['state'])} pid {s['pid']}")
    if r["drift"]:
        out.append(c("33", f"  drift ({len(r['drift'])}): '{up}' repairs it"))
        for a in r["drift"]:
            out.append(f"      {a['verb']} {a['target']} in {a['ns'] or '(current netns)'} {a['detail']}")
    elif r["up"]:
        out.append(c("32", "  no drift"))
    return "\n".join(out)
