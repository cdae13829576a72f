"""What the daemon's expectation checks cost (issue #17): its CPU and the checks' own packets per
minute, for the seed's 12 expectations and for 50, against the same daemon with checks off, in
one run (interleaved rounds; ratios matter, this machine is noisy).

    .venv/bin/python bench/check_cost.py [--seconds 40] [--rounds 2] [--interval 10]
"""

import argparse
import json
import os
import secrets
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
SEED = yaml.safe_load(open(os.path.join(ROOT, "examples", "seed.yaml")))
TICK = os.sysconf("SC_CLK_TCK")


def topology(lab: str, n: int | None) -> dict:
    t = json.loads(json.dumps(SEED))
    t["lab"] = lab
    if n is not None:   # N expectations: the seed's, again and again under names of their own
        base = SEED["expect"]
        t["expect"] = [{**base[i % len(base)], "name": f"e{i}"} for i in range(n)]
    return t


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK   # utime + stime


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(x.rsplit(" ", 1)[1]) for x in body.splitlines() if x.startswith(name))


def measure(lab: str, path: str, interval: float, seconds: float) -> dict:
    cli = [sys.executable, "-m", "orchestrator"]
    subprocess.run([*cli, "up", "-f", path], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    p = subprocess.Popen([*cli, "run", "-f", path, "--no-probes", "--metrics-addr", "127.0.0.1:0",
                          "--check-interval", str(interval)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         cwd=ROOT)
    try:
        info = f"/run/bridgelab/{lab}/daemon.json"
        deadline = time.monotonic() + 30
        while not os.path.exists(info) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2 * max(interval, 1))   # past the start and the first round
        port = json.load(open(info))["metrics_port"]
        c0, k0, t0 = cpu_seconds(p.pid), metric(port, "bridgelab_expectation_probe_packets_total"), time.monotonic()
        time.sleep(seconds)
        c1, k1, t1 = cpu_seconds(p.pid), metric(port, "bridgelab_expectation_probe_packets_total"), time.monotonic()
        return {"cpu_seconds_per_minute": (c1 - c0) / (t1 - t0) * 60, "packets_per_minute": (k1 - k0) / (t1 - t0) * 60}
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--interval", type=float, default=10)
    args = ap.parse_args()
    lab = "k" + secrets.token_hex(3)
    configs = {"checks_off": (None, 0), "seed_12": (None, args.interval), "expect_50": (50, args.interval)}
    rows: dict[str, list[dict]] = {k: [] for k in configs}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for _ in range(args.rounds):
                for name, (n, interval) in configs.items():
                    path = os.path.join(tmp, f"{name}.yaml")
                    with open(path, "w") as f:
                        yaml.safe_dump(topology(lab, n), f)
                    rows[name].append(measure(lab, path, interval, args.seconds))
        finally:
            subprocess.run([sys.executable, "-m", "orchestrator", "down", "--lab", lab], cwd=ROOT,
                           stdout=subprocess.DEVNULL)
    med = {k: {m: round(statistics.median(r[m] for r in v), 3) for m in ("cpu_seconds_per_minute", "packets_per_minute")}
           for k, v in rows.items()}
    base = med["checks_off"]["cpu_seconds_per_minute"]
    print(json.dumps({
        "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release},
        "seconds": args.seconds, "rounds": args.rounds, "interval": args.interval, "median": med,
        "added_cpu_seconds_per_minute": {k: round(v["cpu_seconds_per_minute"] - base, 3) for k, v in med.items()
                                         if k != "checks_off"},
        "added_cpu_share_of_one_core": {k: round((v["cpu_seconds_per_minute"] - base) / 60, 5) for k, v in med.items()
                                        if k != "checks_off"},
    }, indent=1))


if __name__ == "__main__":
    main()
