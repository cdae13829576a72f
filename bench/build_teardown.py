"""Build and tear down N containers: bridgelab vs the seed's one-`ip`-process-per-step method.

Prints JSON. Both run in the same invocation so the ratio is what matters (this machine is
noisy). `up` is timed two ways: the engine's reconcile in-process, and the whole CLI command
(interpreter start and imports included), as a user sees it.

    .venv/bin/python bench/build_teardown.py [--sizes 50 200] [--repeat 3]
"""

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from orchestrator.lab import desired as plan  # noqa: E402
from orchestrator.lab import spec  # noqa: E402
from orchestrator.reconcile.engine import Engine  # noqa: E402
from orchestrator.reconcile.teardown import teardown  # noqa: E402


def topology(lab: str, n: int) -> dict:
    return {
        "lab": lab,
        "bridge": {"name": "br0", "subnet": "10.88.0.0/16", "gateway": "10.88.0.1"},
        "uplink": {"name": "ens33", "address": "192.168.0.10/24", "gateway": "192.168.0.2"},
        "containers": [{"name": f"c{i}", "address": f"10.88.{i // 250}.{i % 250 + 2}",
                        "interface": f"eth{i}", "host_interface": f"veth{i}"} for i in range(1, n + 1)],
        "ports": [{"host_port": 8888, "to": "c1:80"}, {"host_port": 9999, "to": "c2:80"}],
    }


def live_namespaces() -> int:
    """Network namespaces the kernel still holds, destroyed or not (the slab does not lie)."""
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith("net_namespace "):
                return int(line.split()[1])
    return 0


BASELINE = live_namespaces()


def settle(timeout: float = 20.0, quiet: float = 0.6) -> float:
    """Deleting namespaces returns at once; the kernel destroys them afterwards in a workqueue.
    Wait until it has, so one run's cleanup is not billed to the next: until the count of live
    namespaces is back at the start, or has stopped falling for QUIET seconds (the slab count
    need not return to its start value: another lab on the machine, or a namespace pinned by a
    process we do not own, keeps it above for good — the old wait spent its full 60 s then).
    Returns the seconds waited."""
    t0 = last_change = time.monotonic()
    last = live_namespaces()
    while time.monotonic() - t0 < timeout:
        now = live_namespaces()
        if now <= BASELINE:
            break
        if now < last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    return time.monotonic() - t0


def timed(fn) -> float:
    settle()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def seed_method(n: int) -> tuple[float, float]:
    tag = secrets.token_hex(3)
    script = os.path.join(HERE, "seed_method.sh")
    up = timed(lambda: subprocess.run([script, "up", tag, str(n)], check=True))
    down = timed(lambda: subprocess.run([script, "down", tag, str(n)], check=True))
    return up, down


def bridgelab_engine(n: int) -> tuple[float, float, int]:
    lab = "b" + secrets.token_hex(3)
    s = spec.validate(topology(lab, n), "bench")
    d = plan.desired(s, plan.SANDBOX)

    async def go():
        eng = Engine(d, "bench")
        settle()
        t0 = time.perf_counter()
        res = await eng.reconcile()
        up = time.perf_counter() - t0
        assert not res.errors, res.errors
        eng.close()
        settle()
        t0 = time.perf_counter()
        await teardown(lab)
        return up, time.perf_counter() - t0, len(res.actions)

    return asyncio.run(go())


def bridgelab_cli(n: int) -> tuple[float, float]:
    lab = "c" + secrets.token_hex(3)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(topology(lab, n), f)
    cli = [sys.executable, "-m", "orchestrator"]
    try:
        up = timed(lambda: subprocess.run([*cli, "up", "-f", f.name], check=True, stdout=subprocess.DEVNULL, cwd=ROOT))
        down = timed(lambda: subprocess.run([*cli, "down", "--lab", lab], check=True, stdout=subprocess.DEVNULL, cwd=ROOT))
    finally:
        os.unlink(f.name)
        subprocess.run([*cli, "down", "--lab", lab], stdout=subprocess.DEVNULL, cwd=ROOT)
    return up, down


CNI_PATH = "/usr/lib/cni"   # Debian's containernetworking-plugins
CNI_BRIDGE = {"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0", "isGateway": True,
              "ipMasq": True, "hairpinMode": True}


def _cni(plugin: str, cmd: str, cid: str, netns_name: str, conf: dict, host_ns: str) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
           "CNI_NETNS": f"/run/netns/{netns_name}", "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH}
    r = subprocess.run(["ip", "netns", "exec", host_ns, os.path.join(CNI_PATH, plugin)], input=json.dumps(conf),
                       capture_output=True, text=True, env=env, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"CNI {plugin} {cmd} {cid}: {r.stdout or r.stderr}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def cni_method(n: int) -> tuple[float, float]:
    """What a user would script instead: the standard CNI plugins, bridge then portmap chained
    with prevResult, ADD for each container in its own namespace and DEL again, all inside a
    namespace playing the host (ipMasq and portmap write that namespace's iptables)."""
    tag = secrets.token_hex(3)
    host = f"blc-{tag}-host"
    data = tempfile.mkdtemp(prefix=f"blc-{tag}-")
    bridge = {**CNI_BRIDGE, "ipam": {"type": "host-local", "subnet": "10.88.0.0/16", "dataDir": data}}
    ports = {1: [{"hostPort": 8888, "containerPort": 80, "protocol": "tcp"}],
             2: [{"hostPort": 9999, "containerPort": 80, "protocol": "tcp"}]}

    def up():
        subprocess.run(["ip", "netns", "add", host], check=True)
        subprocess.run(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        for i in range(1, n + 1):
            ns = f"blc-{tag}-c{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            prev = _cni("bridge", "ADD", f"c{i}", ns, bridge, host)
            pm = {"cniVersion": "1.0.0", "name": "bench", "type": "portmap", "capabilities": {"portMappings": True},
                  "runtimeConfig": {"portMappings": ports.get(i, [])}, "prevResult": prev}
            _cni("portmap", "ADD", f"c{i}", ns, pm, host)

    def down():
        for i in range(n, 0, -1):
            ns = f"blc-{tag}-c{i}"
            pm = {"cniVersion": "1.0.0", "name": "bench", "type": "portmap", "capabilities": {"portMappings": True},
                  "runtimeConfig": {"portMappings": ports.get(i, [])}}
            _cni("portmap", "DEL", f"c{i}", ns, pm, host)
            _cni("bridge", "DEL", f"c{i}", ns, bridge, host)
            subprocess.run(["ip", "netns", "del", ns], check=True)
        subprocess.run(["ip", "netns", "del", host], check=True)
    try:
        t_up = timed(up)
        t_down = timed(down)
    finally:   # whatever a failure left: only our own blc-<tag>-* namespaces and data dir
        for name in [x for x in os.listdir("/run/netns") if x.startswith(f"blc-{tag}-")]:
            subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", data])
    return t_up, t_down


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-cni", action="store_true", help="leave out the CNI plugins column")
    args = ap.parse_args()
    cni = not args.no_cni and os.path.exists(os.path.join(CNI_PATH, "bridge"))
    out = {"machine": {"nproc": os.cpu_count(), "kernel": os.uname().release}, "results": []}
    for n in args.sizes:
        rows = {"seed_up": [], "seed_down": [], "engine_up": [], "engine_down": [], "cli_up": [], "cli_down": [],
                **({"cni_up": [], "cni_down": []} if cni else {})}
        actions = 0
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits both alike
            u, d = seed_method(n)
            rows["seed_up"].append(u)
            rows["seed_down"].append(d)
            u, d, actions = bridgelab_engine(n)
            rows["engine_up"].append(u)
            rows["engine_down"].append(d)
            u, d = bridgelab_cli(n)
            rows["cli_up"].append(u)
            rows["cli_down"].append(d)
            if cni:
                u, d = cni_method(n)
                rows["cni_up"].append(u)
                rows["cni_down"].append(d)
        med = {k: round(statistics.median(v), 4) for k, v in rows.items()}
        out["results"].append({
            "containers": n, "repeat": args.repeat, "median_seconds": med, "engine_actions": actions,
            "speedup_up_engine": round(med["seed_up"] / med["engine_up"], 1),
            "speedup_up_cli": round(med["seed_up"] / med["cli_up"], 1),
            "speedup_down_cli": round(med["seed_down"] / med["cli_down"], 1),
            **({"speedup_up_cli_over_cni": round(med["cni_up"] / med["cli_up"], 1),
                "speedup_down_cli_over_cni": round(med["cni_down"] / med["cli_down"], 1)} if cni else {}),
        })
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
