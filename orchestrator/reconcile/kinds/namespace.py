"""Network namespaces, one per lab node: ``bl-<lab>-<node>`` (iproute2's /run/netns layout)."""

from __future__ import annotations

from ...lab.naming import ns_prefixes
from ...lab.resources import Namespace
from .base import P_NS, Action, DiffContext, ExplainContext, Finding, Kind


class NamespaceKind(Kind):
    name = "namespace"
    metric = "namespace"
    verbs = {"create-ns": P_NS, "delete-ns": P_NS}

    def wanted(self, d):
        return d.namespaces

    def diff(self, cx: DiffContext) -> None:
        want = {n.name for n in cx.d.namespaces}
        for name in sorted(cx.obs.namespaces - want):
            cx.add(self.act("delete-ns", None, name, "no longer in the topology"))
        for n in cx.d.namespaces:
            if n.name not in cx.obs.namespaces:
                cx.add(self.act("create-ns", None, n.name, f"node {n.node}", n))
                cx.new_ns.add(n.name)

    async def apply_batch(self, acts: list[Action[Namespace]], eng) -> list[tuple[Action, str]]:
        # one batch: making many namespaces at once costs one thread switch each, not a process
        from ...adapters import netns
        errors: list[tuple[Action, str]] = []
        for verb, fn in (("delete-ns", netns.remove_many), ("create-ns", eng.create_namespaces)):
            these = [a for a in acts if a.verb == verb]
            if not these:
                continue
            try:
                for a in these:
                    eng.rtnl.forget(a.target)
                fn([a.target for a in these])
            except OSError as e:
                errors += [(a, f"OSError: {e}") for a in these]
                continue
            for a in these:
                if verb == "create-ns":
                    eng.namespace_made(a.target)
        return errors

    async def teardown(self, td) -> None:
        """Dropping the lab's namespaces drops everything in them (a veth goes with either end)."""
        from ...adapters import netns
        names = netns.list_names(ns_prefixes(td.lab), half_made=True)
        if td.rtnl is not None:
            for name in names:
                td.rtnl.forget(name)
        td.done += [f"delete-ns {name}" for name in netns.remove_many(names)]

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding("node_missing", cx.node, f"{cx.node}: {a.target} is missing ({a.describe()})", cx.up)


KIND = NamespaceKind()
