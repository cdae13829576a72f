"""`down`: remove everything a lab created, wherever it is, and nothing else. Each kind undoes
its own (kinds/*.teardown), in the reverse of the order they are built in."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..lab.naming import check_lab
from .state import State
from .state import remove as state_remove


@dataclass
class Teardown:
    lab: str
    st: State | None
    rtnl: object = None  # an adapters.rtnl.Rtnl, opened only if the shared namespace is touched
    done: list[str] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """Host mode acts on the namespace we are called from: only for a lab whose state says it
        was built in host mode. Without a state file we do not know where it was built, and
        guessing "here" once removed links and tables from whatever namespace `down` ran in."""
        return self.st is not None and self.st.mode == "host"

    def netlink(self):
        if self.rtnl is None:
            from ..adapters.rtnl import Rtnl  # only now pay for pyroute2: a sandbox lab goes with its namespaces
            self.rtnl = self._own = Rtnl()
        return self.rtnl


async def teardown(lab: str, rtnl=None) -> list[str]:
    from .kinds import KINDS
    td = Teardown(check_lab(lab), State.load(lab), rtnl)
    if td.st is not None:
        td.st.check_here()
    own = rtnl is None
    try:
        for kind in reversed(KINDS):
            await kind.teardown(td)
    finally:
        if own and td.rtnl is not None:
            td.rtnl.close()
    state_remove(lab)
    return td.done
