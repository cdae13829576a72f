"""What every resource kind declares, and what the diff and the engine hand it.

A kind (one module in this package, listed once in ``__init__.py``) says how its resources are
found in the desired state, what it observes beyond the shared per-namespace link/address/route
dump, how it diffs, how each of its actions is applied, how it is undone on ``down``, the
metric ``kind`` label it counts under, and how ``explain`` phrases a drift in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ...errors import ConflictError
from ...lab import naming
from ...lab.resources import Desired
from ..snapshot import Observed

if TYPE_CHECKING:  # the engine imports the kernel adapters; kinds only receive it
    from ..engine import Engine
    from ..state import State
    from ..teardown import Teardown

# Phases run in order; the actions of one phase run concurrently.
P_NS, P_UNLINK, P_BRIDGE, P_VETH, P_LINK, P_PORT, P_ADDR, P_ROUTE, P_SYSCTL, P_NFT, P_SERVICE = range(11)
PHASE_NAMES = ("namespaces", "unlink", "bridges", "veth pairs", "links up", "bridge ports", "addresses", "routes",
               "sysctls", "nftables", "services")

P = TypeVar("P")


@dataclass(frozen=True)
class Action(Generic[P]):
    """One change. ``payload`` is the kind's own typed value (the desired resource, or the
    observed entry to remove); ``kind`` names the Kind that applies it."""

    phase: int
    verb: str  # create-ns, delete-ns, delete-link, create-bridge, create-veth, set-link, ...
    ns: str | None
    target: str
    detail: str = ""
    payload: P = field(default=None, compare=False, hash=False)  # type: ignore[assignment]
    kind: str = field(default="", compare=False)
    metric: str = field(default="", compare=False)
    # the repair this one follows from (a port re-added because its bridge was made anew): such
    # consequences never count as someone undoing this resource (flap detection)
    caused_by: str | None = field(default=None, compare=False)

    def describe(self) -> str:
        where = "" if self.phase == P_NS else f" in {self.ns or '(current netns)'}"
        return f"{self.verb} {self.target}{where}" + (f": {self.detail}" if self.detail else "")

    def as_json(self) -> dict:
        return {"verb": self.verb, "ns": self.ns, "target": self.target, "detail": self.detail}

    @property
    def resource(self) -> tuple:
        """Which resource it repairs, for flap detection: (metric kind, namespace, name)."""
        return (self.metric, self.ns, self.target)


@dataclass
class DiffContext:
    """The pure diff's working set: what is wanted, what is there, and what earlier kinds
    decided this pass (links made anew come up without addresses, routes or their port)."""

    d: Desired
    obs: Observed
    st: State
    acts: list[Action] = field(default_factory=list)
    recreated: set[tuple[str | None, str]] = field(default_factory=set)  # links that will be new
    created_up: set[tuple[str | None, str]] = field(default_factory=set)  # ... and created up
    deleting: set[tuple[str | None, str]] = field(default_factory=set)
    new_ns: set[str] = field(default_factory=set)

    def add(self, a: Action) -> None:
        self.acts.append(a)

    def owned_ns(self, ns: str | None) -> bool:
        """A namespace of the lab's own: everything in it is ours (the desired state is its
        whole state); the namespace bridgelab runs in (host mode) is shared."""
        return ns is not None and ns.startswith(naming.ns_prefix(self.d.lab))

    def owned(self, ns: str | None, alias: str | None) -> bool:
        return self.owned_ns(ns) or (bool(alias) and alias.startswith(naming.alias_prefix(self.d.lab)))

    def conflict(self, ns: str | None, name: str, what: str) -> None:
        raise ConflictError(
            f"{ns or 'the current netns'} already has a link '{name}' that bridgelab lab {self.d.lab} "
            f"did not create ({what}); rename it or change the topology")

    def cause_of(self, ns: str | None, dev: str) -> str | None:
        """The repair an action on DEV follows from, if DEV or its namespace is made anew."""
        if ns in self.new_ns:
            return f"namespace {ns}"
        if (ns, dev) in self.recreated:
            return f"link {dev} in {ns or 'the current netns'}"
        return None


@dataclass
class Finding:
    """What explain says about one drift on a flow's path."""

    cause: str  # stable id: ip_forward, masquerade_missing, link_down, ...
    node: str
    what: str
    fix: str
    order: int = 0  # position along the path (src first)
    blocking: bool = True  # False: worth knowing, not why it fails (an impairment on the way)


@dataclass
class ExplainContext:
    """What a kind may use to phrase a drift: names, the observed snapshot, and a few reads
    explain provides (so kinds import no adapter)."""

    d: Desired
    obs: Observed
    node: str
    up: str  # the command that repairs it, with the user's own -f FILE
    bridge: str   # the bridges on the flow's way ("br0", or "brfront and brback")
    uplink: str
    subnet: str   # the flow source's network
    flow: Any = None
    neighbour: Callable[[str | None, str], str] = lambda ns, addr: "unknown"
    nft_facts: Callable[[], dict] = dict

    def nsarg(self, ns: str | None) -> str:
        return f"-n {ns} " if ns else ""

    def in_ns(self, ns: str | None) -> str:
        return f"ip netns exec {ns} " if ns else ""


class Kind:
    """The base every kind module subclasses; the defaults do nothing."""

    name: ClassVar[str]  # registry name
    metric: ClassVar[str]  # the `kind` label of bridgelab_heal_actions_total and friends
    verbs: ClassVar[dict[str, int]]  # verb -> phase

    def act(self, verb: str, ns: str | None, target: str, detail: str = "", payload: Any = None,
            caused_by: str | None = None) -> Action:
        return Action(self.verbs[verb], verb, ns, target, detail, payload, self.name, self.metric, caused_by)

    def wanted(self, d: Desired) -> Iterable[Any]:
        """The desired resources of this kind (counted in bridgelab_resources)."""
        return ()

    def count(self, d: Desired) -> int:
        return sum(1 for _ in self.wanted(d))

    def observe(self, eng: Engine, present: set[str]) -> Any:
        """What this kind reads beyond the shared rtnl dump, stored as obs.parts[name]."""
        return None

    def diff(self, cx: DiffContext) -> None:
        raise NotImplementedError

    async def apply(self, a: Action, eng: Engine) -> None:
        raise NotImplementedError

    async def apply_batch(self, acts: list[Action], eng: Engine) -> list[tuple[Action, str]] | None:
        """Apply a phase's actions of this kind together, or None to have each applied alone."""
        return None

    async def after_phase(self, phase: int, acts: list[Action], eng: Engine) -> None:
        """Called once a phase has been applied without errors."""

    async def teardown(self, td: Teardown) -> None:
        """Undo what this kind made: services, the lab's namespaces, and in a namespace the lab
        shares (host mode, td.shared) its links, table, accepts and sysctls."""

    def finding(self, a: Action, cx: ExplainContext) -> Finding:
        return Finding(a.verb, cx.node, a.describe(), cx.up)
