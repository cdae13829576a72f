"""Sysctls, each justified where it is desired (lab/desired.py). In the namespace bridgelab runs
in (host mode) other labs may need the same key: the value found before the first of them is
put back when the last one goes (reconcile/shared.py)."""

from __future__ import annotations

from ...lab.resources import Sysctl
from .base import P_SYSCTL, Action, DiffContext, ExplainContext, Finding, Kind


class SysctlKind(Kind):
    name = "sysctl"
    metric = "sysctl"
    verbs = {"set-sysctl": P_SYSCTL, "share-sysctl": P_SYSCTL}

    def wanted(self, d):
        return d.sysctls

    def observe(self, eng, present: set[str]) -> dict:
        from ...adapters import sysctl
        from .. import shared
        values = {(s.ns, s.key): (sysctl.read(s.ns, s.key) if s.ns is None or s.ns in present else None)
                  for s in eng.d.sysctls}
        if any(s.ns is None for s in eng.d.sysctls):  # host mode: which of them this lab has claimed
            values["claimed"] = shared.claimed(eng.d.lab)
        return values

    def diff(self, cx: DiffContext) -> None:
        have = cx.obs.part(self.name, {})
        for s in cx.d.sysctls:
            cur = have.get((s.ns, s.key))
            if cur != s.value:
                cx.add(self.act("set-sysctl", s.ns, s.key, f"{'unset' if cur is None else cur} -> {s.value}", s,
                                caused_by=f"namespace {s.ns}" if s.ns in cx.new_ns else None))
            elif s.ns is None and s.key not in have.get("claimed", set()):
                # right already (another lab set it): say that this lab needs it too, so that
                # lab's `down` leaves it alone
                cx.add(self.act("share-sysctl", s.ns, s.key, f"{cur}, also needed by lab {cx.d.lab}", s))

    async def apply(self, a: Action[Sysctl], eng) -> None:
        from ...adapters import sysctl
        from .. import shared
        s = a.payload
        if s.ns is None:
            shared.claim(eng.d.lab, s.key, sysctl.read(None, s.key), eng.st.saved_sysctls.get(s.key))
        if a.verb == "set-sysctl":
            sysctl.write(s.ns, s.key, s.value)

    async def teardown(self, td) -> None:
        from ...adapters import sysctl
        from .. import shared
        if not td.shared:
            return
        for key, value, others in shared.release(td.lab):
            if others:
                td.done.append(f"keep-sysctl {key} (still needed by lab {', '.join(others)})")
            elif value is not None and sysctl.read(None, key) is not None:
                sysctl.write(None, key, value)
                td.done.append(f"restore-sysctl {key}={value}")

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        s: Sysctl = a.payload
        have = cx.obs.part(self.name, {}).get((s.ns, s.key))
        if s.key.endswith(".ip_forward") or s.key.endswith(".forwarding"):
            between = f"{cx.bridge} and {cx.uplink}" if a.ns == cx.d.host_ns else "its interfaces"
            return Finding("ip_forward", cx.node, f"{cx.node} does not forward packets: {s.key}={have}, so "
                           f"nothing is routed between {between}",
                           f"{cx.in_ns(a.ns)}sysctl -w {s.key}={s.value}   (or: {cx.up})")
        return Finding("sysctl", cx.node, f"{cx.node}: {s.key}={have}, the lab needs {s.value}",
                       f"{cx.in_ns(a.ns)}sysctl -w {s.key}={s.value}   (or: {cx.up})")


KIND = SysctlKind()
