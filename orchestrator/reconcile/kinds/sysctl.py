"""Sysctls, each justified where it is desired (lab/desired.py). In host mode the value found
before is recorded and put back on `down`."""

from __future__ import annotations

from ...lab.resources import Sysctl
from .base import P_SYSCTL, Action, DiffContext, ExplainContext, Finding, Kind


class SysctlKind(Kind):
    name = "sysctl"
    metric = "sysctl"
    verbs = {"set-sysctl": P_SYSCTL}

    def wanted(self, d):
        return d.sysctls

    def observe(self, eng, present: set[str]) -> dict:
        from ...adapters import sysctl
        return {(s.ns, s.key): (sysctl.read(s.ns, s.key) if s.ns is None or s.ns in present else None)
                for s in eng.d.sysctls}

    def diff(self, cx: DiffContext) -> None:
        have = cx.obs.part(self.name, {})
        for s in cx.d.sysctls:
            cur = have.get((s.ns, s.key))
            if cur != s.value:
                cx.add(self.act("set-sysctl", s.ns, s.key, f"{'unset' if cur is None else cur} -> {s.value}", s,
                                caused_by=f"namespace {s.ns}" if s.ns in cx.new_ns else None))

    async def apply(self, a: Action[Sysctl], eng) -> None:
        from ...adapters import sysctl
        s = a.payload
        if s.ns is None and s.key not in eng.st.saved_sysctls:
            old = sysctl.read(None, s.key)
            if old is not None:
                eng.st.saved_sysctls[s.key] = old
        sysctl.write(s.ns, s.key, s.value)

    async def teardown(self, td) -> None:
        from ...adapters import sysctl
        if not td.shared:
            return
        for key, value in td.st.saved_sysctls.items():
            if sysctl.read(None, key) is not None:
                sysctl.write(None, key, value)
                td.done.append(f"restore-sysctl {key}={value}")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        s: Sysctl = a.payload
        have = cx.obs.part(self.name, {}).get((s.ns, s.key))
        if s.key.endswith(".ip_forward"):
            return Finding("ip_forward", cx.node, f"{cx.node} does not forward packets: {s.key}={have}, so "
                           f"nothing is routed between {cx.bridge} and {cx.uplink}",
                           f"{cx.in_ns(a.ns)}sysctl -w {s.key}={s.value}   (or: {cx.up})")
        return Finding("sysctl", cx.node, f"{cx.node}: {s.key}={have}, the lab needs {s.value}",
                       f"{cx.in_ns(a.ns)}sysctl -w {s.key}={s.value}   (or: {cx.up})")


KIND = SysctlKind()
