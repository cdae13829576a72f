"""Soak: a long-lived lab under continuous traffic with a fault every few seconds. Samples the
daemon's RSS, open fds, sockets and asyncio tasks; prints the curve and the growth after
warm-up as JSON. Not part of CI (it runs for --minutes).

    .venv/bin/python bench/soak.py --minutes 30 --fault-every 3
"""

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def sample(pid: int, port: int) -> dict:
    status = open(f"/proc/{pid}/status").read()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    fds = os.listdir(f"/proc/{pid}/fd")
    socks = 0
    for fd in fds:
        try:
            socks += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # closed while we looked
            pass
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in body.splitlines()
         if line and not line.startswith("#")}
    applied = sum(v for k, v in m.items() if k.startswith("bridgelab_heal_actions_total") and "applied" in k)
    return {"rss_kb": rss, "fds": len(fds), "sockets": socks, "tasks": m.get("bridgelab_daemon_tasks", 0),
            "netlink_sockets": m.get("bridgelab_daemon_netlink_sockets", 0), "heal_actions": applied}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--fault-every", type=float, default=3)
    ap.add_argument("--sample-every", type=float, default=30)
    args = ap.parse_args()
    lab = "s" + secrets.token_hex(3)
    seed = yaml.safe_load(open(os.path.join(ROOT, "examples/seed.yaml")))
    seed["lab"] = lab
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    yaml.safe_dump(seed, f)
    f.close()
    ns = lambda node: f"bl-{lab}-{node}"  # noqa: E731
    faults = [
        lambda: sh("ip", "-n", ns("host"), "link", "del", "veth1"),
        lambda: sh("ip", "-n", ns("container1"), "link", "del", "eth1"),
        lambda: sh("ip", "-n", ns("host"), "link", "set", "veth2", "down"),
        lambda: sh("ip", "-n", ns("container2"), "addr", "flush", "dev", "eth2"),
        lambda: sh("ip", "-n", ns("container1"), "route", "del", "default"),
        lambda: sh("ip", "-n", ns("host"), "link", "del", "br0"),
        lambda: sh("ip", "netns", "del", ns("container1")),
        lambda: sh("ip", "netns", "exec", ns("host"), "nft", "delete", "table", "ip", f"bridgelab_{lab}"),
        lambda: sh("ip", "netns", "exec", ns("host"), "sysctl", "-qw", "net.ipv4.ip_forward=0"),
    ]
    log = open(f"/tmp/bridgelab-soak-{lab}.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "-f", f.name, "--metrics-addr",
                               "127.0.0.1:0", "--flap-heals", "100000"], stdout=log, stderr=subprocess.STDOUT,
                              cwd=ROOT, env={**os.environ, "BRIDGELAB_LOG_LEVEL": "warning"})
    samples, pings = [], None
    rng = random.Random(1)
    try:
        info = f"/run/bridgelab/{lab}/daemon.json"
        while not os.path.exists(info):
            time.sleep(0.1)
        port = json.load(open(info))["metrics_port"]
        pings = subprocess.Popen(["ip", "netns", "exec", ns("container2"), "ping", "-q", "-i", "0.2",
                                  "203.0.113.10"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        t0 = time.monotonic()
        next_sample = t0
        faults_done = 0
        while time.monotonic() - t0 < args.minutes * 60:
            if time.monotonic() >= next_sample:
                s = sample(daemon.pid, port)
                s["t_s"] = round(time.monotonic() - t0)
                s["faults"] = faults_done
                samples.append(s)
                print(json.dumps(s), file=sys.stderr)
                next_sample += args.sample_every
            rng.choice(faults)()
            faults_done += 1
            sh("ip", "netns", "exec", ns("client"), "curl", "-s", "-m", "2", "-o", "/dev/null",
               "http://192.168.0.10:8888/")
            time.sleep(args.fault_every)
    finally:
        if pings is not None:
            pings.send_signal(signal.SIGINT)
            ping_summary = pings.communicate(timeout=5)[0].strip().splitlines()[-2:]
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
        sh(sys.executable, "-m", "orchestrator", "down", "--lab", lab)
        os.unlink(f.name)
    warm = samples[max(1, len(samples) // 5)]
    last = samples[-1]
    growth = {k: round(100 * (last[k] - warm[k]) / warm[k], 1) if warm[k] else 0.0
              for k in ("rss_kb", "fds", "sockets", "tasks", "netlink_sockets")}
    print(json.dumps({"minutes": args.minutes, "faults": last["faults"], "growth_after_warmup_percent": growth,
                      "ping": ping_summary if pings else None, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
