"""The containers' processes: started detached in their node's namespace, found again by the
tag they carry (adapters/services.py) when the state file lost them, stopped by pid."""

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
        """running | wrong-ns | dead per service. A service the state does not know of (or knows
        by a pid that is gone) but that carries our tag in the right namespace is adopted."""
        from ...adapters import services
        out, found = {}, None
        for s in eng.d.services:
            rec = eng.st.services.get(s.name)
            here = s.ns is None or s.ns in present
            if here and services.alive(rec, s.ns):
                # the same command: one the file changed is started anew (a reload, an `up`)
                out[s.name] = "running" if tuple(rec.get("argv", s.argv)) == s.argv else "changed"
                continue
            found = services.tagged(eng.d.lab) if found is None else found
            adopt = next((r for r in found.get(s.name, []) if here and services.alive({**r, "ns": s.ns}, s.ns)), None)
            if adopt is not None:
                eng.st.services[s.name] = {**adopt, "ns": s.ns}
                out[s.name] = "running"
            else:
                out[s.name] = "wrong-ns" if services.running(rec) or found.get(s.name) else "dead"
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
            for r in ([rec] if rec else []) + services.tagged(eng.d.lab).get(a.target, []):
                services.stop(r)
            return
        s: ServiceProc = a.payload
        # whatever of it runs elsewhere (a namespace made anew, a lost record): gone first
        old = eng.st.services.pop(s.name, None)
        for r in ([old] if old else []) + services.tagged(eng.d.lab).get(s.name, []):
            services.stop(r)
        rec = services.start(eng.d.lab, s)
        rec["argv"] = list(s.argv)
        await services.settle(eng.d.lab, s, rec)
        # recorded once it serves (a kill -9 before this still finds it by its tag, see observe)
        eng.st.services[s.name] = rec
        eng.st.save()

    async def teardown(self, td) -> None:
        from ...adapters import services
        recs = dict(td.st.services) if td.st else {}
        for name, found in services.tagged(td.lab).items():
            for i, r in enumerate(found):
                recs.setdefault(name if not i else f"{name}#{i + 1}", r)
        for name, rec in recs.items():
            if services.running(rec):
                services.stop(rec)
                td.done.append(f"stop-service {name}")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        f = cx.flow
        where = f"{f.target_addr}:{f.target_port}" if f is not None else "its port"
        return Finding("not_listening", cx.node, f"{cx.node}: service {a.target} is not running: nothing listens on "
                       f"{where}, so connections to it are reset (RST)", cx.up)


KIND = ServiceKind()
