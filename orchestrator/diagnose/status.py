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
        "networks": [{"name": n.name, "bridge": n.bridge, "subnet": str(n.subnet) if n.subnet else None,
                      "subnet6": str(n.subnet6) if n.subnet6 else None, "internal": n.internal,
                      "containers": [c.name for c in spec.containers for a in c.attachments if a.network == n.name]}
                     for n in spec.networks],
        "links": [{"a": f"{k.a.node}:{k.a.interface}", "b": f"{k.b.node}:{k.b.interface}",
                   "netem": {f"{e.node}:{e.interface}": e.netem.describe() for e in k.ends if e.netem}} for k in spec.links],
        "ports": [{"host_port": p.host_port, "protocol": p.protocol, "host_ip": str(p.host_ip) if p.host_ip else "*",
                   "to": f"{p.container}:{p.container_port}", "target": _target(spec, p)} for p in spec.ports],
        "services": svc,
        "daemon": daemon_info(d.lab),
        "drift": [a.as_json() for a in res.actions] if st is not None else [],
    }


def _target(spec: Spec, p) -> str:
    a = spec.reachable(p.container)
    addr = a.address if a and (p.host_ip is None or p.host_ip.version == 4) else (a.address6 if a else None)
    return f"[{addr}]:{p.container_port}" if addr is not None and addr.version == 6 else f"{addr}:{p.container_port}"


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
    if len(r.get("networks", [])) > 1 or r.get("links"):
        out.append("  networks:")
        for n in r["networks"]:
            nets = " ".join(x for x in (n["subnet"], n["subnet6"]) if x)
            out.append(f"      {n['name']:<12} {n['bridge']:<10} {nets}{' internal' if n['internal'] else ''}: "
                       f"{', '.join(n['containers']) or '-'}")
        for k in r.get("links", []):
            em = "; ".join(f"{e}: {d}" for e, d in k["netem"].items())
            out.append(f"      link {k['a']} -- {k['b']}" + (f"  ({em})" if em else ""))
    if r["ports"]:
        out.append("  published ports:")
        for p in r["ports"]:
            out.append(f"      {p['protocol']}/{p['host_port']} on {p['host_ip']} -> {p['to']} ({p['target']})")
    if r["services"]:
        out.append("  services:")
        for s in r["services"]:
            col = "32" if s["state"] == "running" else "31"
            pid = f" pid {s['pid']}" if s["state"] == "running" and s["pid"] else ""
            out.append(f"      {s['name']:<24} {c(col, s['state'])}{pid}")
    if r["drift"]:
        fixer = "the daemon is healing it" if dmn and dmn.get("heal", True) else f"'{up}' repairs it"
        out.append(c("33", f"  drift ({len(r['drift'])}): {fixer}"))
        for a in r["drift"]:
            out.append(f"      {a['verb']} {a['target']} in {a['ns'] or '(current netns)'} {a['detail']}")
    elif r["up"]:
        out.append(c("32", "  no drift"))
    return "\n".join(out)


def labs() -> list[dict]:
    """The labs on this machine: a state directory under the run dir, or namespaces named
    bl-<lab>-*, each with its mode, source, namespace count and daemon."""
    from ..adapters import netns
    from ..lab.naming import LAB_RE, run_dir
    names: dict[str, int] = {}
    for ns in netns.list_names("bl-"):
        lab = ns[3:].split("-", 1)[0]
        if LAB_RE.match(lab) and "-" in ns[3:]:
            names[lab] = names.get(lab, 0) + 1
    try:
        dirs = [x for x in os.listdir(run_dir()) if LAB_RE.match(x)]
    except FileNotFoundError:
        dirs = []
    out = []
    for lab in sorted(set(names) | set(dirs)):
        try:
            st = State.load(lab)
        except Exception:  # a broken state file is shown, not fatal to the listing
            st = None
        dmn = daemon_info(lab)
        out.append({"lab": lab, "mode": st.mode if st else "?", "source": st.source if st else "",
                    "namespaces": names.get(lab, 0), "services": len(st.services) if st else 0,
                    "daemon": {"pid": dmn["pid"], "metrics_port": dmn.get("metrics_port")} if dmn else None})
    return out


def render_labs(rows: list[dict], c) -> str:
    if not rows:
        return "no labs on this machine"
    from rich.console import Console
    from rich.table import Table
    t = Table(box=None, pad_edge=False, header_style="bold" if c("1", "x") != "x" else "")
    for col in ("LAB", "MODE", "NAMESPACES", "SERVICES", "DAEMON", "SOURCE"):
        t.add_column(col)
    for r in rows:
        d = r["daemon"]
        t.add_row(r["lab"], r["mode"], str(r["namespaces"]), str(r["services"]),
                  f"pid {d['pid']} :{d['metrics_port']}" if d else "-", r["source"] or "-")
    con = Console(no_color=c("1", "x") == "x", highlight=False, width=200)
    with con.capture() as cap:
        con.print(t)
    return cap.get().rstrip()
