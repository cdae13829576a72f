"""What the probes cost: TCP throughput (iperf3) from container1 to the upstream "internet" host,
through the bridge, the host's FORWARD and MASQUERADE, side by side in one run:

  none     no probes
  metrics  the daemon's probes (counters in kernel maps)
  trace    `bridgelab trace` with a filter matching the iperf3 flow (every packet an event)
  tcpdump  tcpdump on the same host interfaces (veth1 and the uplink), writing to /dev/null
  NAME     (--before NAME=TREE, repeatable) the metrics probes of an earlier checkout, held by a
           child running that tree's code: each design change measured in the same rounds
  floor    empty programs at every tc and netfilter point the metrics probes use: what being
           there at all costs (the kernel's dispatch), below which no counter design can go

Runs are interleaved (none, metrics, trace, tcpdump, none, ...) and reported as ratios to `none`
of the same run: this machine is noisy. Also: the kernel's own count of the probes' cost per run
(BPF_ENABLE_STATS, held only for the measurement), and the highest event rate the trace pipeline
takes into Python without losing an event (UDP at increasing packet rates).

    .venv/bin/python bench/probe_overhead.py [--repeat 3] [--seconds 4]
"""

import argparse
import ctypes as ct
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

from orchestrator import logs  # noqa: E402
from orchestrator.lab import desired as plan  # noqa: E402
from orchestrator.lab import spec  # noqa: E402
from orchestrator.probes import links  # noqa: E402
from orchestrator.probes.loader import Probes, TraceFilter  # noqa: E402

UPSTREAM = "203.0.113.10"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def udp_small(lab: str, seconds: float) -> dict:
    """64-byte UDP datagrams as fast as the sender can (iperf3 -b 0): packets per second that
    arrive, and the sender host's CPU (iperf3's own count)."""
    cmd = ["ip", "netns", "exec", f"bl-{lab}-container1", "iperf3", "-c", UPSTREAM, "-t", str(seconds), "-J", "-u",
           "-l", "64", "-b", "0"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 20).stdout)
    s = out["end"]["sum"]
    return {"pps": (s["packets"] - s["lost_packets"]) / s["seconds"],
            "sender_cpu_percent": out["end"]["cpu_utilization_percent"]["host_total"]}


def iperf(lab: str, seconds: float, udp_pps: int = 0) -> dict:
    cmd = ["ip", "netns", "exec", f"bl-{lab}-container1", "iperf3", "-c", UPSTREAM, "-t", str(seconds), "-J"]
    if udp_pps:
        cmd += ["-u", "-l", "100", "-b", str(udp_pps * 100 * 8)]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 20).stdout)
    end = out["end"]
    if udp_pps:
        return {"packets": end["sum"]["packets"], "lost": end["sum"]["lost_packets"]}
    return {"bps": end["sum_received"]["bits_per_second"]}


# the floor's programs: return at once. The tc one keeps the namespace placeholder the loader
# patches per namespace (attach.tc_prog), so it goes where the real one would.
from orchestrator.probes.attach import _PLACEHOLDER  # noqa: E402
_LD_PLACEHOLDER = bytes([0x18, 0x01, 0, 0]) + (_PLACEHOLDER & 0xFFFFFFFF).to_bytes(4, "little") + \
    bytes(4) + (_PLACEHOLDER >> 32).to_bytes(4, "little")
EMPTY_TC = _LD_PLACEHOLDER + bytes([0xB7, 0, 0, 0]) + (-1).to_bytes(4, "little", signed=True) + bytes([0x95]) + bytes(7)
EMPTY_NF = bytes([0xB7, 0, 0, 0]) + (1).to_bytes(4, "little") + bytes([0x95]) + bytes(7)


def floor_probes(lab: str) -> Probes:
    """The metrics probes with every tc and netfilter program replaced by an empty one."""
    from orchestrator.probes import objects
    p = Probes(lab)
    p.load()
    tc, nf = p.families["tc"], p.families["nf"]
    for fn in tc.insns:
        tc.insns[fn] = EMPTY_TC
    for fn, fd in list(nf.progs.items()):
        os.close(fd)
        nf.progs[fn] = objects.prog_load(32, EMPTY_NF, fn, "GPL", links.attach_type("BPF_NETFILTER"))
        nf.owned[nf.owned.index(fd)] = nf.progs[fn]
    return p


_HOLD = """
import sys
from orchestrator.lab import desired as plan, spec
from orchestrator.probes.loader import Probes
p = Probes(sys.argv[1])
p.load()
p.sync(plan.desired(spec.load(sys.argv[2]), "sandbox"))
print("attached", flush=True)
sys.stdin.read()
p.close()
"""
BEFORE: dict[str, str] = {}   # mode name -> an earlier checkout


class Mode:
    def __init__(self, name, lab, desired, path):
        self.name, self.lab, self.d, self.path = name, lab, desired, path
        self.procs, self.probes = [], None

    def __enter__(self):
        if self.name in ("metrics", "floor"):
            self.probes = Probes(self.lab) if self.name == "metrics" else floor_probes(self.lab)
            if self.name == "metrics":
                self.probes.load()
            self.probes.sync(self.d)
        elif self.name in BEFORE:
            p = subprocess.Popen([sys.executable, "-c", _HOLD, self.lab, self.path], cwd=BEFORE[self.name],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.procs.append(p)
            if p.stdout.readline().strip() != "attached":
                raise RuntimeError(f"the probes of {BEFORE[self.name]} did not attach")
        elif self.name == "trace":
            p = subprocess.Popen([sys.executable, "-m", "orchestrator", "trace", "-f", self.path, "--json",
                                  "--proto", "tcp", "--port", "5201"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            self.procs.append(p)
            while "tracing lab" not in p.stderr.readline():
                pass
        elif self.name == "tcpdump":
            for dev in ("veth1", "ens33"):
                p = subprocess.Popen(["ip", "netns", "exec", f"bl-{self.lab}-host", "tcpdump", "-i", dev, "-nn", "-s",
                                      "0", "-w", "/dev/null"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                self.procs.append(p)
                while "listening on" not in p.stderr.readline():
                    pass
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            if p.stdin:   # the before holder: closes its probes when its stdin closes
                p.stdin.close()
                p.wait(timeout=30)
                continue
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.probes:
            self.probes.close()


def cost_per_run(lab, d, seconds) -> dict:
    """ns per program run, as the kernel counts it, with the metrics probes under iperf3 load;
    and per forwarded packet (64-byte UDP: every program run of every family, summed, over the
    packets the sender sent): the added cost of the probes on a forwarded packet's whole path."""
    p = Probes(lab)
    p.load()
    p.sync(d)
    fd = links.enable_run_stats()
    p.stats_enabled = True
    try:
        before = p.run_stats()
        iperf(lab, seconds)
        after = p.run_stats()
        cmd = ["ip", "netns", "exec", f"bl-{lab}-container1", "iperf3", "-c", UPSTREAM, "-t", str(seconds), "-J",
               "-u", "-l", "64", "-b", "0"]
        udp_before = p.run_stats()
        sent = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 20).stdout)
        udp_after = p.run_stats()
    finally:
        os.close(fd)
        p.close()
    out = {}
    for fam in after:
        ns = after[fam][0] - before[fam][0]
        runs = after[fam][1] - before[fam][1]
        out[fam] = {"runs": runs, "ns_per_run": round(ns / runs, 1) if runs else None}
    packets = sent["end"]["sum"]["packets"]
    ns = sum(udp_after[f][0] - udp_before[f][0] for f in udp_after)
    runs = sum(udp_after[f][1] - udp_before[f][1] for f in udp_after)
    out["per_forwarded_udp64_packet"] = {
        "packets_sent": packets, "ns": round(ns / packets, 1) if packets else None,
        "runs": round(runs / packets, 2) if packets else None,
        "by_family_ns": {f: round((udp_after[f][0] - udp_before[f][0]) / packets, 1) for f in udp_after} if packets else {}}
    return out


def event_rate(lab, d, seconds, rates) -> list[dict]:
    """Trace mode in-process, events counted by the ring buffer callback (what `bridgelab trace`
    receives before assembling), UDP packets at increasing rates; lost events from the kernel."""
    from bcc.libbcc import lib
    rows = []
    for pps in rates:
        p = Probes(lab, trace=TraceFilter(proto=17, port=5201), ring_pages=1024)
        p.load()
        p.sync(d)
        got = [0]

        def cb(_c, _d, _s):
            got[0] += 1
            return 0
        for fam, ring in (("tc", "tc_events"), ("nf", "nf_events"), ("drops", "drop_events")):
            p.families[fam].bpf[ring].open_ring_buffer(cb)
        client = subprocess.Popen(["ip", "netns", "exec", f"bl-{lab}-container1", "iperf3", "-c", UPSTREAM, "-t",
                                   str(seconds), "-u", "-l", "100", "-b", str(pps * 800), "-J"],
                                  stdout=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        mgrs = [p.families[f].bpf._ringbuf_manager for f in ("tc", "nf", "drops")]
        while client.poll() is None:
            n = sum(max(0, lib.bpf_consume_ringbuf(m)) for m in mgrs)
            if not n:
                lib.bpf_poll_ringbuf(mgrs[0], 5)
        for m in mgrs:
            lib.bpf_consume_ringbuf(m)
        took = time.monotonic() - t0
        res = json.loads(client.stdout.read())["end"]["sum"]
        lost = sum(int(x) for fam, t in (("tc", "tc_lost"), ("nf", "nf_lost"), ("drops", "drop_lost"))
                   for x in p.table(fam, t)[0])
        p.close()
        rows.append({"udp_pps": pps, "packets": res["packets"], "events": got[0], "lost_events": lost,
                     "events_per_second": round(got[0] / took), "events_per_packet": round(got[0] / max(1, res["packets"]), 1)})
        if lost:
            break
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rates", type=int, nargs="*", default=[2000, 5000, 10000, 20000, 40000])
    ap.add_argument("--no-udp", action="store_true", help="leave out the 64-byte UDP packet-rate runs")
    ap.add_argument("--ipv6", action="store_true",
                    help="the dual-stack seed, traffic over IPv6 to the internet stand-in through NAT66")
    ap.add_argument("--no-extras", action="store_true", help="throughput and packet rate only (no cost per "
                    "run, no trace event rate)")
    ap.add_argument("--modes", nargs="+", default=["none", "metrics", "trace", "tcpdump"],
                    help="none, metrics, trace, tcpdump, floor, or a --before name; none is always run: the baseline")
    ap.add_argument("--before", action="append", default=[], metavar="NAME=TREE",
                    help="an earlier checkout whose metrics probes run as mode NAME (repeatable)")
    args = ap.parse_args()
    global UPSTREAM
    for b in args.before:
        name, _, tree = b.partition("=")
        BEFORE[name] = os.path.abspath(tree)
    unknown = set(args.modes) - {"none", "metrics", "trace", "tcpdump", "floor"} - set(BEFORE)
    if unknown:
        ap.error(f"unknown modes {sorted(unknown)} (a checkout's mode needs --before NAME=TREE)")
    if args.ipv6:
        UPSTREAM = "2001:db8:ff::10"   # examples/seed-dualstack.yaml sandbox.internet6
    logs.configure("warning")  # JSON on stdout is the result; the probes' logs stay out of it
    lab = "b" + secrets.token_hex(3)
    tmp = tempfile.mkdtemp()
    with open(os.path.join(ROOT, "examples", "seed-dualstack.yaml" if args.ipv6 else "seed.yaml")) as f:
        sp = yaml.safe_load(f)
    sp["lab"] = lab
    path = os.path.join(tmp, "lab.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(sp, f)
    cli = [sys.executable, "-m", "orchestrator"]
    subprocess.run([*cli, "up", "-f", path], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    server = subprocess.Popen(["ip", "netns", "exec", f"bl-{lab}-internet", "iperf3", "-s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        d = plan.desired(spec.load(path), "sandbox")
        modes = ["none"] + [m for m in args.modes if m != "none"]
        bps = {m: [] for m in modes}
        pps: dict = {m: [] for m in modes}
        cpu: dict = {m: [] for m in modes}
        for _ in range(args.repeat):
            for m in modes:
                with Mode(m, lab, d, path):
                    bps[m].append(iperf(lab, args.seconds)["bps"])
                    if not args.no_udp:
                        u = udp_small(lab, args.seconds)
                        pps[m].append(u["pps"])
                        cpu[m].append(u["sender_cpu_percent"])
        med = {m: statistics.median(v) for m, v in bps.items()}
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M"), "before": BEFORE or None,
            "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release},
            "topology": "seed-dualstack, traffic over IPv6" if args.ipv6 else "seed, IPv4",
            "throughput_gbps_median": {m: round(v / 1e9, 2) for m, v in med.items()},
            "ratio_to_none": {m: round(v / med["none"], 3) for m, v in med.items()},
            # each round runs every mode back to back: a ratio within a round cancels the slow drift
            # of this machine's speed that medians over the whole run still carry
            "ratio_to_none_median_of_rounds": {m: round(statistics.median(x / n for x, n in zip(v, bps["none"])), 3)
                                               for m, v in bps.items()},
            "runs_gbps": {m: [round(x / 1e9, 2) for x in v] for m, v in bps.items()},
            **({"udp64": {
                "pps_median": {m: round(statistics.median(v)) for m, v in pps.items()},
                "ratio_to_none_median_of_rounds": {m: round(statistics.median(x / n for x, n in zip(v, pps["none"])), 3)
                                                   for m, v in pps.items()},
                "sender_cpu_percent_median": {m: round(statistics.median(v), 1) for m, v in cpu.items()},
            }} if not args.no_udp else {}),
        }
        if not args.no_extras:
            result["cost_per_run"] = cost_per_run(lab, d, args.seconds)
            result["trace_event_rate"] = event_rate(lab, d, args.seconds, args.rates)
            ok = [r for r in result["trace_event_rate"] if r["lost_events"] == 0]
            result["max_events_per_second_without_loss"] = max((r["events_per_second"] for r in ok), default=0)
        print(json.dumps(result, indent=1))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        subprocess.run([*cli, "down", "--lab", lab], cwd=ROOT, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
