"""The topology as a picture: Mermaid (renders on GitHub and in Grafana text panels), DOT (for
Graphviz: `--format svg` runs it), or one self-contained HTML page (the SVG inline, the nodes'
and links' addresses, state and impairments in tables; no script, no network). Pure: the
caller runs Graphviz and adds the live state."""

from __future__ import annotations

import html
import re

from . import resources as m
from .spec import Spec

NL = "\\n"  # a line break inside a Graphviz label


def as_dict(spec: Spec, d: m.Desired) -> dict:
    ns_node = d.ns_nodes()
    addrs: dict[str, list[str]] = {}
    for a in d.addresses:
        addrs.setdefault(f"{ns_node.get(a.ns, 'host')}/{a.dev}", []).append(str(a.iface))
    imp = {(i.ns, i.dev): i for i in d.impairments}
    edges = []
    for v in d.veths:
        e = {"a": {"node": ns_node.get(v.a.ns, "host"), "ifname": v.a.name, "master": v.a.master},
             "b": {"node": ns_node.get(v.b.ns, "host"), "ifname": v.b.name},
             "network": d.networks.get((v.a.ns, v.a.name), ""),
             "netem": {i.name: i.netem.describe() for i in (imp.get((v.a.ns, v.a.name)), imp.get((v.b.ns, v.b.name)))
                       if i is not None}}
        edges.append(e)
    return {
        "lab": d.lab, "mode": d.mode,
        "nodes": [{"node": n, "ns": ns} for n, ns in d.nodes.items()],
        "networks": [{"name": n.name, "bridge": n.bridge, "subnet": str(n.subnet) if n.subnet else None,
                      "subnet6": str(n.subnet6) if n.subnet6 else None, "internal": n.internal,
                      "containers": [c.name for c in spec.containers if any(a.network == n.name for a in c.attachments)]}
                     for n in spec.networks],
        "routers": [c.name for c in spec.containers if c.forwarding],
        "bridges": [{"node": ns_node.get(b.ns, "host"), "name": b.name, "network": b.network} for b in d.bridges],
        "links": edges, "addresses": addrs,
        # a lab across hosts: each network's bridges on the hosts, joined over VXLAN
        "vxlans": [{"node": ns_node.get(x.ns, "host"), "name": x.name, "vni": x.vni, "master": x.master,
                    "local": str(x.local)} for x in d.vxlans],
        "ports": [{"host_port": p.host_port, "protocol": p.protocol, "to": f"{p.container}:{p.container_port}",
                   "host_ip": str(p.host_ip) if p.host_ip else None} for p in spec.ports],
    }


def impairments(netem: dict[str, str]) -> str:
    """'delay 20ms' for both directions alike, else each direction's."""
    if len(netem) == 2 and len(set(netem.values())) == 1:
        return "both ways: " + next(iter(netem.values()))
    return "; ".join(f"{k}: {v}" for k, v in netem.items())


def _label(g: dict, node: str, ifname: str) -> str:
    a = g["addresses"].get(f"{node}/{ifname}")
    return f"{ifname} {' '.join(a)}" if a else ifname


def _mid(name: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def mermaid(spec: Spec, d: m.Desired) -> str:
    g = as_dict(spec, d)
    out = ["flowchart LR"]
    for n in g["nodes"]:
        text = f'"{n["node"]}<br/><small>{n["ns"] or "current netns"}</small>"'
        out.append(f'  {_mid(n["node"])}' + (f"([{text}])" if n["node"] in g["routers"] else f"[{text}]"))
    for net in g["networks"]:
        out.append(f'  subgraph {_mid("net_" + net["name"])}["network {net["name"]}'
                   f'{" (internal)" if net["internal"] else ""}"]')
        for br in [b for b in g["bridges"] if b["name"] == net["bridge"]]:   # one per lab host across hosts
            out.append(f'    {_mid(br["node"] + "_" + br["name"])}{{{{"{_label(g, br["node"], br["name"])}"}}}}')
        out.append("  end")
    for b in g["bridges"]:
        out.append(f'  {_mid(b["node"])} --- {_mid(b["node"] + "_" + b["name"])}')
    for e in g["links"]:
        a, b = e["a"], e["b"]
        left = _mid(f'{a["node"]}_{a["master"]}') if a["master"] else _mid(a["node"])
        em = f' ({impairments(e["netem"])})' if e["netem"] else ""
        out.append(f'  {left} -- "{a["ifname"]} ⇄ {_label(g, b["node"], b["ifname"])}{em}" --- {_mid(b["node"])}')
    for a, b in _vxlan_pairs(g):
        out.append(f'  {_mid(a["node"] + "_" + a["master"])} -. "VXLAN vni {a["vni"]}" .- {_mid(b["node"] + "_" + b["master"])}')
    for p in g["ports"]:
        out.append(f'  %% publish {p["protocol"]}/{p["host_port"]} -> {p["to"]}')
    return "\n".join(out)


def _vxlan_pairs(g: dict) -> list[tuple[dict, dict]]:
    out = []
    xs = g.get("vxlans", [])
    for i, a in enumerate(xs):
        for b in xs[i + 1:]:
            if a["vni"] == b["vni"]:
                out.append((a, b))
    return out


def dot(spec: Spec, d: m.Desired, state: dict | None = None) -> str:
    """STATE (optional): node -> "up" | "missing", from `status`."""
    g = as_dict(spec, d)
    q = lambda s: '"' + str(s).replace('"', '\\"') + '"'  # noqa: E731
    out = ["graph bridgelab {", '  rankdir=LR; fontname="sans-serif"; node [shape=box, fontname="sans-serif"]; '
           'edge [fontname="sans-serif", fontsize=10];', f'  label={q("lab " + g["lab"])}; labelloc=t;']
    for n in g["nodes"]:
        color = {"missing": ', color=red, fontcolor=red'}.get((state or {}).get(n["node"], ""), "")
        shape = ", shape=ellipse" if n["node"] in g["routers"] else ""
        out.append(f'  {q(n["node"])} [label={q(n["node"] + NL + (n["ns"] or "current netns"))}{shape}{color}];')
    for net in g["networks"]:
        brs = [b for b in g["bridges"] if b["name"] == net["bridge"]]   # one per lab host across hosts
        sub = " ".join(x for x in (net["subnet"], net["subnet6"]) if x)
        inner = " ".join(f'{q(br["node"] + "/" + br["name"])} [shape=hexagon, label={q(br["node"] + ": " + _label(g, br["node"], br["name"]) if len(brs) > 1 else _label(g, br["node"], br["name"]))}];'
                         for br in brs)
        out.append(f'  subgraph {q("cluster_" + net["name"])} {{ label={q("network " + net["name"] + (" (internal)" if net["internal"] else "") + NL + sub)}; '
                   f'style=rounded; {inner} }}')
    for b in g["bridges"]:
        if not b["network"]:
            out.append(f'  {q(b["node"] + "/" + b["name"])} [shape=hexagon, label={q(_label(g, b["node"], b["name"]))}];')
        out.append(f'  {q(b["node"])} -- {q(b["node"] + "/" + b["name"])} [style=dashed];')
    for e in g["links"]:
        a, b = e["a"], e["b"]
        left = f'{a["node"]}/{a["master"]}' if a["master"] else a["node"]
        em = (NL + impairments(e["netem"])) if e["netem"] else ""
        style = ", color=darkorange, penwidth=2" if e["netem"] else ""
        ends = (a["ifname"] if a["master"] else _label(g, a["node"], a["ifname"])) + " = " + _label(g, b["node"], b["ifname"])
        out.append(f'  {q(left)} -- {q(b["node"])} [label={q(ends + em)}{style}];')
    for a, b in _vxlan_pairs(g):
        out.append(f'  {q(a["node"] + "/" + a["master"])} -- {q(b["node"] + "/" + b["master"])} '
                   f'[label={q("VXLAN vni " + str(a["vni"]) + NL + a["local"] + " ⇄ " + b["local"])}, style=dotted, color=blue];')
    for p in g["ports"]:
        out.append(f'  // publish {p["protocol"]}/{p["host_port"]} -> {p["to"]}')
    out.append("}")
    return "\n".join(out)


def page(spec: Spec, d: m.Desired, svg: str, state: dict | None = None) -> str:
    """One self-contained HTML page: the picture (inline SVG) and what it shows, in tables."""
    g = as_dict(spec, d)
    e = html.escape
    state = state or {}
    # inline SVG in HTML5 needs no namespace declarations (the parser puts <svg> in the SVG
    # namespace and knows xlink: attributes); without them the page holds no URL at all
    svg = re.sub(r'\s+xmlns(?::xlink)?="[^"]*"', "", svg)
    rows = "".join(
        f"<tr><td>{e(n['node'])}</td><td>{e(n['ns'] or 'current netns')}</td>"
        f"<td class='{e(state.get(n['node'], 'unknown'))}'>{e(state.get(n['node'], 'unknown'))}</td>"
        f"<td>{e(', '.join(f'{k.split(chr(47))[1]} {x}' for k, v in g['addresses'].items() if k.split(chr(47))[0] == n['node'] for x in v))}</td></tr>"
        for n in g["nodes"])
    links = "".join(
        f"<tr><td>{e(x['a']['node'])}:{e(x['a']['ifname'])}</td><td>{e(x['b']['node'])}:{e(x['b']['ifname'])}</td>"
        f"<td>{e(x['network'] or ('bridge ' + x['a']['master'] if x['a']['master'] else 'point to point'))}</td>"
        f"<td>{e('; '.join(f'{k}: {v}' for k, v in x['netem'].items()) or '-')}</td></tr>" for x in g["links"])
    nets = "".join(
        f"<tr><td>{e(n['name'])}</td><td>{e(n['bridge'])}</td><td>{e(' '.join(x for x in (n['subnet'], n['subnet6']) if x))}</td>"
        f"<td>{'internal' if n['internal'] else 'NAT out of the uplink'}</td><td>{e(', '.join(n['containers']))}</td></tr>"
        for n in g["networks"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bridgelab lab {e(g['lab'])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; font-size: 0.9em; }}
th {{ background: #f0f0f0; }}
.up {{ color: #080; }} .missing {{ color: #c00; font-weight: bold; }} .unknown {{ color: #888; }}
svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>lab {e(g['lab'])} <small>({e(g['mode'])} mode)</small></h1>
<div id="picture">{svg}</div>
<h2>Nodes</h2><table id="nodes"><tr><th>node</th><th>namespace</th><th>state</th><th>addresses</th></tr>{rows}</table>
<h2>Networks</h2><table id="networks"><tr><th>network</th><th>bridge</th><th>subnets</th><th>way out</th><th>containers</th></tr>{nets}</table>
<h2>Links</h2><table id="links"><tr><th>end</th><th>end</th><th>on</th><th>impairments</th></tr>{links}</table>
<p>made by <code>bridgelab graph --format html</code></p>
</body></html>
"""
