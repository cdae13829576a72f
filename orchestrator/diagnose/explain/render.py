"""explain's report as text."""
from __future__ import annotations

MAX_HOPS = 12


def hop_line(hops: list[dict]) -> str:
    """The hops of a packet; a long path keeps its first and last hops (where it died) and says
    how many it leaves out between."""
    names = [f"{h['node']}:{h['interface'] or '-'}:{h['hook']}" for h in hops]
    if len(names) > MAX_HOPS:
        keep = MAX_HOPS // 2
        names = names[:keep] + [f"… {len(names) - 2 * keep} more …"] + names[-keep:]
    return " → ".join(names)


def render(r: dict) -> str:
    f = r["flow"]
    lines = [f"explain {f['src']} ({f['src_addr']}) → {f['dst']} ({f['proto']}"
             + (f" {f['port']}" if f["port"] else "") + ")"
             + (f", published → {f['target_node']} {f['target_addr']}:{f['target_port']}"
                if f["target_node"] and f["target_node"] != f["dst_node"] else "")]
    lines.append("static checks:")
    lines += [f"  {'✗' if x.get('blocking', True) else '~'} {x['what']}" for x in r["static"]] \
        or ["  ✓ nothing on the path differs from the topology"]
    lv = r["live"]
    if lv.get("result"):
        lines.append(f"live probe: {lv['result']}")
        for p in lv["packets"][:4]:
            lines.append(f"  {p['tuple']['src'] if p['tuple'] else '?'} → {p['tuple']['dst'] if p['tuple'] else '?'}: "
                         f"{p['verdict']}\n    {hop_line(p['hops'])}")
        for rule in lv["nft_trace_drops"]:
            lines.append(f"  nft: {rule['family']} {rule['table']} {rule['chain']}: {rule['rule'] or 'policy'} "
                         f"(handle {rule['handle']}) → {rule['verdict']}")
        if lv.get("degraded"):
            lines.append(f"  (probes degraded: {lv['degraded']})")
    lines.append(("WORKS: " if r["works"] else "BROKEN: ") + r["verdict"])
    if r.get("fix"):
        lines.append(f"fix: {r['fix']}")
    return "\n".join(lines)
