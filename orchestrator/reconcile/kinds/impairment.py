"""Link impairments (netem on a link or a network attachment, per direction), by the driver the
kernel allows (adapters/impair.py): changed in place when the topology's netem changes, never by
recreating the link; healed when a qdisc, a queue rule or the delay line goes."""

from __future__ import annotations

from ...lab.naming import lab_file
from ...lab.resources import Impairment
from .base import P_SERVICE, P_SYSCTL, Action, DiffContext, ExplainContext, Finding, Kind

DELAYLINE = "impair"  # its service tag: <lab>/impair


def rules(d) -> list[tuple]:
    """Every queue rule the delay line serves: (impairment, namespace, tag, queue number); the
    numbers are unique in their namespace and stable."""
    from ...adapters.impair import DelayLineDriver
    out, per_ns = [], {}
    for imp in sorted(d.impairments, key=lambda i: i.name):
        if not DelayLineDriver.queued(imp.netem):
            continue
        for ns, tag, _chain, _match in DelayLineDriver.rules_of(imp):
            n = per_ns[ns] = per_ns.get(ns, 0) + 1
            out.append((imp, ns, tag, n))
    return out


def config(d) -> list[dict]:
    return [{"name": f"{i.name} ({'tcp, at the receiver' if tag.startswith('in') else 'at the sender'})",
             "impairment": i.name, "ns": ns, "queue": n, "delay_us": i.netem.delay_us,
             "jitter_us": i.netem.jitter_us, "loss_pct": i.netem.loss_pct, "corrupt_pct": i.netem.corrupt_pct,
             "duplicate_pct": i.netem.duplicate_pct} for i, ns, tag, n in rules(d)]


class ImpairmentKind(Kind):
    name = "impairment"
    metric = "impairment"
    verbs = {"set-impairment": P_SYSCTL, "clear-impairment": P_SYSCTL, "start-delayline": P_SERVICE,
             "stop-delayline": P_SERVICE}

    def wanted(self, d):
        return d.impairments

    async def observe(self, eng, present: set[str]) -> dict | None:
        from ...adapters import impair, services
        d = eng.d
        if not d.impairments and not eng.st.impair:
            return None  # nothing impaired, before or now: no dumps
        drv = impair.driver()
        qd = {}
        # the senders' namespaces, now and before (a dump each, only where impairments are)
        for ns in {i.ns for i in d.impairments} | set(eng.st.impair.get("qdisc_ns", [])):
            if ns is None or ns in present:
                qd[ns] = await eng.rtnl.qdiscs(ns)
        found = {}
        if drv.name == "delayline":
            for ns in {r[1] for r in rules(d)} | set(eng.st.impair.get("rules", [])):
                if ns is None or ns in present:
                    found[ns] = impair.queue_rules(ns, d.lab)
        rec = eng.st.impair.get("delayline")
        running = bool(rec) and services.running(rec)
        if not running:
            procs = services.tagged(d.lab).get(DELAYLINE, [])
            if procs:
                eng.st.impair["delayline"], running = procs[0], True
        return {"driver": drv, "qdiscs": qd, "rules": found, "running": running,
                "config": impair.read_config(lab_file(d.lab, "impair.json"))}

    def diff(self, cx: DiffContext) -> None:
        o = cx.obs.part(self.name)
        if o is None:
            return
        drv = o["driver"]
        want_cfg = {q["name"]: q for q in config(cx.d)}
        for imp in cx.d.impairments:
            if not self._holds(cx, o, imp, want_cfg):
                cx.add(self.act("set-impairment", imp.ns, imp.name, f"{drv.name}: {imp.netem.describe()}", imp,
                                caused_by=cx.cause_of(imp.ns, imp.dev) or cx.cause_of(imp.peer_ns, imp.peer_dev)))
        wanted = {(i.ns, i.dev) for i in cx.d.impairments}
        for ns, qds in o["qdiscs"].items():
            for dev in sorted(cx.d.devices(ns) & set(qds)):
                kind, _ = qds[dev]
                if kind in ("tbf", "netem") and (ns, dev) not in wanted:
                    cx.add(self.act("clear-impairment", ns, dev, f"{kind} qdisc the topology does not have", (ns, dev)))
        want_tags = {(ns, tag) for _i, ns, tag, _n in rules(cx.d)}
        for ns, tags in o["rules"].items():
            for tag in sorted(t for t in tags if (ns, t) not in want_tags):
                cx.add(self.act("clear-impairment", ns, tag, "delay line rule the topology does not have", (ns, tag)))
        need = drv.name == "delayline" and bool(want_cfg)
        if need and not o["running"]:
            cx.add(self.act("start-delayline", cx.d.host_ns, DELAYLINE, "the lab's delay line (NFQUEUE)"))
        elif not need and o["running"]:
            cx.add(self.act("stop-delayline", cx.d.host_ns, DELAYLINE, "no impairment needs it"))

    @staticmethod
    def _holds(cx: DiffContext, o: dict, imp: Impairment, want_cfg: dict) -> bool:
        """What the kernel holds is what the topology says for this direction."""
        if (imp.ns, imp.dev) in cx.recreated or (imp.peer_ns, imp.peer_dev) in cx.recreated:
            return False
        q = o["qdiscs"].get(imp.ns, {}).get(imp.dev)
        if o["driver"].name == "netem":
            return q is not None and q[0] == "netem" and q[1] == cx.st.impair.get("fp", {}).get(imp.name)
        em = imp.netem
        if em.rate_bps:
            if q is None or q[0] != "tbf" or q[1] // 8 != em.rate_bps // 8:
                return False
        elif q is not None and q[0] in ("tbf", "netem"):
            return False
        from ...adapters.impair import DelayLineDriver
        mine = [(ns, tag) for ns, tag, _c, _m in DelayLineDriver.rules_of(imp)]
        if DelayLineDriver.queued(em):
            return all(tag in o["rules"].get(ns, set()) for ns, tag in mine) and all(
                o["config"].get(k) == v for k, v in want_cfg.items() if v["impairment"] == imp.name)
        return not any(tag in o["rules"].get(ns, set()) for ns, tag in mine)

    async def apply(self, a: Action, eng) -> None:
        from ...adapters import impair, services
        drv = impair.driver()
        if a.verb == "set-impairment":
            imp: Impairment = a.payload
            await _configure(eng)
            numbers = {(ns, tag): n for _i, ns, tag, n in rules(eng.d)}
            drv.apply(imp, eng.d.lab, lambda ns, tag: numbers[(ns, tag)])
            if drv.name == "netem":
                eng.st.impair.setdefault("fp", {})[imp.name] = (await eng.rtnl.qdiscs(imp.ns)).get(imp.dev, (0, None))[1]
            for key, nss in (("rules", (imp.ns, imp.peer_ns)), ("qdisc_ns", (imp.ns,))):
                eng.st.impair[key] = sorted(set(eng.st.impair.get(key, [])) | set(nss), key=str)
        elif a.verb == "clear-impairment":
            ns, what = a.payload
            if what.startswith(("in:", "out:")):
                impair.remove_rules(ns, eng.d.lab, what)
            else:
                drv.clear(ns, what, eng.d.lab)
        elif a.verb == "start-delayline":
            impair.write_config(lab_file(eng.d.lab, "impair.json"), config(eng.d))
            for r in services.tagged(eng.d.lab).get(DELAYLINE, []):
                services.stop(r)
            eng.st.impair["delayline"] = services.start(eng.d.lab, _delayline_proc(eng.d))
        else:
            rec = eng.st.impair.pop("delayline", None)
            for r in ([rec] if rec else []) + services.tagged(eng.d.lab).get(DELAYLINE, []):
                services.stop(r)

    async def teardown(self, td) -> None:
        """The delay line goes with the services (it carries the service tag); the qdiscs go with
        the lab's devices; what is left is our queue rules in a shared namespace."""
        from ...adapters import impair
        if td.shared:
            for tag in impair.queue_rules(None, td.lab):
                impair.remove_rules(None, td.lab, tag)
                td.done.append(f"clear-impairment {tag}")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding("impairment_drift", cx.node, f"{a.target}: the link's impairment differs from the topology "
                       f"({a.detail})", cx.up, blocking=False)


async def _configure(eng) -> None:
    """Write the delay line's config and, if it runs, have it take it before `up` goes on."""
    import asyncio
    import json
    import os
    import signal
    import time

    from ...adapters import impair, services
    path = lab_file(eng.d.lab, "impair.json")
    want = config(eng.d)
    if impair.read_config(path) == {q["name"]: q for q in want}:
        return
    impair.write_config(path, want)
    rec = eng.st.impair.get("delayline")
    if not rec or not services.running(rec):
        return
    mtime = os.stat(path).st_mtime
    os.kill(rec["pid"], signal.SIGHUP)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            with open(lab_file(eng.d.lab, "impair-stats.json")) as f:
                if json.load(f).get("_config_mtime") == mtime:
                    return
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.01)


def _delayline_proc(d):
    import sys

    from ...lab.resources import ServiceProc
    return ServiceProc("host", d.host_ns, DELAYLINE, (sys.executable, "-m", "orchestrator.impair", d.lab,
                                                       lab_file(d.lab, "impair.json")), "/")


KIND = ImpairmentKind()
