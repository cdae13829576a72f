"""What a lab remembers between runs: <run dir>/<lab>/state.json (gone after a reboot, as is
everything it describes). Written atomically so a crash leaves the old or the new file."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields

from ..errors import BusyError, UnsafeName
from ..lab.naming import lab_dir, lab_file


@dataclass
class State:
    lab: str
    mode: str = "sandbox"
    source: str = ""
    services: dict[str, dict] = field(default_factory=dict)  # name -> {pid, start, ns}
    nft: dict[str, str] = field(default_factory=dict)  # table text sha -> kernel listing fingerprint
    saved_sysctls: dict[str, str] = field(default_factory=dict)  # before shared.py: value before us
    netns: str = ""  # host mode: the namespace it was built in (shared.ns_identity)
    impair: dict = field(default_factory=dict)  # the delay line's record, netem fingerprints, where rules are

    def check_here(self) -> None:
        """A host-mode lab lives in the namespace it was built in: refused from any other (its
        links are not this namespace's, and this namespace's are not the lab's)."""
        from .shared import ns_identity
        if self.mode == "host" and self.netns and self.netns != ns_identity():
            raise BusyError(f"lab {self.lab} was built in host mode in another network namespace "
                            f"(dev-inode {self.netns}; this one is {ns_identity()}): run bridgelab from that "
                            "namespace (e.g. nsenter --net=/proc/PID/ns/net of a process in it)")

    @classmethod
    def load(cls, lab: str) -> State | None:
        try:
            with open(lab_file(lab, "state.json")) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise UnsafeName(f"the state file of lab {lab} is not JSON ({e}); remove {lab_file(lab, 'state.json')}") \
                from None
        if not isinstance(raw, dict) or raw.get("lab") != lab:  # a state file naming another lab is not this one's
            raise UnsafeName(f"the state file of lab {lab} names lab {raw.get('lab') if isinstance(raw, dict) else raw!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self) -> None:
        d = lab_dir(self.lab)
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d, ".state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(d, "state.json"))


def remove(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)
