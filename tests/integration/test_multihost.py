"""Labs across hosts (issue #15) on the real kernel: two and three simulated hosts (namespaces on
the sandbox's LAN switch), each with its own daemon process (`run --as HOST`). Oracles: ping,
curl, tcpdump on the gateway, `ip -j`/`bridge -j` in the hosts' namespaces, the daemons' metrics,
a real Prometheus federating two per-host ones."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.conftest import MADE, ROOT, example, sh, unique_lab, wait_for
from tests.integration.capture import Capture
from tests.integration.conftest import DaemonProc
from tests.integration.test_observability import free_port, metric, query

pytestmark = pytest.mark.kernel

TWO = example("two-hosts.yaml")


class MultiLab:
    """A lab across hosts made by the real CLI (`up` builds the sandbox and every host's part)."""

    def __init__(self, spec: dict, path: str):
        self.spec, self.name, self.path = spec, spec["lab"], path
        with open(path, "w") as f:
            yaml.safe_dump(spec, f)
        self.host_of = {c["name"]: c["host"] for c in spec["containers"]}

    def ns(self, node: str) -> str:
        if node in self.host_of:
            return f"bl-{self.name}.{self.host_of[node]}-{node}"
        if node in {h["name"] for h in self.spec["hosts"]}:
            return f"blm-{self.name}-{node}"
        return f"bl-{self.name}-{node}"

    def cli(self, *args, check=True, timeout=120):
        r = subprocess.run([sys.executable, "-m", "orchestrator", *args, "-f", self.path], capture_output=True,
                           text=True, timeout=timeout, cwd=ROOT)
        if check and r.returncode != 0:
            raise AssertionError(f"{args} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def x(self, node: str, cmd: str, check=True, timeout=20):
        return sh(["ip", "netns", "exec", self.ns(node), "sh", "-c", cmd], check=check, timeout=timeout)

    def ping(self, node: str, addr: str, count=1) -> bool:
        return self.x(node, f"ping -n -c {count} -i 0.2 -W 1 {addr}", check=False).returncode == 0

    def http(self, node: str, url: str) -> str:
        r = self.x(node, f"curl -s -m 3 {url}", check=False)
        return r.stdout.strip() if r.returncode == 0 else f"curl exit {r.returncode}"

    def vxlan(self, host: str) -> str:
        links = json.loads(self.x(host, "ip -j -d link show type vxlan").stdout)
        assert len(links) == 1, links
        return links[0]["ifname"]

    def flood(self, host: str) -> set[str]:
        fdb = json.loads(self.x(host, f"bridge -j fdb show dev {self.vxlan(host)}").stdout)
        return {e["dst"] for e in fdb if e.get("mac") == "00:00:00:00:00:00"}


class HostDaemon(DaemonProc):
    """`bridgelab run --as HOST`, stopped by its pid."""
    stop_timeout = 15

    def __init__(self, lab: MultiLab, host: str, *extra):
        super().__init__(lab, *extra, host=host, ready_timeout=30)


@pytest.fixture
def make_multi(tmp_path):
    made, daemons = [], []

    def make(mutate=None):
        spec = json.loads(json.dumps(TWO))
        spec["lab"] = unique_lab()
        MADE.add(spec["lab"])
        if mutate:
            mutate(spec)
        lab = MultiLab(spec, str(tmp_path / f"{spec['lab']}.yaml"))
        made.append(lab)
        lab.cli("up")
        return lab

    def daemon(lab, host, *extra):
        d = HostDaemon(lab, host, *extra)
        daemons.append(d)
        return d
    make.daemon = daemon
    yield make
    for d in daemons:
        d.stop()
    for lab in made:
        subprocess.run([sys.executable, "-m", "orchestrator", "down", "--lab", lab.name], cwd=ROOT,
                       capture_output=True, timeout=120)
        left = [n for n in os.listdir("/run/netns") if f"-{lab.name}-" in n or f"-{lab.name}." in n]
        assert not left, f"down left namespaces behind: {left}"


def three_hosts(spec):
    spec["hosts"].append({"name": "h3", "address": "192.168.0.13/24"})
    spec["containers"].append({"name": "c", "host": "h3", "networks": [{"network": "front", "address": "172.20.0.30"}],
                               "services": [{"kind": "http", "port": 80}]})


def test_two_hosts_a_and_b_talk_across_and_each_host_nats_and_publishes_its_own(make_multi):
    lab = make_multi()
    assert lab.ping("a", "172.20.0.20") and lab.ping("b", "172.20.0.10")
    assert lab.http("b", "http://172.20.0.10/") == "a"                          # TCP across the hosts
    assert lab.ping("a", "172.20.0.1") and lab.ping("b", "172.20.0.1")          # the anycast gateway, on each host
    macs = {h: json.loads(lab.x(h, "ip -j link show brfront").stdout)[0]["address"] for h in ("h1", "h2")}
    assert macs["h1"] == macs["h2"], macs
    vx = json.loads(lab.x("h1", "ip -j -d link show type vxlan").stdout)[0]
    assert vx["linkinfo"]["info_data"]["port"] == 4789 and vx["mtu"] == 1450 and vx["master"] == "brfront"
    assert lab.flood("h1") == {"192.168.0.12"} and lab.flood("h2") == {"192.168.0.11"}
    cap = Capture(f"bl-{lab.name}-gateway", "eth0", "icmp and icmp[icmptype] == icmp-echo", count=2)
    try:
        assert lab.ping("a", "203.0.113.10") and lab.ping("b", "203.0.113.10")
        lines = cap.lines()
    finally:
        cap.stop()
    # each host masquerades its own containers behind its own address
    assert any("192.168.0.11 > 203.0.113.10" in x for x in lines) and any("192.168.0.12 > 203.0.113.10" in x
                                                                        for x in lines), lines
    assert lab.http("client", "http://192.168.0.12:8080/") == "b"              # published on b's host
    assert lab.http("client", "http://192.168.0.11:8080/").startswith("curl exit")   # and only there
    code = lab.cli("check", "--json", check=False)
    res = {r["name"]: r for r in json.loads(code.stdout)["results"]}
    assert code.returncode == 0 and all(r["status"] == "ok" for r in res.values()), res


def test_three_hosts_flood_to_each_other(make_multi):
    lab = make_multi(three_hosts)
    assert lab.flood("h1") == {"192.168.0.12", "192.168.0.13"}
    assert lab.flood("h3") == {"192.168.0.11", "192.168.0.12"}
    for src, dst in (("a", "172.20.0.30"), ("c", "172.20.0.20"), ("b", "172.20.0.10")):
        assert lab.ping(src, dst), (src, dst)
    assert lab.http("c", "http://172.20.0.20/") == "b"


def test_each_host_daemon_heals_its_vxlan_and_flood_entries(make_multi):
    lab = make_multi()
    d1 = make_multi.daemon(lab, "h1", "--no-probes")
    make_multi.daemon(lab, "h2", "--no-probes")
    assert 'host="h1"' in next(k for k in d1.metrics() if k.startswith("bridgelab_build_info"))
    name = lab.vxlan("h1")
    lab.x("h1", f"ip link del {name}")
    assert wait_for(lambda: lab.ping("a", "172.20.0.20"), timeout=10)
    assert lab.flood("h1") == {"192.168.0.12"}
    lab.x("h1", f"bridge fdb del 00:00:00:00:00:00 dev {name} dst 192.168.0.12")
    assert wait_for(lambda: lab.flood("h1") == {"192.168.0.12"}, timeout=5), "flood entry not healed"
    lab.x("h2", f"ip link set {lab.vxlan('h2')} nomaster")
    assert wait_for(lambda: json.loads(lab.x("h2", f"ip -j link show {lab.vxlan('h2')}").stdout)[0].get("master")
                    == "brfront", timeout=5)
    assert wait_for(lambda: lab.ping("b", "172.20.0.10"), timeout=5)
    applied = metric(d1.metrics(), "bridgelab_heal_actions_total", kind="vxlan", outcome="applied", host="h1")
    assert applied >= 2


def test_one_host_killed_the_other_keeps_working_healing_and_says_its_peer_is_gone(make_multi):
    lab = make_multi()
    d1 = make_multi.daemon(lab, "h1", "--no-probes")
    d2 = make_multi.daemon(lab, "h2", "--no-probes")
    assert wait_for(lambda: metric(d1.metrics(), "bridgelab_vxlan_peer_up", peer="192.168.0.12") == 1, timeout=10)
    d2.stop(signal.SIGKILL)
    # the data plane needs no daemon: across the hosts still works, and h1 still heals its half
    assert lab.ping("a", "172.20.0.20")
    lab.x("h1", f"ip link del {lab.vxlan('h1')}")
    assert wait_for(lambda: lab.ping("a", "172.20.0.20"), timeout=10)
    lab.x("a", "ip route del default")
    assert wait_for(lambda: lab.ping("a", "203.0.113.10"), timeout=10)
    # the other host itself goes away: h1 says so, and its own half works on
    lab.x("h2", "ip link set ens33 down")
    assert wait_for(lambda: metric(d1.metrics(), "bridgelab_vxlan_peer_up", peer="192.168.0.12") == 0, timeout=15)
    ev = [e for e in d1.events() if e.get("event") == "vxlan peer unreachable"]
    assert ev and ev[0]["peer"] == "192.168.0.12" and ev[0]["networks"] == ["front"]
    assert lab.ping("a", "203.0.113.10") and not lab.ping("a", "172.20.0.20")


def test_trace_follows_a_packet_across_hosts_with_the_vxlan_hop(make_multi):
    lab = make_multi()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "trace", "-f", lab.path, "--as", "h1", "--as", "h2",
                             "--node", "a", "--proto", "icmp", "--count", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert wait_for(lambda: proc.poll() is not None or _said(proc, "tracing lab"), timeout=60)
        assert lab.ping("a", "172.20.0.20")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (pk,) = [json.loads(x) for x in out.splitlines() if x.startswith('{"packet"')]
    nodes = [h["node"] for h in pk["hops"]]
    assert nodes[0] == "a" and "h1" in nodes and "h2" in nodes and nodes[-1] == "b", nodes
    encap = [h for h in pk["hops"] if h.get("encap")]
    assert encap and all("192.168.0.11 → 192.168.0.12" in h["encap"] for h in encap), encap
    assert {h["node"] for h in encap} >= {"h1", "h2"} and pk["verdict"] == "delivered to b"


def _said(proc, text: str, seen={}) -> bool:
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        seen[proc.pid] = seen.get(proc.pid, "") + os.read(proc.stderr.fileno(), 65536).decode()
    except BlockingIOError:
        pass
    return text in seen.get(proc.pid, "")


def test_explain_names_the_far_side_when_it_breaks(make_multi):
    lab = make_multi()
    r = lab.cli("explain", "a", "b", "--json", check=False)
    assert r.returncode == 0 and json.loads(r.stdout)["works"]
    lab.x("h2", f"ip link set {lab.vxlan('h2')} down")
    r = lab.cli("explain", "a", "b", "--json", check=False)
    rep = json.loads(r.stdout)
    assert r.returncode == 1 and rep["side"] == "h2" and rep["cause"] == "far_side_drift", rep
    assert f"set-up {lab.vxlan('h2')}" in rep["verdict"] and "--as h2" in rep["fix"]
    lab.cli("up")
    lab.x("h2", "ip link set ens33 down")
    rep = json.loads(lab.cli("explain", "a", "b", "--json", check=False).stdout)
    assert rep["side"] == "underlay" and rep["cause"] == "vxlan_peer_unreachable", rep


def test_a_global_prometheus_federates_two_per_host_ones(make_multi, tmp_path):
    lab = make_multi()
    d = {h: make_multi.daemon(lab, h, "--no-probes", "--check-interval", "1") for h in ("h1", "h2")}
    procs = []

    def prom(name, cfg):
        port = free_port()
        path = tmp_path / f"{name}.yml"
        path.write_text(json.dumps(cfg))
        procs.append(subprocess.Popen(["prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp_path / name}",
                                       f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        return port
    try:
        per = {h: prom(h, {"global": {"scrape_interval": "1s", "external_labels": {"lab_host": h}},
                           "scrape_configs": [{"job_name": "bridgelab",
                                               "static_configs": [{"targets": [f"127.0.0.1:{d[h].port}"]}]}]})
               for h in d}
        glob = prom("global", {"global": {"scrape_interval": "1s"}, "scrape_configs": [{
            "job_name": "bridgelab-federate", "honor_labels": True, "metrics_path": "/federate",
            "params": {"match[]": ['{job="bridgelab"}']},
            "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in per.values()]}]}]})
        url = f"http://127.0.0.1:{glob}"
        assert wait_for(lambda: _safe(lambda: {r["metric"].get("host") for r in query(
            url, "bridgelab_build_info")} == {"h1", "h2"}), timeout=60)
        # rate() needs two samples inside its window in the global Prometheus
        assert wait_for(lambda: all(_safe(lambda: query(url, f'sum(rate(bridgelab_heal_actions_total{{host="{h}"}}[15s]))'))
                                    for h in ("h1", "h2")), timeout=60, every=1)
        import build
        empty = []
        for name, dash in build.DASHBOARDS.items():
            for p in dash["panels"]:
                for t in p["targets"]:
                    expr = t["expr"].replace("$instance", ".*").replace("$node", ".*").replace("$network", ".*") \
                        .replace("$family", ".*").replace("$__rate_interval", "15s").replace("$__range", "5m")
                    if "bridgelab_" not in expr or any(x in expr for x in ("probe_", "datapath", "drops", "nat_",
                                                                           "frees", "scrape_duration")):
                        continue   # the probes' series: these daemons run without probes
                    hosts = set()
                    for h in ("h1", "h2"):
                        got = _safe(lambda: query(url, expr.replace("$host", h))) or []
                        if got:
                            hosts.add(h)
                    if hosts != {"h1", "h2"}:
                        empty.append(f"{name} / {p['title']}: data for {sorted(hosts)}")
        assert not empty, "\n".join(empty)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=15)


def _safe(fn):
    try:
        return fn()
    except (OSError, ValueError, AssertionError):
        return None
