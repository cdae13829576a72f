"""`bridgelab drops`: the top drop reasons, hooks and nodes the daemon's probes saw lately, each
with a sample tuple — the first thing to run when a dashboard shows drops.

The daemon appends what its probes count (every 2 s, only when something was dropped) to
/run/bridgelab/<lab>/drops.jsonl, keeping the last day; this command reads it.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time

from ..lab.naming import lab_file

KEEP_SECONDS = 86400


def path(lab: str) -> str:
    return lab_file(lab, "drops.jsonl")


def append(lab: str, rows: list[dict]) -> None:
    p = path(lab)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if os.path.getsize(p) > 4 << 20:  # trim to the last day, rarely
        cut = time.time() - KEEP_SECONDS
        keep = [x for x in read(lab) if x["ts"] >= cut]
        tmp = p + ".tmp"
        with open(tmp, "w") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, p)


def read(lab: str) -> list[dict]:
    try:
        with open(path(lab)) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for x in lines:
        try:
            out.append(json.loads(x))
        except ValueError:
            pass  # a line torn by a crash or a full disk: skip it, keep the rest
    return out


def parse_since(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not m:
        raise ValueError(f"--since {text!r}: use a number with s, m, h or d, e.g. 30s, 10m, 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def summarize(rows: list[dict], since: float, now: float) -> dict:
    # rows written before the family label (IPv4 only then) count as IPv4
    rows = [{"family": "ipv4", **r} for r in rows if r["ts"] >= now - since]
    total = sum(r["count"] for r in rows)
    out = {"since_seconds": since, "total": total}
    for dim in ("reason", "hook", "node", "family"):
        agg: dict[str, int] = {}
        for r in rows:
            agg[r[dim]] = agg.get(r[dim], 0) + r["count"]
        out[f"by_{dim}"] = [{dim: k, "count": v} for k, v in sorted(agg.items(), key=lambda kv: -kv[1])]
    combos: dict[tuple, dict] = {}
    for r in rows:
        k = (r["node"], r["hook"], r["reason"], r["family"])
        c = combos.setdefault(k, {"node": k[0], "hook": k[1], "reason": k[2], "family": k[3], "count": 0,
                                  "sample": None, "last_seen": 0})
        c["count"] += r["count"]
        c["last_seen"] = max(c["last_seen"], r["ts"])
        c["sample"] = r.get("sample") or c["sample"]
    out["top"] = sorted(combos.values(), key=lambda c: -c["count"])[:20]
    return out


def _tuple(t: dict | None) -> str:
    if not t:
        return "(no tuple: the probes could not read the packet)"
    ep = lambda a, p: (f"[{t[a]}]:{t[p]}" if ":" in t[a] else f"{t[a]}:{t[p]}") if p in t else t[a]  # noqa: E731
    return f"{t['proto']} {ep('src', 'sport')} → {ep('dst', 'dport')}" + (f" {t['icmp']}" if "icmp" in t else "")


def run(lab: str, args) -> int:
    try:
        since = parse_since(args.since)
    except ValueError as e:
        print(f"bridgelab drops: {e}", file=sys.stderr)
        return 2
    if not os.path.exists(lab_file(lab, "daemon.json")) and not os.path.exists(path(lab)):
        print(f"bridgelab drops: no daemon has run for lab {lab}: the probes count drops inside `bridgelab run`",
              file=sys.stderr)
        return 4
    s = summarize(read(lab), since, time.time())
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    if not s["total"]:
        print(f"no drops of lab packets in the last {args.since}")
        return 0
    print(f"{s['total']} lab packets dropped in the last {args.since}")
    for dim in ("reason", "hook", "node", "family"):
        print(f"  by {dim}: " + ", ".join(f"{x[dim]} {x['count']}" for x in s[f"by_{dim}"][:6]))
    print("top:")
    for c in s["top"][:10]:
        print(f"  {c['count']:>7}  {c['node']:<11} {c['hook']:<12} {c['reason']:<22} e.g. {_tuple(c['sample'])}")
    print("next: bridgelab trace --node NODE (the path, hop by hop), bridgelab explain SRC DST (the cause)")
    return 0
