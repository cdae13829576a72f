"""Build and tear down a lab of several networks, two-network containers and a chain of routers
wired by point-to-point links (issue #13): bridgelab vs the seed's method (one `ip` process per
step) for the same topology.

The seed's method is generated from the same topology: a bridge per network, a veth per
attachment, a veth per link, addresses, default routes, static routes and ip_forward on the
routers, each its own `ip` (or `sysctl`) process, as the seed document does by hand. It builds no
firewall (bridgelab's table is one `nft -f` either way), so bridgelab does strictly more.

    .venv/bin/python bench/multi_network.py [--nodes 200] [--repeat 3] [--dual-stack]
"""

import argparse
import asyncio
import ipaddress
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
sys.path.insert(0, HERE)

from build_teardown import settle  # noqa: E402
from orchestrator.lab import desired as plan  # noqa: E402
from orchestrator.lab import spec  # noqa: E402
from orchestrator.reconcile.engine import Engine  # noqa: E402
from orchestrator.reconcile.teardown import teardown  # noqa: E402

NETWORKS = 4


def topology(lab: str, nodes: int, dual: bool = False) -> dict:
    """NODES nodes: three quarters containers on NETWORKS networks (every tenth on a second
    one), a quarter routers in a chain of /30 links, the first router on network 0."""
    routers = max(2, nodes // 4)
    containers = nodes - routers
    nets = []
    for k in range(NETWORKS):
        n = {"name": f"n{k}", "bridge": f"brn{k}", "subnet": f"10.{100 + k}.0.0/22"}
        if dual:
            n["subnet6"] = f"fd00:{100 + k}::/64"
        nets.append(n)
    cs = []
    for i in range(containers):
        k = i % NETWORKS
        host = i // NETWORKS + 10
        att = [{"network": f"n{k}", "address": f"10.{100 + k}.{host // 250}.{host % 250 + 2}"}]
        if dual:
            att[0]["address6"] = f"fd00:{100 + k}::{host:x}"
        if i % 10 == 0:
            j = (k + 1) % NETWORKS
            att.append({"network": f"n{j}", "address": f"10.{100 + j}.3.{i // 10 % 250 + 2}"})
            if dual:
                att[-1]["address6"] = f"fd00:{100 + j}::3:{i // 10:x}"
        cs.append({"name": f"c{i}", "networks": att})
    links = []
    for r in range(routers):
        c = {"name": f"r{r}", "forwarding": True}
        if r == 0:
            c["networks"] = [{"network": "n0", "address": "10.100.3.254"}]
        cs.append(c)
    for r in range(routers - 1):
        net = ipaddress.ip_network(f"10.200.{r // 64}.{(r % 64) * 4}/30")
        a, b = list(net.hosts())
        link = {"endpoints": [f"r{r}:eth{2 if r else 1}", f"r{r + 1}:eth1"], "addresses": [f"{a}/30", f"{b}/30"]}
        if dual:
            link["addresses6"] = [f"fd00:200:{r:x}::1/64", f"fd00:200:{r:x}::2/64"]
        links.append(link)
    uplink = {"name": "ens33", "address": "192.168.0.10/24", "gateway": "192.168.0.2"}
    if dual:
        uplink.update(address6="2001:db8:0:1::10/64", gateway6="2001:db8:0:1::2")
    return {"lab": lab, "uplink": uplink,
            "networks": nets, "containers": cs, "links": links, "ports": [{"host_port": 8080, "to": "c0:80"}]}


def seed_script(tag: str, topo: dict) -> tuple[str, str]:
    """The seed's method for TOPO: (up script, down script), one process per step."""
    s = spec.validate(topo, "bench")
    H = f"bls-{tag}-host"
    up = ["set -e", f"ip netns add {H}", f"ip netns exec {H} sysctl -qw net.ipv4.ip_forward=1"]
    for n in s.networks:
        up += [f"ip -n {H} link add {n.bridge} type bridge", f"ip -n {H} addr add {n.gateway}/{n.subnet.prefixlen} dev {n.bridge}",
               f"ip -n {H} link set {n.bridge} up"]
    nets = {n.name: n for n in s.networks}
    down = []
    for i, c in enumerate(s.containers):
        ns = f"bls-{tag}-{c.name}"
        up += [f"ip netns add {ns}", f"ip -n {ns} link set lo up"]
        down.append(f"ip netns del {ns}")
        if c.forwarding:
            up.append(f"ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1")
        for j, a in enumerate(c.attachments):
            n = nets[a.network]
            hv = f"v{i}x{j}"
            up += [f"ip -n {H} link add {hv} type veth peer name {a.interface} netns {ns}",
                   f"ip -n {ns} addr add {a.address}/{n.subnet.prefixlen} dev {a.interface}",
                   f"ip -n {ns} link set {a.interface} up", f"ip -n {H} link set {hv} master {n.bridge}",
                   f"ip -n {H} link set {hv} up"]
            if a.address6 is not None:
                up.append(f"ip -n {ns} addr add {a.address6}/{n.subnet6.prefixlen} dev {a.interface} nodad")
            if j == 0 and not n.internal:
                up.append(f"ip -n {ns} route add default via {n.gateway}")
    for link in s.links:
        (ea, eb) = link.ends
        na, nb = f"bls-{tag}-{ea.node}", f"bls-{tag}-{eb.node}"
        up += [f"ip -n {na} link add {ea.interface} type veth peer name {eb.interface} netns {nb}"]
        for e, ns in ((ea, na), (eb, nb)):
            if e.address is not None:
                up.append(f"ip -n {ns} addr add {e.address} dev {e.interface}")
            if e.address6 is not None:
                up.append(f"ip -n {ns} addr add {e.address6} dev {e.interface} nodad")
            up.append(f"ip -n {ns} link set {e.interface} up")
    down.append(f"ip netns del {H}")
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def timed(fn) -> float:
    settle()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def seed_method(nodes: int, dual: bool) -> tuple[float, float, int]:
    tag = secrets.token_hex(3)
    up, down = seed_script(tag, topology("s" + tag, nodes, dual))
    try:
        t_up = timed(lambda: subprocess.run(["bash", "-c", up], check=True))
    finally:
        t_down = timed(lambda: subprocess.run(["bash", "-c", down], check=False, stderr=subprocess.DEVNULL))
    return t_up, t_down, up.count("\n") - 1


def bridgelab_engine(nodes: int, dual: bool) -> tuple[float, float, int]:
    lab = "b" + secrets.token_hex(3)
    d = plan.desired(spec.validate(topology(lab, nodes, dual), "bench"), plan.SANDBOX)

    async def go():
        eng = Engine(d, "bench")
        try:
            settle()
            t0 = time.perf_counter()
            res = await eng.reconcile()
            t_up = time.perf_counter() - t0
            assert not res.errors, res.errors
        finally:
            eng.close()
            settle()
            t0 = time.perf_counter()
            await teardown(lab)
        return t_up, time.perf_counter() - t0, len(res.actions)

    return asyncio.run(go())


def bridgelab_cli(nodes: int, dual: bool) -> tuple[float, float]:
    lab = "c" + secrets.token_hex(3)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(topology(lab, nodes, dual), f)
    cli = [sys.executable, "-m", "orchestrator"]
    try:
        t_up = timed(lambda: subprocess.run([*cli, "up", "-f", f.name], check=True, stdout=subprocess.DEVNULL, cwd=ROOT))
        t_down = timed(lambda: subprocess.run([*cli, "down", "--lab", lab], check=True, stdout=subprocess.DEVNULL,
                                              cwd=ROOT))
    finally:
        os.unlink(f.name)
        subprocess.run([*cli, "down", "--lab", lab], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return t_up, t_down


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dual-stack", action="store_true", help="IPv6 beside IPv4 on every network and link")
    args = ap.parse_args()
    topo = topology("x", args.nodes, args.dual_stack)
    rows: dict[str, list[float]] = {k: [] for k in ("seed_up", "seed_down", "engine_up", "engine_down", "cli_up",
                                                    "cli_down")}
    steps = actions = 0
    for _ in range(args.repeat):   # interleaved: drift in the machine's load hits all three alike
        u, d, steps = seed_method(args.nodes, args.dual_stack)
        rows["seed_up"].append(u)
        rows["seed_down"].append(d)
        u, d, actions = bridgelab_engine(args.nodes, args.dual_stack)
        rows["engine_up"].append(u)
        rows["engine_down"].append(d)
        u, d = bridgelab_cli(args.nodes, args.dual_stack)
        rows["cli_up"].append(u)
        rows["cli_down"].append(d)
    med = {k: round(statistics.median(v), 3) for k, v in rows.items()}
    print(json.dumps({
        "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release},
        "topology": {"nodes": args.nodes, "networks": NETWORKS, "links": len(topo["links"]),
                     "containers": len(topo["containers"]), "dual_stack": args.dual_stack},
        "repeat": args.repeat, "median_seconds": med, "seed_steps": steps, "engine_actions": actions,
        "speedup_up_engine": round(med["seed_up"] / med["engine_up"], 1),
        "speedup_up_cli": round(med["seed_up"] / med["cli_up"], 1),
        "speedup_down_cli": round(med["seed_down"] / med["cli_down"], 1),
    }, indent=1))


if __name__ == "__main__":
    main()
