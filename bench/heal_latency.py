"""Heal latency per fault kind: time from the fault to the resource restored, and to the first
answered ping across it. A real `bridgelab run` heals a sandbox lab; faults are injected and
checks made in-process (pyroute2, libnftables, raw ICMP) so the clock is not dominated by
spawning `ip`. Prints JSON with p50/p95/p99 in milliseconds.

    .venv/bin/python bench/heal_latency.py [--trials 50] [--kinds port-down,...] [--containers 1000]

--containers N: the same faults on bench/build_teardown.py's lab of N containers (c1, c2 for the
seed's container1, container2: same interface names, addresses in 10.88.0.0/16) instead of the seed.
"""

import argparse
import asyncio
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
sys.path.insert(0, ROOT)

from orchestrator.adapters import netns  # noqa: E402
from orchestrator.lab import desired as plan  # noqa: E402
from orchestrator.lab import spec  # noqa: E402
from orchestrator.adapters import nft, sysctl  # noqa: E402
from orchestrator.adapters.rtnl import Rtnl  # noqa: E402
from orchestrator.reconcile.engine import Engine  # noqa: E402
from orchestrator.diagnose.check import probe  # noqa: E402


def icmp_echo(ns: str, dst: str, timeout: float = 0.02) -> bool:
    """One echo request from inside NS; True if answered within TIMEOUT (check's own probe)."""
    try:
        return probe.icmp(ns, dst, timeout).works
    except OSError:   # the namespace is gone or being made
        return False


SEED_NAMES = {"container1": ("container1", "172.168.1.11", 24), "container2": ("container2", "172.168.1.12", 24)}
SIZED_NAMES = {"container1": ("c1", "10.88.0.3", 16), "container2": ("c2", "10.88.0.4", 16)}


class Bench:
    def __init__(self, lab: str, path: str, names: dict = SEED_NAMES):
        self.lab = lab
        self.path = path
        self.names = names
        self.rtnl = Rtnl()
        self.d = plan.desired(spec.load(path), plan.SANDBOX)

    def ns(self, node: str) -> str:
        return f"bl-{self.lab}-{self.names.get(node, (node,))[0]}"

    def addr(self, node: str, plen: bool = False) -> str:
        _, a, n = self.names[node]
        return f"{a}/{n}" if plen else a

    async def link(self, node: str, name: str):
        st = await self.rtnl.observe(self.ns(node))
        return st, st.links.get(name)

    # each fault: (inject, restored?, ping from, ping to)
    def faults(self):
        async def del_link(node, name):
            _, link = await self.link(node, name)
            await self.rtnl.delete_link(self.ns(node), link.index)

        async def link_ok(node, name, master=None, addr=None):
            if not netns.exists(self.ns(node)):
                return False
            self.rtnl.forget(self.ns(node))
            st, link = await self.link(node, name)
            if link is None or not link.up:
                return False
            if addr and not any(a == addr for dev, a in ((d, str(x)) for d, x in st.addresses) if dev == name):
                return False
            return master is None or (st.by_index(link.master) or link).name == master

        async def port_down():
            _, link = await self.link("host", "veth2")
            await self.rtnl.set_link(self.ns("host"), link.index, up=False)

        async def flush_addr():
            _, link = await self.link("container2", "eth2")
            await self.rtnl.handle(self.ns("container2")).addr("del", index=link.index, address=self.addr("container2"),
                                                                prefixlen=self.names["container2"][2])

        async def del_route():
            await self.rtnl.handle(self.ns("container1")).route("del", dst="0.0.0.0/0")

        async def route_ok():
            st = await self.rtnl.observe(self.ns("container1"))
            return any(r.dst.prefixlen == 0 for r in st.routes)

        table = f"bridgelab_{self.lab}"

        async def del_ns():
            netns.remove_many([self.ns("container1")])

        async def table_ok():
            text = nft.listing(self.ns("host"), "ip", table)
            return text is not None and "masquerade" in text

        async def fwd_off():
            sysctl.write(self.ns("host"), "net.ipv4.ip_forward", "0")

        async def fwd_ok():
            return sysctl.read(self.ns("host"), "net.ipv4.ip_forward") == "1"

        host = self.ns("host")
        return {
            "host-veth-deleted": (lambda: del_link("host", "veth1"), lambda: link_ok("host", "veth1", "br0"),
                                  "container1", self.addr("container2")),
            "container-veth-deleted": (lambda: del_link("container1", "eth1"),
                                       lambda: link_ok("container1", "eth1", addr=self.addr("container1", True)),
                                       "container1", self.addr("container2")),
            "port-down": (port_down, lambda: link_ok("host", "veth2", "br0"), "container2", self.addr("container1")),
            "address-flushed": (flush_addr, lambda: link_ok("container2", "eth2", addr=self.addr("container2", True)),
                                "container2", self.addr("container1")),
            "default-route-deleted": (del_route, route_ok, "container1", "203.0.113.10"),
            "bridge-deleted": (lambda: del_link("host", "br0"), lambda: link_ok("host", "br0"),
                               "container1", self.addr("container2")),
            "namespace-deleted": (del_ns, lambda: link_ok("container1", "eth1", addr=self.addr("container1", True)),
                                  "container1", "203.0.113.10"),
            "nft-table-deleted": (lambda: asyncio.sleep(0, nft.run(host, f"delete table ip {table}")), table_ok,
                                  "container2", "203.0.113.10"),
            "nft-chain-flushed": (lambda: asyncio.sleep(0, nft.run(host, f"flush chain ip {table} nat_postrouting")),
                                  table_ok, "container2", "203.0.113.10"),
            "ip-forward-off": (fwd_off, fwd_ok, "container1", "203.0.113.10"),
        }

    async def whole(self) -> bool:
        eng = Engine(self.d)
        try:
            return not (await eng.reconcile(dry_run=True)).actions
        finally:
            eng.close()

    async def trial(self, inject, restored, src, dst, limit: float = 10) -> tuple[float, float]:
        for _ in range(500):
            if await self.whole() and icmp_echo(self.ns(src), dst, 0.2):
                break
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await inject()
        t_restored = None
        while time.perf_counter() - t0 < limit:
            if t_restored is None:
                try:
                    if await restored():
                        t_restored = time.perf_counter() - t0
                except Exception as e:  # the namespace mid-creation: look again
                    print(f"restored? {time.perf_counter() - t0:.3f}: {type(e).__name__}: {e}", file=sys.stderr)
            if t_restored is not None and icmp_echo(self.ns(src), dst):
                return t_restored, time.perf_counter() - t0
            await asyncio.sleep(0.001)
        raise TimeoutError(f"not healed within {limit} s")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return None
    xs = sorted(xs)
    return round(1000 * xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--kinds", default="")
    ap.add_argument("--no-probes", action="store_true", help="the daemon without its eBPF probes (a baseline)")
    ap.add_argument("--slow-ms", type=float, default=250, help="list trials whose traffic took longer than this")
    ap.add_argument("--pcap", default="", help="a directory: tcpdump -i any in the host and container1 "
                    "namespaces for the whole run (to see what a slow trial waited for)")
    ap.add_argument("--containers", type=int, default=0, help="a lab of N containers instead of the seed")
    ap.add_argument("--limit", type=float, default=10, help="seconds a trial may take before it counts as not healed")
    args = ap.parse_args()
    lab = "h" + secrets.token_hex(3)
    if args.containers:
        sys.path.insert(0, HERE)
        from build_teardown import topology
        seed = topology(lab, args.containers)
    else:
        seed = yaml.safe_load(open(os.path.join(ROOT, "examples/seed.yaml")))
    seed["lab"] = lab
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(seed, f)
    log = open(f"/tmp/bridgelab-heal-{lab}.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "-f", f.name, "--metrics-addr", "off",
                               "--flap-heals", "100000", *(["--no-probes"] if args.no_probes else [])],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    out = {"date": time.strftime("%Y-%m-%d"), "containers": args.containers or "seed", "trials": args.trials,
           "probes": not args.no_probes, "results": {}}
    caps: list[subprocess.Popen] = []
    try:
        for _ in range(200 if not args.containers else 6000):
            if os.path.exists(f"/run/bridgelab/{lab}/daemon.json") and (
                    args.no_probes or "probes ready" in open(log.name).read()):
                break  # measure a settled daemon, not one still compiling its probes
            time.sleep(0.05)
        if args.pcap:
            os.makedirs(args.pcap, exist_ok=True)
            for node in ("host", "container1", "container2"):
                caps.append(subprocess.Popen(["ip", "netns", "exec", f"bl-{lab}-{node}", "tcpdump", "-i", "any", "-nn",
                                              "-w", os.path.join(args.pcap, f"{node}.pcap"), "arp or icmp"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            # the bridge's own view of its ports (state changes), stamped, beside the captures
            caps.append(subprocess.Popen(["ip", "netns", "exec", f"bl-{lab}-host", "bridge", "-timestamp", "monitor",
                                          "link"], stdout=open(os.path.join(args.pcap, "bridge-monitor.txt"), "w"),
                                         stderr=subprocess.DEVNULL))
            time.sleep(1)
        b = Bench(lab, f.name, SIZED_NAMES if args.containers else SEED_NAMES)
        faults = b.faults()
        kinds = args.kinds.split(",") if args.kinds else list(faults)

        async def run_all():
            for kind in kinds:
                restored, traffic, slow = [], [], []
                unhealed = 0
                for _ in range(args.trials):
                    at = time.time()
                    try:
                        r, t = await b.trial(*faults[kind], limit=args.limit)
                    except TimeoutError:   # counted, and the next trial waits for the lab to be whole
                        unhealed += 1
                        continue
                    restored.append(r)
                    traffic.append(t)
                    if t * 1000 > args.slow_ms:
                        slow.append({"started": round(at, 3), "restored_ms": round(r * 1000, 1),
                                     "traffic_ms": round(t * 1000, 1)})
                out["results"][kind] = {
                    "restored_ms": {"p50": pct(restored, 50), "p95": pct(restored, 95), "p99": pct(restored, 99)},
                    "traffic_ms": {"p50": pct(traffic, 50), "p95": pct(traffic, 95), "p99": pct(traffic, 99)},
                    "mean_restored_ms": round(1000 * statistics.mean(restored), 1) if restored else None,
                    f"not_healed_within_{args.limit:g}s": unhealed,
                    "slow_trials": slow,
                }
                print(kind, out["results"][kind], file=sys.stderr)
        asyncio.run(run_all())
    finally:
        for c in caps:
            c.send_signal(signal.SIGINT)
            c.wait(timeout=10)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=180)   # 1000 containers: closing ~4000 BPF links takes tens of seconds
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        subprocess.run([sys.executable, "-m", "orchestrator", "down", "--lab", lab], cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        os.unlink(f.name)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
