"""`down`: remove everything a lab created, wherever it is, and nothing else."""

from __future__ import annotations

from . import model as m
from . import netns
from .adapters import services, sysctl
from .state import State
from .state import remove as state_remove


async def teardown(lab: str, rtnl=None) -> list[str]:
    """Sandbox labs live entirely in ``bl-<lab>-*`` namespaces: dropping them drops everything
    in them. In the current namespace (host mode) we remove only links carrying our alias and
    our own nft table, and restore the sysctls we changed to the values recorded before."""
    done: list[str] = []
    st = State.load(lab)
    if st:
        for name, rec in st.services.items():
            services.stop(rec)
            done.append(f"stop-service {name}")
    names = netns.list_names(f"bl-{lab}-", half_made=True)
    if rtnl is not None:
        for name in names:
            rtnl.forget(name)
    done += [f"delete-ns {name}" for name in netns.remove_many(names)]
    # Host mode acts on the namespace we are called from: only for a lab whose state says it was
    # built in host mode. Without a state file we do not know where it was built, and guessing
    # "here" once removed links and tables from whatever namespace `down` was run in.
    if st is not None and st.mode == "host":
        # only now pay for pyroute2 and libnftables: a sandbox lab is gone with its namespaces
        from .adapters import forward, nft
        from .adapters.rtnl import Rtnl
        from .nftrender import table_name

        own = rtnl or Rtnl()
        try:
            cur = await own.observe(None)
            prefix = f"{m.ALIAS_PREFIX}{lab}:"
            for link in cur.links.values():
                if link.alias and link.alias.startswith(prefix):
                    await own.delete_link(None, link.index)
                    done.append(f"delete-link {link.name}")
            if forward.close_all(None, lab, table_name(lab)):
                done.append("close-forward (our accepts in foreign forward chains)")
            if nft.delete(None, "ip", table_name(lab)):
                done.append(f"delete-table ip {table_name(lab)}")
            for key, value in (st.saved_sysctls if st else {}).items():
                if sysctl.read(None, key) is not None:
                    sysctl.write(None, key, value)
                    done.append(f"restore-sysctl {key}={value}")
        finally:
            if rtnl is None:
                own.close()
    state_remove(lab)
    return done
