"""The eBPF probes on the real kernel: traces of real traffic in a sandbox lab, counters against
tcpdump, drops with the kernel's reasons, doctor, graceful degradation and clean detach.

Traces run twice where it matters: reading packets at the netfilter hooks (what this machine
allows) and without (BRIDGELAB_PROBE_NO_READ=1: what lockdown=confidentiality leaves), so both
code paths are proven on whichever kernel runs the tests."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, sh, wait_for
from tests.integration.capture import Capture

pytestmark = pytest.mark.kernel

MODES = [pytest.param({}, id="read-packets"), pytest.param({"BRIDGELAB_PROBE_NO_READ": "1"}, id="no-reads")]


class Trace:
    """`bridgelab trace --json` in a subprocess, ready once it says it is tracing."""

    def __init__(self, lab, *args, env=None, timeout=20):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "trace", "-f", lab.path, "--json", "--timeout", str(timeout), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.err = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "tracing lab" not in self.err and self.proc.poll() is None:
            try:
                self.err += os.read(self.proc.stderr.fileno(), 65536).decode()
            except BlockingIOError:
                time.sleep(0.05)
        assert "tracing lab" in self.err, f"trace did not start: {self.err}"

    def packets(self, timeout=30) -> list[dict]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            out, err = self.proc.communicate(timeout=10)
        self.err += err or ""
        assert self.proc.returncode == 0, f"trace exited {self.proc.returncode}: {self.err}"
        lines = [json.loads(x) for x in out.splitlines() if x.strip()]
        self.summary = next(x["summary"] for x in lines if "summary" in x)
        assert self.summary["lost_events"] == 0
        return [x for x in lines if "packet" in x]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=10)


@pytest.fixture
def tracer():
    made = []

    def start(lab, *args, env=None, timeout=20):
        t = Trace(lab, *args, env=env, timeout=timeout)
        made.append(t)
        return t

    yield start
    for t in made:
        t.stop()


def hop_index(pk, node, iface=None, hook=None) -> int:
    for i, h in enumerate(pk["hops"]):
        if h["node"] == node and (iface is None or h["interface"] == iface) and (hook is None or h["hook"] == hook):
            return i
    raise AssertionError(f"no hop {node}/{iface}/{hook} in {[(h['node'], h['interface'], h['hook']) for h in pk['hops']]}")


def find(pkts, **tuple_fields):
    for p in pkts:
        t = p["tuple"] or {}
        if all(t.get(k) == v for k, v in tuple_fields.items()):
            return p
    raise AssertionError(f"no packet with {tuple_fields} in {[p['tuple'] for p in pkts]}")


@pytest.mark.parametrize("env", MODES)
def test_ping_to_gateway_traced_through_masquerade_and_back(lab, tracer, env):
    t = tracer(lab, "--node", "container1", "--proto", "icmp", "--count", "2", env=env)
    assert lab.ping("container1", "192.168.0.2")
    req = find(pkts := t.packets(), icmp="echo-request")
    rep = find(pkts, icmp="echo-reply")
    # the seed's path: container1 → veth1 → br0 → forward → MASQUERADE → uplink → gateway
    order = [hop_index(req, "container1", "eth1", "tc_egress"), hop_index(req, "host", "veth1", "tc_ingress"),
             hop_index(req, "host", hook="forward"), hop_index(req, "host", hook="snat"),
             hop_index(req, "host", "ens33", "tc_egress"), hop_index(req, "gateway", "eth0", "tc_ingress"),
             hop_index(req, "gateway", hook="input")]
    assert order == sorted(order)
    assert req["hops"][hop_index(req, "host", hook="forward")]["out_interface"] == "ens33"
    assert req["hops"][hop_index(req, "host", hook="snat")]["rewrite"] == "source 172.168.1.11 → 192.168.0.10"
    assert req["hops"][hop_index(req, "host", "veth1", "tc_ingress")]["tuple"]["src"] == "172.168.1.11"
    assert req["hops"][hop_index(req, "host", "ens33", "tc_egress")]["tuple"]["src"] == "192.168.0.10"
    assert req["path"] == "forwarded" and req["verdict"] == "delivered to gateway"
    # and back: the reply's destination is rewritten to the container where DNAT sits
    back = [hop_index(rep, "host", "ens33", "tc_ingress"), hop_index(rep, "host", hook="dnat"),
            hop_index(rep, "host", "veth1", "tc_egress"), hop_index(rep, "container1", "eth1", "tc_ingress")]
    assert back == sorted(back)
    assert rep["hops"][back[1]]["rewrite"] == "destination 192.168.0.10 → 172.168.1.11"
    assert rep["hops"][back[3]]["tuple"]["dst"] == "172.168.1.11"
    # deltas are consistent timestamps, hop by hop
    ts = [h["ts_ns"] for h in req["hops"]]
    assert ts == sorted(ts) and req["hops"][0]["delta_us"] == 0


@pytest.mark.parametrize("env", MODES)
def test_http_from_lan_to_published_port_traced_through_dnat(lab, tracer, env):
    t = tracer(lab, "--proto", "tcp", "--port", "8888", "--count", "1", env=env)
    assert "container1" in lab.http("client", "http://192.168.0.10:8888/")
    syn = t.packets()[0]
    assert syn["tuple"]["tcp_flags"] == "S" and syn["tuple"]["dport"] == 8888
    dnat = syn["hops"][hop_index(syn, "host", hook="dnat")]
    assert dnat["rewrite"] == "destination 192.168.0.10:8888 → 172.168.1.11:80"
    arrived = syn["hops"][hop_index(syn, "container1", "eth1", "tc_ingress")]["tuple"]
    assert (arrived["dst"], arrived["dport"], arrived["src"]) == ("172.168.1.11", 80, "192.168.0.100")
    assert hop_index(syn, "client", "eth0", "tc_egress") < hop_index(syn, "host", "ens33", "tc_ingress") \
        < hop_index(syn, "host", hook="dnat") < hop_index(syn, "host", "veth1", "tc_egress")
    assert syn["verdict"] == "delivered to container1"


def test_container_to_container_is_bridged_never_forwarded(lab, tracer):
    t = tracer(lab, "--addr", "172.168.1.12", "--proto", "icmp", "--count", "2")
    assert lab.ping("container1", "172.168.1.12")
    for pk in t.packets():
        hooks = {(h["node"], h["hook"]) for h in pk["hops"]}
        assert ("host", "forward") not in hooks, pk
        assert pk["path"] == "bridged"
        assert not any(h["node"] == "host" and h["interface"] == "br0" and h["hook"].startswith("tc_")
                       for h in pk["hops"]), "a switched frame never goes up to the bridge device"


def test_firewall_drop_reported_with_reason_and_hook(lab, tracer):
    lab.x("host", "nft -f - <<'EOF'\ntable inet bltest_drop {\n chain c {\n  type filter hook forward priority 0;\n"
                  "  ip daddr 192.168.0.2 icmp type echo-request drop\n }\n}\nEOF")
    try:
        t = tracer(lab, "--addr", "192.168.0.2", "--proto", "icmp", "--count", "1")
        assert not lab.ping("container1", "192.168.0.2")
        pk = t.packets()[0]
        drop = pk["hops"][-1]
        assert drop["drop_reason"] == "NETFILTER_DROP"
        assert drop["hook"] == "drop@forward" and drop["node"] == "host"
        assert pk["verdict"].startswith("dropped at host forward: NETFILTER_DROP")
    finally:
        lab.x("host", "nft delete table inet bltest_drop", check=False)


def test_unroutable_packet_reported_with_routing_reason(lab, tracer):
    lab.x("host", "ip route del default")  # the lab's host namespace, which the lab fixture removes
    t = tracer(lab, "--addr", "198.51.100.7", "--count", "1")
    assert not lab.ping("container1", "198.51.100.7")
    pk = t.packets()[0]
    drop = pk["hops"][-1]
    assert drop["node"] == "host" and drop["drop_reason"] == "IP_INNOROUTES"
    assert drop["function"].startswith("ip_error")


def _metric(m: dict, name: str, **labels) -> float:
    want = {f'{k}="{v}"' for k, v in labels.items()}
    return sum(v for k, v in m.items() if k.startswith(name + "{") and want <= set(k[len(name) + 1:-1].split(",")))


def test_counters_equal_tcpdump_and_drops_counted(lab, start_daemon):  # noqa: F811
    d = start_daemon(lab)
    assert wait_for(lambda: _metric(d.metrics(), "bridgelab_probe_attached", probe="tc") == 1, timeout=30), d.text()
    host = lab.ns("host")
    caps = {
        ("veth1", "tc_ingress", "icmp"): Capture(host, "veth1", "-Q in icmp"),
        ("veth1", "tc_egress", "icmp"): Capture(host, "veth1", "-Q out icmp"),
        ("ens33", "tc_egress", "icmp"): Capture(host, "ens33", "-Q out icmp"),
        ("ens33", "tc_ingress", "tcp"): Capture(host, "ens33", "-Q in tcp"),
        ("veth1", "tc_egress", "tcp"): Capture(host, "veth1", "-Q out tcp"),
        ("ens33", "tc_egress", "tcp"): Capture(host, "ens33", "-Q out tcp"),
    }
    before = d.metrics()
    assert lab.ping("container1", "192.168.0.2", count=5)
    for _ in range(3):
        assert "container1" in lab.http("client", "http://192.168.0.10:8888/")
    time.sleep(0.5)
    seen = {k: len(c.lines(timeout=0.5)) for k, c in caps.items()}
    after = d.metrics()
    for (iface, hook, proto), n in seen.items():
        got = _metric(after, "bridgelab_datapath_packets_total", node="host", interface=iface, hook=hook,
                      protocol=proto) - _metric(before, "bridgelab_datapath_packets_total", node="host",
                                                interface=iface, hook=hook, protocol=proto)
        assert got == n, f"{iface} {hook} {proto}: probes {got}, tcpdump {n}"
    assert seen[("veth1", "tc_ingress", "icmp")] == 5 and seen[("ens33", "tc_ingress", "tcp")] >= 3 * 5
    fwd_out = _metric(after, "bridgelab_datapath_packets_total", node="host", hook="forward", interface="ens33") \
        - _metric(before, "bridgelab_datapath_packets_total", node="host", hook="forward", interface="ens33")
    assert fwd_out == seen[("ens33", "tc_egress", "icmp")] + seen[("ens33", "tc_egress", "tcp")]
    if _metric(after, "bridgelab_probe_degraded", probe="nf") == 0:
        src = _metric(after, "bridgelab_nat_translations_total", node="host", rewrite="source") \
            - _metric(before, "bridgelab_nat_translations_total", node="host", rewrite="source")
        assert src == fwd_out  # every packet leaving by the uplink had its source rewritten
    # FDB learning: forget container1's MAC on br0, and the next frame from it is learned again
    mac = json.loads(lab.x("container1", "ip -j link show eth1").stdout)[0]["address"]
    learned = _metric(d.metrics(), "bridgelab_bridge_fdb_learned_total", node="container1", interface="eth1")
    lab.x("host", f"bridge fdb del {mac} dev veth1 master")
    assert lab.ping("container1", "172.168.1.12")
    assert wait_for(lambda: _metric(d.metrics(), "bridgelab_bridge_fdb_learned_total", node="container1",
                                    interface="eth1") > learned, timeout=5)
    # a drop rule of the test's own: each dropped echo request is counted with reason and hook
    lab.x("host", "nft -f - <<'EOF'\ntable inet bltest_drop {\n chain c {\n  type filter hook forward priority 0;\n"
                  "  ip daddr 192.168.0.2 icmp type echo-request drop\n }\n}\nEOF")
    try:
        b = _metric(d.metrics(), "bridgelab_drops_total", node="host", hook="forward", reason="NETFILTER_DROP")
        assert not lab.ping("container1", "192.168.0.2", count=3)
        assert wait_for(lambda: _metric(d.metrics(), "bridgelab_drops_total", node="host", hook="forward",
                                        reason="NETFILTER_DROP") - b == 3, timeout=5)
    finally:
        lab.x("host", "nft delete table inet bltest_drop", check=False)


def _daemon_prog_ids(d) -> set[int]:
    """The BPF programs the daemon process holds (its fds, as /proc says)."""
    ids = set()
    fdinfo = f"/proc/{d.proc.pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            text = open(os.path.join(fdinfo, fd)).read()
        except OSError:
            continue
        m = re.search(r"^prog_id:\s+(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


def _bpf_ids(what: str) -> set[int]:
    return {x["id"] for x in json.loads(sh(["bpftool", "-j", what, "show"]).stdout or "[]")}


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_probes_detach_cleanly(lab, start_daemon, how):  # noqa: F811
    progs, links = _bpf_ids("prog"), _bpf_ids("link")
    d = start_daemon(lab)
    assert wait_for(lambda: _metric(d.metrics(), "bridgelab_probe_attached", probe="nf") == 1, timeout=30), d.text()
    ours = _bpf_ids("prog") - progs
    # Debian 12's bpftool predates BPF_PROG_TYPE_NETFILTER and prints its number, 32
    types = {{32: "netfilter"}.get(x["type"], x["type"]) for x in json.loads(sh(["bpftool", "-j", "prog", "show"]).stdout)
             if x["id"] in ours}
    assert {"sched_cls", "netfilter", "tracepoint"} <= types
    assert len(_bpf_ids("link") - links) == _metric(d.metrics(), "bridgelab_probe_links", probe="tc") \
        + _metric(d.metrics(), "bridgelab_probe_links", probe="nf")
    d.stop(sig=getattr(signal, how))
    assert wait_for(lambda: not (_bpf_ids("prog") & ours) and not (_bpf_ids("link") - links), timeout=10)
    for dev in ("veth1", "br0", "ens33"):
        for kind in ("ingress", "egress"):
            assert lab.x("host", f"tc filter show dev {dev} {kind}").stdout.strip() == ""
    assert lab.x("host", "tc qdisc show dev veth1").stdout.count("clsact") == 0


def test_daemon_degrades_gracefully_when_a_probe_fails(lab, start_daemon, tmp_path):  # noqa: F811
    broken = tmp_path / "probes"
    shutil.copytree(os.path.join(ROOT, "probes"), broken)
    with open(broken / "nf_hooks.c", "a") as f:
        f.write("\n#error broken on purpose by the test\n")
    d = start_daemon(lab, env={"BRIDGELAB_PROBE_DIR": str(broken)})
    assert wait_for(lambda: any(e.get("event") == "probes ready" for e in d.events()), timeout=30), d.text()
    failed = [e for e in d.events() if e.get("event") == "probe not attached"]
    assert failed and failed[0]["probe"] == "nf" and "broken on purpose" in failed[0]["reason"]
    m = d.metrics()
    assert _metric(m, "bridgelab_probe_attached", probe="nf") == 0
    assert _metric(m, "bridgelab_probe_attached", probe="tc") == 1
    assert _metric(m, "bridgelab_probe_attached", probe="drops") == 1
    # the tracer's failure costs the healer nothing
    lab.x("host", "ip link del veth1")
    assert wait_for(lambda: lab.ping("container1", "172.168.1.12"), timeout=5)
    # the probes re-attach to the new veth once repairs are quiet (0.25 s): traffic is counted again
    assert wait_for(lambda: lab.ping("container1", "192.168.0.2") and _metric(
        d.metrics(), "bridgelab_datapath_packets_total", node="host", interface="veth1", hook="tc_ingress",
        protocol="icmp") >= 1, timeout=10)


def test_doctor_says_which_probes_attach_and_why():
    out = subprocess.run([sys.executable, "-m", "orchestrator", "doctor", "--json"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    c = {x["name"]: x for x in json.loads(out)["checks"]}
    mode = None
    if os.path.exists("/sys/kernel/security/lockdown"):
        mode = re.search(r"\[(\w+)\]", open("/sys/kernel/security/lockdown").read()).group(1)
    reads = mode != "confidentiality"
    assert c["packet reads at netfilter hooks"]["ok"] == reads
    assert c["probe tc"]["ok"] is True and c["probe drops"]["ok"] is True
    assert c["probe nf"]["ok"] is (True if reads else None)
    if not reads:
        assert "confidentiality" in c["probe nf"]["detail"]
    kprobes = os.path.exists("/sys/kernel/tracing/kprobe_events")
    assert c["kprobes"]["ok"] == kprobes


def test_trace_beside_the_daemons_probes(lab, start_daemon, tracer):  # noqa: F811
    """A hook takes one program per priority: the trace finds free ones next to the daemon's."""
    d = start_daemon(lab)
    assert wait_for(lambda: _metric(d.metrics(), "bridgelab_probe_attached", probe="nf") == 1, timeout=30)
    t = tracer(lab, "--node", "container1", "--proto", "icmp", "--count", "1")
    assert "cannot attach" not in t.err
    assert lab.ping("container1", "192.168.0.2")
    req = t.packets()[0]
    assert req["hops"][hop_index(req, "host", hook="snat")]["rewrite"] == "source 172.168.1.11 → 192.168.0.10"
    assert _metric(d.metrics(), "bridgelab_probe_attached", probe="nf") == 1


@pytest.mark.parametrize("fast_bits", [11, 1])  # 1: two fast slots, so most keys overflow to the hash
def test_counts_stay_exact_across_a_heal_in_both_counter_stores(lab, fast_bits):
    """The counters' two stores (per-CPU fast slots and the hash behind them) sum to the truth,
    and a device made anew by a heal has its old counts folded out of the kernel maps, neither
    lost nor counted twice, its fast slots freed."""
    from orchestrator.lab import desired as plan
    from orchestrator.lab import spec
    from orchestrator.probes import links
    from orchestrator.probes.collector import ProbeCollector, fast_entries
    from orchestrator.probes.loader import Probes

    d = plan.desired(spec.load(lab.path), "sandbox")
    p = Probes(lab.name, fast_bits=fast_bits)
    p.load()
    try:
        assert p.sync(d) > 0 and p.attached()["tc"] and p.attached()["nf"], p.attach_errors
        col = ProbeCollector(p, {e.name for v in d.veths for e in (v.a, v.b) if e.master})

        def counts():
            s = col.samples()
            return (s["packets"].get(("host", "veth1", "tc_ingress", "ingress", "icmp", "ipv4"), 0),
                    s["packets"].get(("host", "ens33", "forward", "through", "ipv4", "ipv4"), 0),
                    s["nat"].get(("host", "source", "ipv4"), 0))
        assert lab.ping("container1", "192.168.0.2", count=3)
        assert counts() == (3, 3, 3 if p.read_packet else 0)
        cookie = links.netns_cookie(lab.ns("host"))
        old = json.loads(lab.x("host", "ip -j link show veth1").stdout)[0]["ifindex"]

        def holds_old():
            fast = [e for _, per_cpu in fast_entries(p.table("tc", "tc_fast"), "tc_counts") for e in per_cpu if e]
            return any(e[0] == cookie and e[1] == old for e in fast) or \
                any(k.cookie == cookie and k.ifindex == old for k in p.table("tc", "tc_counts").keys())
        assert holds_old()
        lab.x("host", "ip link del veth1")
        lab.up()  # the reconcile path makes it anew, with a new ifindex
        assert p.sync(d) > 0
        assert col.fold() > 0
        assert not holds_old()
        assert counts()[0] == 3
        assert lab.ping("container1", "192.168.0.2", count=2)
        assert counts() == (5, 5, 5 if p.read_packet else 0)
    finally:
        p.close()


def test_a_veth_pair_is_counted_at_one_end_and_its_peer_mirrors_it(lab, start_daemon):  # noqa: F811
    """The metrics probes attach to the bridge port of container1's pair only; container1's eth1
    gets the mirror of its counts, equal to what tcpdump sees on eth1 itself, both ways."""
    d = start_daemon(lab)
    assert wait_for(lambda: _metric(d.metrics(), "bridgelab_probe_attached", probe="tc") == 1, timeout=30), d.text()
    # the kernel's own list of links (bpftool; Debian's names tcx type 11 and gives no device):
    # 2 per device of the host (veth1, veth2, br0, ens33), none for the containers' eth1
    tcx = [x for x in json.loads(sh(["bpftool", "-j", "link", "show"]).stdout or "[]")
           if x.get("type") in (11, "tcx") and x["prog_id"] in _daemon_prog_ids(d)]
    assert len(tcx) == 8 == _metric(d.metrics(), "bridgelab_probe_links", probe="tc"), tcx
    c1 = lab.ns("container1")
    out_cap, in_cap = Capture(c1, "eth1", "-Q out icmp"), Capture(c1, "eth1", "-Q in icmp")
    before = d.metrics()
    n = 5
    assert lab.ping("container1", "192.168.0.2", count=n)
    seen_out, seen_in = len(out_cap.lines()), len(in_cap.lines())
    assert seen_out == seen_in == n

    def delta(m, **labels):
        return _metric(m, "bridgelab_datapath_packets_total", protocol="icmp", **labels) - \
            _metric(before, "bridgelab_datapath_packets_total", protocol="icmp", **labels)
    assert wait_for(lambda: delta(d.metrics(), node="container1", interface="eth1", hook="tc_egress") == seen_out)
    m = d.metrics()
    assert delta(m, node="container1", interface="eth1", hook="tc_ingress") == seen_in
    assert delta(m, node="host", interface="veth1", hook="tc_ingress") == seen_out
    assert delta(m, node="host", interface="veth1", hook="tc_egress") == seen_in
    assert _metric(m, "bridgelab_datapath_bytes_total", node="container1", interface="eth1", hook="tc_egress",
                   protocol="icmp") == _metric(m, "bridgelab_datapath_bytes_total", node="host", interface="veth1",
                                               hook="tc_ingress", protocol="icmp")
    # and the mirror carries the topology's network label of the end it names
    assert any(k.startswith("bridgelab_datapath_packets_total{") and 'node="container1"' in k
               and 'interface="eth1"' in k for k in m)


def test_the_daemon_loads_its_probes_from_a_compiled_object_and_never_loads_the_compiler(lab, start_daemon,
                                                                                         tmp_path):  # noqa: F811
    """First start: a child compiles and the object is cached; second start: no compile. The
    daemon never maps libbcc or LLVM. A cache entry that is not ours is not loaded."""
    cache = tmp_path / "cache"
    env = {"BRIDGELAB_CACHE_DIR": str(cache)}

    def start():
        d = start_daemon(lab, env=env)
        assert wait_for(lambda: any(e.get("event") == "probes ready" for e in d.events()), timeout=60), d.text()
        ready = next(e for e in d.events() if e.get("event") == "probes ready")
        with open(f"/proc/{d.proc.pid}/maps") as f:
            maps = f.read()
        assert "libbcc" not in maps and "libLLVM" not in maps and "libclang" not in maps
        assert _metric(d.metrics(), "bridgelab_probe_attached", probe="nf") == 1
        return d, ready
    d, ready = start()
    assert ready["compiled"]["cache"] == "miss" and ready["compiled"]["compile_seconds"] > 0
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].stat().st_mode & 0o077 == 0
    d.stop()
    d, ready = start()
    assert ready["compiled"] == {"cache": "hit"}
    # counting works from the cached object: exact against the ping
    before = d.metrics()
    assert lab.ping("container1", "192.168.0.2", count=3)
    assert wait_for(lambda: _metric(d.metrics(), "bridgelab_datapath_packets_total", node="host", interface="veth1",
                                    hook="tc_ingress", protocol="icmp") - _metric(
        before, "bridgelab_datapath_packets_total", node="host", interface="veth1", hook="tc_ingress",
        protocol="icmp") == 3)
    d.stop()
    # a file others may write is never loaded into the kernel: compiled anew, and said
    files[0].chmod(0o666)
    d, ready = start()
    assert ready["compiled"]["cache"] == "miss"
    assert any(e.get("event") == "probe cache entry not used: compiling" and "writable by others" in e["reason"]
               for e in d.events())
    d.stop()


def test_ipv4_multicast_for_a_group_nobody_joined_is_a_free_not_a_drop(lab, start_daemon):  # noqa: F811
    """The bridge floods a multicast datagram to every port; a node that never joined the group
    lets routing free it (ip_rcv_finish_core, NOT_SPECIFIED). That is IPv4's MCAST_NOT_JOINED: a
    healthy lab shows it under the frees by design, never as a drop (the host's IGMPv3 reports
    to 224.0.0.22 did exactly this, each time interfaces came up)."""
    d = start_daemon(lab)
    assert wait_for(lambda: _metric(d.metrics(), "bridgelab_probe_attached", probe="drops") == 1, timeout=30)
    if _metric(d.metrics(), "bridgelab_probe_degraded", probe="drops"):
        pytest.skip("the drop probe cannot tell multicast apart here (no packet reads or no kallsyms)")
    n = 4
    cap = Capture(lab.ns("container2"), "eth2", "udp and dst host 239.7.7.7", count=n)
    before = d.metrics()
    send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1); "
            f"[s.sendto(b'x', ('239.7.7.7', 7777)) for _ in range({n})]")
    lab.x("container1", f'python3 -c "{send}"')
    assert len(cap.lines()) == n   # they did reach container2

    def frees(m):
        return _metric(m, "bridgelab_delivered_frees_total", node="container2", reason="MCAST_NOT_JOINED")
    assert wait_for(lambda: frees(d.metrics()) - frees(before) >= n, timeout=10)
    m = d.metrics()
    assert not [k for k, v in m.items() if k.startswith("bridgelab_drops_total") and v - before.get(k, 0)], \
        [k for k in m if k.startswith("bridgelab_drops_total")]
