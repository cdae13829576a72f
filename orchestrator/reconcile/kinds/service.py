"""The containers' processes (the seed's `python3 -m http.server 80`): started detached in the
container's namespace, tracked by pid *and* start time (a reused pid is never mistaken for
ours), stopped by pid."""

from __future__ import annotations

from ...lab.resources import ServiceProc
from .base import P_SERVICE, Action, DiffContext, ExplainContext, Finding, Kind


class ServiceKind(Kind):
    name = "service"
    metric = "service"
    verbs = {"start-service": P_SERVICE, "stop-service": P_SERVICE}

    def wanted(self, d):
        return d.services

    def observe(self, eng, present: set[str]) -> dict:
        from ...adapters import services
        out = {}
        for s in eng.d.services:
            rec = eng.st.services.get(s.name)
            if (s.ns is None or s.ns in present) and services.alive(rec, s.ns):
                out[s.name] = "running"
            else:
                out[s.name] = "wrong-ns" if services.running(rec) else "dead"
        return out

    def diff(self, cx: DiffContext) -> None:
        have = cx.obs.part(self.name, {})
        want = {s.name for s in cx.d.services}
        for name in sorted(set(cx.st.services) - want):
            cx.add(self.act("stop-service", cx.st.services[name].get("ns"), name, "no longer in the topology"))
        for s in cx.d.services:
            status = have.get(s.name, "dead")
            if status != "running":
                cx.add(self.act("start-service", s.ns, s.name, " ".join(s.argv) + f" ({status})", s,
                                caused_by=f"namespace {s.ns}" if s.ns in cx.new_ns else None))

    async def apply(self, a: Action, eng) -> None:
        from ...adapters import services
        if a.verb == "stop-service":
            rec = eng.st.services.pop(a.target, None)
            if rec:
                services.stop(rec)
            return
        s: ServiceProc = a.payload
        old = eng.st.services.get(s.name)
        if old:
            services.stop(old)
        eng.st.services[s.name] = services.start(eng.d.lab, s)
        if s.port:  # done means serving: a curl right after `up` must not be refused
            await services.listening(s.ns, s.port)

    async def teardown(self, td) -> None:
        from ...adapters import services
        for name, rec in (td.st.services if td.st else {}).items():
            services.stop(rec)
            td.done.append(f"stop-service {name}")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        f = cx.flow
        where = f"{f.target_addr}:{f.target_port}" if f is not None else "its port"
        return Finding("not_listening", cx.node, f"{cx.node}: service {a.target} is not running: nothing listens on "
                       f"{where}, so connections to it are reset (RST)", cx.up)


KIND = ServiceKind()
