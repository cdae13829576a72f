"""Scrape latency of the daemon's /metrics and its RSS, with the seed lab and with 200 containers
(probes attached, some traffic counted), whether scraping delays the event loop, and how long
after `ready` the probes are attached — with an empty probe cache (the daemon has a child compile
them) and with the cache that start left (nothing changed since: no compile).

    .venv/bin/python bench/scrape_latency.py [--scrapes 200] [--sizes 200 1000] [--rounds 3]
        [--before TREE]   # a checkout of earlier code (git worktree add): its daemon runs in the
                          # same rounds, interleaved, as the "before" column
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from build_teardown import topology  # noqa: E402


def scrape(port: int) -> tuple[float, str]:
    t = time.perf_counter()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return time.perf_counter() - t, body


def value(body: str, prefix: str) -> float:
    return sum(float(x.rsplit(" ", 1)[1]) for x in body.splitlines() if x.startswith(prefix))


def lag_over(body: str, le: str) -> float:
    """Loop-lag observations above LE seconds so far (histogram: total minus bucket le)."""
    total = value(body, "bridgelab_event_loop_lag_seconds_count")
    under = value(body, f'bridgelab_event_loop_lag_seconds_bucket{{le="{le}"}}')
    return total - under


def _events(path: str) -> dict:
    """The daemon's JSON log lines by event, with their time as epoch seconds in "t"."""
    from datetime import datetime
    out = {}
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and "event" in e and "timestamp" in e:
                e["t"] = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
                out.setdefault(e["event"], e)
    return out


def run(spec: dict, scrapes: int, tree: str = ROOT, cache: str | None = None) -> dict:
    lab = spec["lab"] = "s" + secrets.token_hex(3)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "lab.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f)
    log = open(os.path.join(tmp, "daemon.log"), "w")
    env = dict(os.environ, **({"BRIDGELAB_CACHE_DIR": cache} if cache else {}))
    p = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "-f", path, "--metrics-addr", "127.0.0.1:0"],
                         cwd=tree, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        info = f"/run/bridgelab/{lab}/daemon.json"
        deadline = time.monotonic() + 120
        port = None
        while time.monotonic() < deadline:
            if os.path.exists(info):
                port = json.load(open(info))["metrics_port"]
                try:
                    if value(scrape(port)[1], 'bridgelab_probe_attached{probe="tc"}') == 1:
                        break
                except OSError:
                    pass
            time.sleep(0.2)
        events = {}
        while time.monotonic() < deadline and "probes ready" not in events:   # the compiler's memory given back
            time.sleep(0.1)
            events = _events(os.path.join(tmp, "daemon.log"))
        c1 = f"bl-{lab}-{spec['containers'][0]['name']}"
        subprocess.run(["ip", "netns", "exec", c1, "ping", "-c", "3", "-i", "0.2", spec["bridge"]["gateway"]],
                       capture_output=True)
        time.sleep(1)
        # the loop's own lag with nobody scraping, then while scraping back to back, same duration
        _, body = scrape(port)
        lag0 = lag_over(body, "0.025")
        t0 = time.monotonic()
        lat = []
        for _ in range(scrapes):
            dt, body = scrape(port)
            lat.append(dt * 1000)
        took = time.monotonic() - t0
        _, body = scrape(port)
        lag_scraping = lag_over(body, "0.025") - lag0
        time.sleep(took)
        _, body2 = scrape(port)
        lag_idle = lag_over(body2, "0.025") - lag_over(body, "0.025")
        lat.sort()
        with open(f"/proc/{p.pid}/status") as f:
            rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS"))
        return {"containers": len(spec["containers"]), "series": sum(1 for x in body.splitlines() if x and x[0] != "#"),
                "bytes": len(body), "scrape_ms": {"p50": round(statistics.median(lat), 2),
                                                  "p99": round(lat[int(len(lat) * 0.99) - 1], 2),
                                                  "max": round(lat[-1], 2)},
                "rss_mb": round(rss / 1024, 1),
                "probes_ready_after_ready_seconds": round(events["probes ready"]["t"] - events["ready"]["t"], 2),
                "probes_memory": events["probes ready"].get("memory"),
                "compiled": events["probes ready"].get("compiled"),
                "seconds_scraping": round(took, 1),
                "loop_lag_over_25ms": {"while_scraping": lag_scraping, "idle_same_duration": lag_idle}}
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=180)   # 1000 containers: ~35 s to close 6000 BPF links
        finally:
            subprocess.run([sys.executable, "-m", "orchestrator", "down", "--lab", lab], cwd=tree, capture_output=True)


FIGURES = ("rss_mb", "probes_ready_after_ready_seconds")


def variants(size_spec: dict, args, caches: str) -> dict:
    """Each variant RUNS times, interleaved round by round: the before tree (if any), this
    tree with an empty cache, this tree with the cache the empty one filled."""
    out: dict = {}
    for r in range(args.rounds):
        cold = os.path.join(caches, f"{len(size_spec['containers'])}-{r}")
        plan = ([("before", args.before, None)] if args.before else []) + [("cold_cache", ROOT, cold),
                                                                           ("warm_cache", ROOT, cold)]
        for name, tree, cache in plan:
            res = run(dict(size_spec), args.scrapes, tree, cache)
            out.setdefault(name, []).append(res)
            print(json.dumps({"containers": res["containers"], name: res}), file=sys.stderr)  # kept if a later run fails
    summary = {}
    for name, runs in out.items():
        summary[name] = {k: statistics.median(x[k] for x in runs) for k in FIGURES}
        summary[name]["scrape_ms_p50"] = statistics.median(x["scrape_ms"]["p50"] for x in runs)
        summary[name]["scrape_ms_p99"] = statistics.median(x["scrape_ms"]["p99"] for x in runs)
    return {"summary": summary, "runs": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="*", default=[200], help="labs of N containers besides the seed")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every variant (medians reported)")
    ap.add_argument("--before", help="a checkout of earlier code whose daemon runs as the before column")
    args = ap.parse_args()
    with open(os.path.join(ROOT, "examples", "seed.yaml")) as f:
        seed = yaml.safe_load(f)
    caches = tempfile.mkdtemp(prefix="bridgelab-bench-cache-")
    try:
        out = {"date": time.strftime("%Y-%m-%d"), "before": args.before, "seed": variants(seed, args, caches)}
        for n in args.sizes:
            out[str(n)] = variants(topology("s" + secrets.token_hex(3), n), args, caches)
    finally:
        shutil.rmtree(caches, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
