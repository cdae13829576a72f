"""`bridgelab check`: the topology's expectations (`expect:`), each probed once, in parallel; for
each that does not hold, explain's verdict and fix. The daemon runs the same checks on a timer
(daemon/checker.py). The probes are probe.py, the matrix matrix.py, the output render.py."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ...errors import InputError
from ...lab.resources import Desired
from ...lab.spec import Expectation, Spec
from ..explain.flow import Flow, resolve
from . import probe

WORKERS = 8   # probes at once: each is one socket in one thread, waiting on the network


@dataclass
class Result:
    name: str
    src: str
    to: str
    proto: str
    expected: str            # works, blocked
    state: str = ""          # what the probe saw: replied, connected, refused, timeout, ...
    holds: bool = False
    seconds: float = 0.0
    packets: int = 0
    skipped: str = ""        # why it was not checked here (a sandbox node in host mode)
    cause: str = ""          # explain's cause id, for one that does not hold
    verdict: str = ""
    fix: str = ""
    where: str = ""
    flow: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "ok" if self.holds else "failed"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status
        return d


def flow_of(spec: Spec, d: Desired, e: Expectation) -> Flow:
    """The flow an expectation means, as explain resolves it. A node's own loopback (client →
    127.0.0.1:9999: the LAN cannot reach the host's loopback-bound port) is that node's."""
    try:
        return resolve(spec, d, e.src, e.to, None, e.proto)   # the port is in e.to
    except InputError:
        host = e.to.rsplit(":", 1)[0].strip("[]") if e.port else e.to
        if host in ("127.0.0.1", "::1") and e.src != "host" and e.src in d.nodes:
            return Flow(e.src, d.nodes[e.src], host, e.to, host, e.proto, e.port, e.src, e.src, host, e.port,
                        False, False, 6 if ":" in host else 4)
        raise


def run_probe(flow: Flow, host_ns: str | None) -> probe.Outcome:
    if flow.proto == "icmp":
        out = probe.icmp(flow.src_ns, flow.dst_addr)
    elif flow.proto == "tcp":
        out = probe.tcp(flow.src_ns, flow.dst_addr, flow.port)
    else:
        out = probe.udp(flow.src_ns, flow.dst_addr, flow.port)
    if flow.proto == "tcp" and out.works:
        time.sleep(0.005)   # our last ACK on its way through the host
    try:
        probe.forget(host_ns, flow.proto, out.src, flow.dst_addr, out.sport, flow.port)
    except Exception:  # a conntrack entry left to time out is no reason to fail a check
        pass
    return out


def check_one(spec: Spec, d: Desired, e: Expectation) -> Result:
    r = Result(e.name, e.src, e.to, e.proto, e.result, where=e.where)
    if e.src not in d.nodes:
        r.skipped = f"{e.src} is a sandbox node; this lab runs in host mode"
        return r
    try:
        flow = flow_of(spec, d, e)
    except InputError as err:
        r.state, r.verdict, r.cause = "error", str(err), "bad_flow"
        r.fix = f"change {e.where}.to"
        return r
    r.flow = {"src_addr": flow.src_addr, "dst_addr": flow.dst_addr, "port": flow.port}
    t0 = time.monotonic()
    try:
        out = run_probe(flow, d.host_ns)
    except OSError as err:   # the source's namespace is gone (the lab is not up, or healing)
        r.state, r.seconds = f"error {err.strerror or err}", time.monotonic() - t0
        return r
    r.state, r.seconds, r.packets = out.state, out.seconds, out.packets
    r.holds = out.works == (e.result == "works")
    return r


def check(spec: Spec, d: Desired, exps: list[Expectation] | None = None) -> list[Result]:
    exps = list(spec.expect if exps is None else exps)
    if not exps:
        return []
    with ThreadPoolExecutor(min(WORKERS, len(exps))) as pool:
        return list(pool.map(lambda e: check_one(spec, d, e), exps))


def why(spec: Spec, d: Desired, r: Result, up: str, live: bool = True) -> None:
    """Fill in the cause, verdict and fix of a result that does not hold: explain's, for a flow
    that should work; for one that should be blocked and works, what let it through."""
    if r.holds or r.skipped or r.cause:
        return
    if r.expected == "blocked":
        r.cause = "works_but_blocked_expected"
        r.verdict = f"{r.src} → {r.to} ({r.proto}) {r.state}, but the topology expects it blocked"
        r.fix = "find what opened it (bridgelab trace --node " + r.src + "), or change the expectation"
        return
    from ..explain import explain
    e = next(x for x in spec.expect if x.name == r.name)
    flow = flow_of(spec, d, e)
    # the static checks first (the lab's drift and design on the way: cheap); the live half,
    # an eBPF trace of the flow, only when they find nothing (unless told not to)
    rep = static_cause(spec, d, flow, r.state, up)
    if rep is None and live:
        rep = explain(spec, d, flow, up)
    if rep is None:
        rep = {"cause": "unexplained", "verdict": f"{r.src} → {r.to} ({r.proto}): {r.state}; the static checks "
               "find nothing on its way", "fix": f"bridgelab explain {r.src} {r.to} --proto {r.proto}"}
    r.cause, r.verdict, r.fix = rep.get("cause") or "", rep.get("verdict") or "", rep.get("fix") or ""


def static_cause(spec: Spec, d: Desired, flow: Flow, state: str, up: str) -> dict | None:
    """Explain's verdict from its static checks alone (the lab's drift and design on the flow's
    path, no probes loaded), or None when they find nothing that blocks it."""
    import asyncio
    from ..explain.live import Live
    from ..explain.static import static
    from ..explain.verdict import verdict
    findings = asyncio.run(static(flow, spec, d, up))
    if not any(f.blocking for f in findings):
        return None
    return verdict(flow, findings, Live(result=state), d)
