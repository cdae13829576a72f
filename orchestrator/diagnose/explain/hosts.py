"""explain across hosts (issue #15): a flow from a container on one lab host to one on another.
The local half is the source host's own explain (its part: the container, its bridge, its VXLAN
port and flood entry to the peer); then the underlay (does the peer's VXLAN endpoint answer,
from the source host's namespace; does the encapsulated packet fit the underlay's MTU); then the
far side (what of the destination host's part differs from the topology on that network). The
verdict names the side that breaks."""

from __future__ import annotations

import json
import subprocess
import sys

from ...lab.naming import machine_ns
from ...lab.spec import Spec
from ...lab.spec import hosts as hostmod
from ...lab.spec.expect import split_target


def _cli(file: str | None, *args: str, ns: str | None = None) -> dict:
    from ...adapters import netns
    argv = [sys.executable, "-m", "orchestrator", *args] + (["-f", file] if file else [])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {"error": (r.stderr or r.stdout).strip()[-400:]}


def where(spec: Spec, node: str) -> str | None:
    return next((c.host for c in spec.containers if c.name == node), None)


def explain(spec: Spec, file: str | None, src: str, dst: str, proto: str | None) -> dict:
    from ..check import probe
    src_host = where(spec, src) or (src if src in {h.name for h in spec.hosts} else None)
    node, port = split_target(dst)
    dst_host = where(spec, node)
    if src_host is None:
        return {"works": False, "cause": "bad_flow", "verdict": f"{src} runs on no lab host", "fix": "use a container or a host name"}
    target = hostmod._seen_from(spec, src_host, dst)
    local = _cli(file, "explain", "--as", src_host, "host" if src == src_host else src, target, "--json",
                 *(["--proto", proto] if proto else []))
    out = {"flow": {"src": src, "src_host": src_host, "dst": dst, "dst_host": dst_host, "target": target},
           "local": local}
    if local.get("works") or dst_host is None or dst_host == src_host:
        return {**out, "works": bool(local.get("works")), "cause": local.get("cause"),
                "verdict": local.get("verdict") or local.get("error", ""), "fix": local.get("fix")}
    if local.get("cause") and local.get("cause") not in ("no_reply", "unexplained", None):
        return {**out, "works": False, "side": src_host, "cause": local["cause"],
                "verdict": f"on {src_host} (the source's host): {local['verdict']}", "fix": local.get("fix")}
    peer = next(h for h in spec.hosts if h.name == dst_host)
    under = probe.icmp(machine_ns(spec.lab, src_host), str(peer.address.ip))
    out["underlay"] = {"peer": str(peer.address.ip), "seen": under.state}
    if not under.works:
        return {**out, "works": False, "side": "underlay", "cause": "vxlan_peer_unreachable",
                "verdict": f"{dst_host}'s VXLAN endpoint {peer.address.ip} does not answer from {src_host} "
                           f"({under.state}): the underlay between the hosts is broken",
                "fix": f"check {dst_host}'s uplink and the LAN between {src_host} and {dst_host}"}
    far = _cli(file, "up", "--as", dst_host, "--dry-run", "--json")
    acts = [a for a in far.get("actions", []) if a.get("verb") != "start-service" or node in a.get("target", "")]
    out["far_side"] = acts
    if acts:
        a = acts[0]
        what = f"{a['verb']} {a['target']}" + (f": {a['detail']}" if a.get("detail") else "")
        return {**out, "works": False, "side": dst_host, "cause": "far_side_drift",
                "verdict": f"on {dst_host} (the destination's host) the lab differs from the topology: {what}"
                           + (f" (and {len(acts) - 1} more)" if len(acts) > 1 else ""),
                "fix": f"bridgelab up --as {dst_host}" + (f" -f {file}" if file else "") + f" (on {dst_host})"}
    return {**out, "works": False, "side": "unknown", "cause": local.get("cause") or "no_reply",
            "verdict": (local.get("verdict") or "no reply") + f"; {src_host}, the underlay and {dst_host} show no drift",
            "fix": f"bridgelab trace --as {src_host} --as {dst_host} --node {src}"}
