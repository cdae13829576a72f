"""Desired vs observed -> the fewest actions, applied by phase through the kernel adapters.

``diff`` is pure (unit-tested without root); ``Engine.reconcile`` observes, diffs and applies.
The same call serves ``up``, adoption after a restart and healing: there is no other path that
changes the kernel.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from . import model as m
from .model import ConflictError
from . import logs, netns
from .adapters import forward, nft, services, sysctl
from .adapters.rtnl import NsState, RouteEntry, Rtnl
from .state import State

log = logs.get("bridgelab.reconcile")

# Phases run in order; the actions of one phase run concurrently.
P_NS, P_UNLINK, P_BRIDGE, P_VETH, P_LINK, P_PORT, P_ADDR, P_ROUTE, P_SYSCTL, P_NFT, P_SERVICE = range(11)


@dataclass(frozen=True)
class Action:
    phase: int
    verb: str  # create-ns, delete-ns, delete-link, create-bridge, create-veth, set-link, ...
    ns: str | None
    target: str
    detail: str = ""
    obj: object = field(default=None, compare=False, hash=False)

    def describe(self) -> str:
        where = "" if self.phase == P_NS else f" in {self.ns or '(current netns)'}"
        return f"{self.verb} {self.target}{where}" + (f": {self.detail}" if self.detail else "")

    def as_json(self) -> dict:
        return {"verb": self.verb, "ns": self.ns, "target": self.target, "detail": self.detail}


@dataclass
class Observed:
    namespaces: set[str]
    ns: dict[str | None, NsState]
    sysctls: dict[tuple[str | None, str], str | None]
    tables: dict[tuple[str | None, str, str], str | None]  # -> fingerprint, None if absent
    services: dict[str, str]  # name -> running | wrong-ns | dead
    gates: list[forward.Gate] = field(default_factory=list)  # foreign forward chains, policy drop

    def links(self, ns: str | None) -> NsState:
        return self.ns.get(ns) or NsState.fresh()


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _owned(d: m.Desired, ns: str | None, alias: str | None) -> bool:
    if ns is not None and ns.startswith(f"bl-{d.lab}-"):
        return True  # a namespace of the lab's own: everything in it is ours
    return bool(alias) and alias.startswith(f"{m.ALIAS_PREFIX}{d.lab}:")


def diff(d: m.Desired, o: Observed, st: State) -> list[Action]:
    acts: list[Action] = []
    add = acts.append
    want_ns = {n.name for n in d.namespaces}
    for name in sorted(o.namespaces - want_ns):
        add(Action(P_NS, "delete-ns", None, name, "no longer in the topology"))
    for n in d.namespaces:
        if n.name not in o.namespaces:
            add(Action(P_NS, "create-ns", None, n.name, f"node {n.node}"))

    recreated: set[tuple[str | None, str]] = set()  # links that will be new: no address, down
    created_up: set[tuple[str | None, str]] = set()

    def conflict(ns, name, what):
        raise ConflictError(
            f"{ns or 'the current netns'} already has a link '{name}' that bridgelab lab {d.lab} "
            f"did not create ({what}); rename it or change the topology")

    for b in d.bridges:
        cur = o.links(b.ns).links.get(b.name)
        if cur is not None and cur.kind != "bridge":
            if not _owned(d, b.ns, cur.alias):
                conflict(b.ns, b.name, f"kind {cur.kind}")
            add(Action(P_UNLINK, "delete-link", b.ns, b.name, f"is a {cur.kind}, want a bridge"))
            cur = None
        elif cur is not None and not _owned(d, b.ns, cur.alias):
            conflict(b.ns, b.name, "a bridge without our alias")
        if cur is None:
            add(Action(P_BRIDGE, "create-bridge", b.ns, b.name, obj=b))
            recreated.add((b.ns, b.name))
            created_up.add((b.ns, b.name))

    for v in d.veths:
        ends = [o.links(e.ns).links.get(e.name) if (e.ns is None or e.ns in o.namespaces) else None
                for e in v.ends]
        a, b = ends
        intact = (a is not None and b is not None and a.kind == "veth" and b.kind == "veth"
                  and a.peer_index == b.index and b.peer_index == a.index)
        if not intact:
            for e, cur in zip(v.ends, ends):
                if cur is None:
                    continue
                if not _owned(d, e.ns, cur.alias):
                    conflict(e.ns, e.name, f"kind {cur.kind}")
                if (e.ns, e.name) not in {(x.ns, x.target) for x in acts if x.verb == "delete-link"}:
                    add(Action(P_UNLINK, "delete-link", e.ns, e.name, "half of a broken veth pair"))
            add(Action(P_VETH, "create-veth", v.a.ns, v.a.name, f"peer {v.b.name} in {v.b.ns}", obj=v))
            recreated.update({(v.a.ns, v.a.name), (v.b.ns, v.b.name)})
            created_up.add((v.a.ns, v.a.name))
            for e in v.ends:
                if e.hairpin:
                    add(Action(P_PORT, "set-hairpin", e.ns, e.name, "on", obj=e))
            continue
        for e, cur in zip(v.ends, ends):
            if e.master is not None:
                master = o.links(e.ns).by_index(cur.master)
                if master is None or master.name != e.master or (e.ns, e.master) in recreated:
                    add(Action(P_LINK, "set-master", e.ns, e.name, e.master, obj=e))
                if e.hairpin and (not cur.hairpin or master is None or master.name != e.master):
                    add(Action(P_PORT, "set-hairpin", e.ns, e.name, "on", obj=e))

    for ns, name in d.up:
        if (ns, name) in created_up:
            continue
        cur = o.links(ns).links.get(name)
        if (ns, name) in recreated or cur is None or not cur.up:
            add(Action(P_LINK, "set-up", ns, name))

    for a in d.addresses:
        if (a.ns, a.dev) in recreated or (a.dev, a.iface) not in o.links(a.ns).addresses:
            add(Action(P_ADDR, "add-address", a.ns, a.dev, str(a.iface), obj=a))

    for r in d.routes:
        st_ns = o.links(r.ns)
        dev = st_ns.links.get(r.dev)
        have = [x for x in st_ns.routes if x.dst == r.dst]
        ok = (dev is not None and (r.ns, r.dev) not in recreated
              and any(x.gateway == r.gateway and x.oif == dev.index for x in have))
        if not ok:
            add(Action(P_ROUTE, "replace-route", r.ns, str(r.dst), f"via {r.gateway} dev {r.dev}", obj=r))
    want_routes = {(r.ns, r.dst) for r in d.routes}
    for ns, st_ns in o.ns.items():
        if ns is None:
            continue  # the current netns may hold other labs' routes; we add none there
        for x in st_ns.routes:
            if x.proto == m.ROUTE_PROTO and (ns, x.dst) not in want_routes:
                add(Action(P_ROUTE, "delete-route", ns, str(x.dst), "no longer in the topology", obj=x))

    for s in d.sysctls:
        if o.sysctls.get((s.ns, s.key)) != s.value:
            add(Action(P_SYSCTL, "set-sysctl", s.ns, s.key, f"{o.sysctls.get((s.ns, s.key))} -> {s.value}", obj=s))

    for t in d.tables:
        fp = o.tables.get((t.ns, t.family, t.name))
        if fp is None or fp != st.nft.get(text_sha(t.text)):
            add(Action(P_NFT, "apply-table", t.ns, f"{t.family} {t.name}",
                       "missing" if fp is None else "differs from the topology", obj=t))

    lab_bridge = next(b.name for b in d.bridges if b.ns == d.host_ns)
    for g in o.gates:
        if g.ours != forward.wanted():
            add(Action(P_NFT, "open-forward", d.host_ns, str(g),
                       f"policy drop; {g.ours} of {forward.wanted()} bridgelab accepts in place", obj=(g, lab_bridge)))

    want_svc = {s.name for s in d.services}
    for name in sorted(set(st.services) - want_svc):
        add(Action(P_SERVICE, "stop-service", st.services[name].get("ns"), name, "no longer in the topology"))
    for s in d.services:
        status = o.services.get(s.name, "dead")
        if status != "running":
            add(Action(P_SERVICE, "start-service", s.ns, s.name, " ".join(s.argv) + f" ({status})", obj=s))
    return acts


@dataclass
class Result:
    actions: list[Action]
    errors: list[tuple[Action, str]]
    seconds: float
    observed: Observed | None = None
    held: list[Action] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


class Engine:
    """Holds the kernel adapters for one lab and reconciles it."""

    def __init__(self, desired: m.Desired, source: str = ""):
        self.d = desired
        self.source = source
        self.rtnl = Rtnl()
        loaded = State.load(desired.lab)
        # a state file from the other mode with anything in it: refuse rather than mix the two
        self._adopting_other_mode = (loaded is not None and loaded.mode != desired.mode
                                     and bool(loaded.services or loaded.nft))
        self.st = loaded or State(lab=desired.lab, mode=desired.mode, source=source)
        self.index: dict[tuple[str | None, str], int] = {}
        self._ns_ino: dict[str, int] = {}
        self._up = set(desired.up)
        self._last: Observed | None = None

    def close(self) -> None:
        self.rtnl.close()

    # ------------------------------------------------------------------ observe

    async def observe(self, only: set | None = None) -> Observed:
        """Dump every managed namespace, or with ONLY, just those (plus any made anew since the
        last look) and reuse the previous dump for the rest: the daemon knows from its
        per-namespace doorbells which ones changed."""
        d = self.d
        present = set(netns.list_names(f"bl-{d.lab}-"))
        look = [ns for ns in d.managed_ns() if ns is None or ns in present]
        last = dict(self._last.ns) if (only is not None and self._last is not None) else {}
        fresh = []
        for ns in look:
            # a namespace we hold a socket for may have been deleted and made anew: reopen
            if ns is not None and self._ns_ino.get(ns) != netns.inode(ns):
                self.rtnl.forget(ns)
                self._ns_ino[ns] = netns.inode(ns)
                last.pop(ns, None)
            if ns not in last or ns in (only or ()):
                fresh.append(ns)
        states = await asyncio.gather(*(self.rtnl.observe(ns) for ns in fresh))
        by_ns = {ns: last[ns] for ns in look if ns in last}
        by_ns.update(zip(fresh, states))
        for ns in present - set(look):
            by_ns[ns] = NsState()
        sysctls = {(s.ns, s.key): (sysctl.read(s.ns, s.key) if s.ns is None or s.ns in present else None)
                   for s in d.sysctls}
        tables = {}
        gates: list[forward.Gate] = []
        if d.host_ns is None or d.host_ns in present:
            gates = forward.observe(d.host_ns, d.lab, d.tables[0].name)
        for t in d.tables:
            if t.ns is None or t.ns in present:
                text = nft.listing(t.ns, t.family, t.name)
                tables[(t.ns, t.family, t.name)] = nft.fingerprint(text) if text is not None else None
            else:
                tables[(t.ns, t.family, t.name)] = None
        svc = {}
        for s in d.services:
            rec = self.st.services.get(s.name)
            if (s.ns is None or s.ns in present) and services.alive(rec, s.ns):
                svc[s.name] = "running"
            else:
                svc[s.name] = "wrong-ns" if _running(rec) else "dead"
        self.index = {(ns, name): link.index for ns, st in by_ns.items() for name, link in st.links.items()}
        self._last = Observed(present, by_ns, sysctls, tables, svc, gates)
        return self._last

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, dry_run: bool = False, allow=None, only: set | None = None) -> Result:
        """Observe, diff, apply. ALLOW (action -> bool) holds back actions, e.g. for backoff."""
        t0 = time.perf_counter()
        if self._adopting_other_mode:
            raise ConflictError(f"lab {self.d.lab} is up in {self.st.mode} mode; "
                                f"run 'bridgelab down' before bringing it up in {self.d.mode} mode")
        obs = await self.observe(only)
        acts = diff(self.d, obs, self.st)
        held: list[Action] = []
        if allow is not None:
            held = [a for a in acts if not allow(a)]
            acts = [a for a in acts if allow(a)]
        errors: list[tuple[Action, str]] = []
        if not dry_run and acts:
            self._last = None  # what we change is dumped afresh next time, whatever rang
            errors = await self._apply(acts)
        return Result(acts, errors, time.perf_counter() - t0, obs, held)

    async def _apply(self, acts: list[Action]) -> list[tuple[Action, str]]:
        errors: list[tuple[Action, str]] = []
        by_phase: dict[int, list[Action]] = {}
        for a in acts:
            by_phase.setdefault(a.phase, []).append(a)
        self.st.mode = self.d.mode
        self.st.source = self.source or self.st.source
        self.phase_seconds: dict[int, float] = {}
        for phase in sorted(by_phase):
            t0 = time.perf_counter()
            batch = by_phase[phase]
            if phase == P_NS:  # one batch: namespace mounts may need a helper process
                batch = await self._namespaces(batch, errors)
            results = await asyncio.gather(*(self._do(a) for a in batch), return_exceptions=True)
            for a, r in zip(batch, results):
                if isinstance(r, BaseException):
                    errors.append((a, f"{type(r).__name__}: {r}"))
            if phase == P_LINK and not errors:
                await self._until_transmitting(acts)
            self.phase_seconds[phase] = time.perf_counter() - t0
            if errors:
                break  # later phases build on this one
        self.st.save()
        return errors

    async def _namespaces(self, batch: list[Action], errors: list) -> list[Action]:
        # topologies are IPv4-only: no IPv6 addrconf work in lab namespaces (a third of `up`)
        create = lambda names: netns.create_many(names, ipv4_only=True)  # noqa: E731
        for verb, fn in (("delete-ns", netns.remove_many), ("create-ns", create)):
            acts = [a for a in batch if a.verb == verb]
            if not acts:
                continue
            try:
                for a in acts:
                    self.rtnl.forget(a.target)
                fn([a.target for a in acts])
            except OSError as e:
                errors += [(a, f"OSError: {e}") for a in acts]
                continue
            for a in acts:
                if verb == "create-ns":
                    self._ns_ino[a.target] = netns.inode(a.target)
                    self.index[(a.target, "lo")] = 1
        return []

    async def _until_transmitting(self, acts: list[Action], limit: float = 1.0) -> None:
        """Addresses and routes come after the links can carry traffic both ways. A veth end
        that was already up when its peer came up (the bridge port of a pair made anew, a
        container's end when its port is set up again) drops what is sent through it until the
        kernel's linkwatch work attaches its qdisc; a container given its address in that gap
        may have its first ARP answered into nothing and then wait a second to ask again (seen
        in 1 of ~100 heals of a deleted veth). Usually no wait at all: one link dump per
        namespace of such peers (all bridge ports: one). Bounded: past LIMIT the pass goes on
        and says so."""
        ends = peers_to_await(self.d, acts)
        if not ends:
            return
        t0 = time.monotonic()
        deadline, polls = t0 + limit, 0
        while True:
            waiting = {ns: await self.rtnl.not_yet_transmitting(ns, names) for ns, names in ends.items()}
            ends = {ns: names for ns, names in waiting.items() if names}
            if not ends:
                if polls:  # rare, and the reason a pass took longer: worth a line
                    log.info("waited for links to transmit", ms=round(1000 * (time.monotonic() - t0), 2), polls=polls)
                return
            polls += 1
            if time.monotonic() > deadline:
                log.warning("links still not transmitting; going on", links={str(k): sorted(v) for k, v in ends.items()},
                            waited_s=limit)
                return
            await asyncio.sleep(0.001)

    @staticmethod
    def _alias(ns: str | None, alias: str) -> str | None:
        """Links in a namespace we share carry our alias; in the lab's own, the namespace says it."""
        return alias if ns is None else None

    def _idx(self, ns: str | None, name: str) -> int:
        try:
            return self.index[(ns, name)]
        except KeyError:
            raise RuntimeError(f"link {name} not found in {ns or 'the current netns'}") from None

    async def _do(self, a: Action) -> None:
        v = a.verb
        if v == "delete-link":
            idx = self.index.pop((a.ns, a.target), None)
            if idx is not None:
                await self.rtnl.delete_link(a.ns, idx)
        elif v == "create-bridge":
            b: m.Bridge = a.obj
            self.index[(b.ns, b.name)] = await self.rtnl.create_bridge(b.ns, b.name, self._alias(b.ns, b.alias), b.mac)
        elif v == "create-veth":
            ve: m.Veth = a.obj
            master = self._idx(ve.a.ns, ve.a.master) if ve.a.master else None
            ia, ib = await self.rtnl.create_veth(ve.a.ns, ve.a.name, self._alias(ve.a.ns, ve.alias), master,
                                                 (ve.a.ns, ve.a.name) in self._up, ve.b.ns, ve.b.name,
                                                 ve.a.mac, ve.b.mac)
            self.index[(ve.a.ns, ve.a.name)] = ia
            self.index[(ve.b.ns, ve.b.name)] = ib
        elif v == "set-master":
            await self.rtnl.set_link(a.ns, self._idx(a.ns, a.target), master=self._idx(a.ns, a.detail))
        elif v == "set-hairpin":
            await self.rtnl.set_hairpin(a.ns, self._idx(a.ns, a.target), True)
        elif v == "set-up":
            await self.rtnl.set_link(a.ns, self._idx(a.ns, a.target), up=True)
        elif v == "add-address":
            ad: m.Address = a.obj
            await self.rtnl.add_address(ad.ns, self._idx(ad.ns, ad.dev), ad.iface)
        elif v == "replace-route":
            r: m.Route = a.obj
            await self.rtnl.replace_route(r.ns, r.dst, r.gateway, self._idx(r.ns, r.dev))
        elif v == "delete-route":
            x: RouteEntry = a.obj
            await self.rtnl.delete_route(a.ns, x)
        elif v == "set-sysctl":
            s: m.Sysctl = a.obj
            if s.ns is None and s.key not in self.st.saved_sysctls:
                old = sysctl.read(None, s.key)
                if old is not None:
                    self.st.saved_sysctls[s.key] = old
            sysctl.write(s.ns, s.key, s.value)
        elif v == "apply-table":
            t: m.NftTable = a.obj
            self.st.nft = {text_sha(t.text): nft.apply(t.ns, t.family, t.name, t.text)}
        elif v == "open-forward":
            gate, bridge = a.obj
            forward.open_gate(a.ns, self.d.lab, bridge, gate)
        elif v == "stop-service":
            rec = self.st.services.pop(a.target, None)
            if rec:
                services.stop(rec)
        elif v == "start-service":
            s2: m.ServiceProc = a.obj
            old = self.st.services.get(s2.name)
            if old:
                services.stop(old)
            self.st.services[s2.name] = services.start(self.d.lab, s2)
            if s2.port:  # done means serving: a curl right after `up` must not be refused
                await services.listening(s2.ns, s2.port)
        else:  # pragma: no cover - diff only emits the verbs above
            raise ValueError(v)


def peers_to_await(d: m.Desired, acts: list[Action]) -> dict[str | None, set[str]]:
    """{namespace: veth ends} to see transmitting before addresses go on: the peer of every
    veth end this pass sets up. The end set up gets working queues as it opens; its peer, up
    already, gets them from linkwatch, later."""
    peer = {(e.ns, e.name): o for v in d.veths for e, o in ((v.a, v.b), (v.b, v.a))}
    out: dict[str | None, set[str]] = {}
    for a in acts:
        p = peer.get((a.ns, a.target)) if a.verb == "set-up" else None
        if p is not None:
            out.setdefault(p.ns, set()).add(p.name)
    return out


def _running(rec: dict | None) -> bool:
    return bool(rec) and services.start_time(rec["pid"]) == rec.get("start")
