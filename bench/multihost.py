"""Labs across hosts (issue #15): build time and heal latency with 2, 4 and 8 simulated hosts
(CONTAINERS each, one network stretched over VXLAN), and cross-host TCP throughput (iperf3,
container on h1 to container on h2) with and without the daemons' probes, the same-host
throughput beside it as the baseline of the same run.

    .venv/bin/python bench/multihost.py [--hosts 2 4 8] [--containers 100] [--trials 20] [--seconds 5]
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

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from build_teardown import settle  # noqa: E402

CLI = [sys.executable, "-m", "orchestrator"]


def topology(lab: str, hosts: int, per: int) -> dict:
    hs = [{"name": f"h{i + 1}", "address": f"192.168.0.{11 + i}/24"} for i in range(hosts)]
    cs = []
    for i in range(hosts):
        for j in range(per):
            k = i * per + j
            cs.append({"name": f"c{k}", "host": f"h{i + 1}",
                       "networks": [{"network": "front", "address": f"172.20.{k // 250}.{k % 250 + 2}",
                                     "host_interface": f"v{k}"}]})
    return {"lab": lab, "hosts": hs, "uplink": {"name": "ens33", "gateway": "192.168.0.2"},
            "networks": [{"name": "front", "bridge": "brfront", "subnet": "172.20.0.0/16"}], "containers": cs}


def run(*args, **kw):
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=900, **kw)


def build(hosts: int, per: int) -> dict:
    lab = "x" + secrets.token_hex(3)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(topology(lab, hosts, per), f)
    try:
        settle()
        t0 = time.perf_counter()
        r = run("up", "-f", f.name)
        up = time.perf_counter() - t0
        assert r.returncode == 0, r.stderr
        settle()
        t0 = time.perf_counter()
        run("down", "--lab", lab)
        down = time.perf_counter() - t0
    finally:
        run("down", "--lab", lab)
        os.unlink(f.name)
    return {"up_seconds": round(up, 3), "down_seconds": round(down, 3)}


def _ns(lab, host):
    return f"blm-{lab}-{host}"


def heal(hosts: int, per: int, trials: int) -> dict:
    """Delete h1's VXLAN device; time until a container on h1 reaches one on h2 again (ping
    every 5 ms from the container), with every host's daemon running (no probes: the heal path)."""
    lab = "y" + secrets.token_hex(3)
    path = tempfile.mktemp(suffix=".yaml")
    with open(path, "w") as f:
        yaml.safe_dump(topology(lab, hosts, per), f)
    procs = []
    try:
        assert run("up", "-f", path).returncode == 0
        logs = [open(f"{path}.h{i + 1}.log", "w") for i in range(hosts)]
        for i in range(hosts):
            procs.append(subprocess.Popen([*CLI, "run", "-f", path, "--as", f"h{i + 1}", "--no-probes",
                                           "--metrics-addr", "off", "--check-interval", "0",
                                           # a bench deletes the device again and again: not an admin fighting
                                           # the daemon, no backoff
                                           "--flap-heals", "100000"], cwd=ROOT,
                                          stdout=logs[i], stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120   # every host's daemon ready (it writes daemon.json then)
        while time.monotonic() < deadline and not all(os.path.exists(f"/run/bridgelab/{lab}.h{i + 1}/daemon.json")
                                                      for i in range(hosts)):
            time.sleep(0.2)
        time.sleep(1)
        src, dst = f"bl-{lab}.h1-c0", "172.20.0." + str(per % 250 + 2)   # c{per}: the first on h2
        vx = json.loads(subprocess.run(["ip", "-n", _ns(lab, "h1"), "-j", "-d", "link", "show", "type", "vxlan"],
                                       capture_output=True, text=True).stdout)[0]["ifname"]
        took = []
        for _ in range(trials):
            subprocess.run(["ip", "netns", "exec", src, "ping", "-c1", "-W1", dst], capture_output=True)
            t0 = time.perf_counter()
            subprocess.run(["ip", "-n", _ns(lab, "h1"), "link", "del", vx], check=True)
            while True:
                r = subprocess.run(["ip", "netns", "exec", src, "ping", "-c1", "-W", "0.02", dst],
                                   capture_output=True)
                if r.returncode == 0:
                    break
                if time.perf_counter() - t0 > 10:
                    state = subprocess.run(["sh", "-c", f"ip -n {_ns(lab, 'h1')} -d link show type vxlan; "
                                            f"bridge -n {_ns(lab, 'h1')} fdb show | grep 00:00; "
                                            f"ip netns exec {src} ip neigh; tail -5 {path}.h1.log"],
                                           capture_output=True, text=True).stdout
                    raise RuntimeError(f"not healed in 10 s:\n{state}")
            took.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.3)
        q = statistics.quantiles(took, n=100) if len(took) > 1 else took * 99
        return {"trials": trials, "restored_ms": {"p50": round(statistics.median(took), 1), "p99": round(q[98], 1)}}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
        run("down", "--lab", lab)
        os.unlink(path)


def throughput(seconds: float, rounds: int) -> dict:
    """iperf3 across hosts and on one host, with and without the per-host daemons' probes."""
    lab = "z" + secrets.token_hex(3)
    t = topology(lab, 2, 2)
    path = tempfile.mktemp(suffix=".yaml")
    with open(path, "w") as f:
        yaml.safe_dump(t, f)
    out: dict = {"cross_host": {"off": [], "probes": []}, "same_host": {"off": [], "probes": []}}
    try:
        assert run("up", "-f", path).returncode == 0
        servers = [subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for ns in (f"bl-{lab}.h2-c2", f"bl-{lab}.h1-c1")]
        time.sleep(1)

        def iperf(dst):
            r = subprocess.run(["ip", "netns", "exec", f"bl-{lab}.h1-c0", "iperf3", "-c", dst, "-t", str(seconds),
                                "-J"], capture_output=True, text=True, timeout=seconds + 30)
            return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        for _ in range(rounds):
            for mode in ("off", "probes"):
                procs = []
                if mode == "probes":
                    for h in ("h1", "h2"):
                        procs.append(subprocess.Popen([*CLI, "run", "-f", path, "--as", h, "--metrics-addr", "off",
                                                       "--check-interval", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True))
                    time.sleep(12)   # compiled and attached
                out["cross_host"][mode].append(iperf("172.20.0.4"))   # c2 on h2
                out["same_host"][mode].append(iperf("172.20.0.3"))    # c1 on h1
                for p in procs:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=20)
        for s in servers:
            s.terminate()
            s.wait()
    finally:
        run("down", "--lab", lab)
        os.unlink(path)
    med = {k: {m: round(statistics.median(v), 3) for m, v in x.items()} for k, x in out.items()}
    return {"gbit_per_second": med, "rounds": rounds,
            "probes_keep": {k: round(v["probes"] / v["off"], 3) for k, v in med.items()},
            "cross_over_same_host": round(med["cross_host"]["off"] / med["same_host"]["off"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--containers", type=int, default=100, help="per host")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    res = {"machine": {"nproc": os.cpu_count(), "kernel": os.uname().release}, "containers_per_host": args.containers,
           "by_hosts": {}}
    for n in args.hosts:
        res["by_hosts"][n] = {"build": build(n, args.containers), "heal_vxlan_deleted": heal(n, args.containers,
                                                                                                args.trials)}
        print(json.dumps({n: res["by_hosts"][n]}), file=sys.stderr, flush=True)
    if not args.skip_throughput:
        res["tcp"] = throughput(args.seconds, args.rounds)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
