"""The topology as a picture: Mermaid (renders on GitHub and in Grafana text panels) or DOT."""

from __future__ import annotations

from . import resources as m
from .spec import Spec


def as_dict(spec: Spec, d: m.Desired) -> dict:
    ns_node = {ns: node for node, ns in d.nodes.items()}
    edges = []
    for v in d.veths:
        edges.append({
            "a": {"node": ns_node.get(v.a.ns, "host"), "ifname": v.a.name, "master": v.a.master},
            "b": {"node": ns_node.get(v.b.ns, "host"), "ifname": v.b.name},
        })
    addrs: dict[str, list[str]] = {}
    for a in d.addresses:
        addrs.setdefault(f"{ns_node.get(a.ns, 'host')}/{a.dev}", []).append(str(a.iface))
    return {
        "lab": d.lab, "mode": d.mode,
        "nodes": [{"node": n, "ns": ns} for n, ns in d.nodes.items()],
        "bridges": [{"node": ns_node.get(b.ns, "host"), "name": b.name} for b in d.bridges],
        "links": edges, "addresses": addrs,
        "ports": [{"host_port": p.host_port, "protocol": p.protocol, "to": f"{p.container}:{p.container_port}",
                   "host_ip": str(p.host_ip) if p.host_ip else None} for p in spec.ports],
    }


def _label(g: dict, node: str, ifname: str) -> str:
    a = g["addresses"].get(f"{node}/{ifname}")
    return f"{ifname} {' '.join(a)}" if a else ifname


def mermaid(spec: Spec, d: m.Desired) -> str:
    g = as_dict(spec, d)
    out = ["flowchart LR"]
    for n in g["nodes"]:
        out.append(f'  {n["node"]}["{n["node"]}<br/><small>{n["ns"] or "current netns"}</small>"]')
    for b in g["bridges"]:
        bid = f'{b["node"]}_{b["name"]}'
        out.append(f'  {bid}{{{{"{_label(g, b["node"], b["name"])}"}}}}')
        out.append(f'  {b["node"]} --- {bid}')
    for e in g["links"]:
        a, b = e["a"], e["b"]
        left = f'{a["node"]}_{a["master"]}' if a["master"] else a["node"]
        out.append(f'  {left} -- "{a["ifname"]} ⇄ {_label(g, b["node"], b["ifname"])}" --- {b["node"]}')
    for p in g["ports"]:
        out.append(f'  %% publish {p["protocol"]}/{p["host_port"]} -> {p["to"]}')
    return "\n".join(out)


def dot(spec: Spec, d: m.Desired) -> str:
    g = as_dict(spec, d)
    out = ["graph bridgelab {", "  rankdir=LR; node [shape=box];"]
    for n in g["nodes"]:
        out.append(f'  "{n["node"]}" [label="{n["node"]}\\n{n["ns"] or "current netns"}"];')
    for b in g["bridges"]:
        bid = f'{b["node"]}/{b["name"]}'
        out.append(f'  "{bid}" [shape=hexagon,label="{_label(g, b["node"], b["name"])}"];')
        out.append(f'  "{b["node"]}" -- "{bid}";')
    for e in g["links"]:
        a, b = e["a"], e["b"]
        left = f'{a["node"]}/{a["master"]}' if a["master"] else a["node"]
        out.append(f'  "{left}" -- "{b["node"]}" [label="{a["ifname"]} = {_label(g, b["node"], b["ifname"])}"];')
    for p in g["ports"]:
        out.append(f'  // publish {p["protocol"]}/{p["host_port"]} -> {p["to"]}')
    out.append("}")
    return "\n".join(out)
