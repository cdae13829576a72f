"""What a lab remembers between runs: /run/bridgelab/<lab>/state.json (gone after a reboot, as
is everything it describes). Written atomically so a crash leaves the old or the new file."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field

RUN_DIR = os.path.abspath(os.environ.get("BRIDGELAB_RUN_DIR", "/run/bridgelab"))


class UnsafeLabName(ValueError):
    """A lab name that is not one (the spec's rule): never used to build a path or a name."""


def check_lab(lab: object) -> str:
    """LAB as a lab name, or UnsafeLabName. Every lab name, from the CLI, a file, a state file or
    the environment, passes here before it is part of a path, a namespace or an nft name."""
    from .spec import LAB_RE
    if not isinstance(lab, str) or not LAB_RE.match(lab):
        raise UnsafeLabName(f"{lab!r} is not a lab name: 1-12 characters, a lowercase letter, then "
                            "lowercase letters, digits or '_'")
    return lab


def inside(root: str, *parts: str) -> str:
    """ROOT/PARTS..., refused unless it stays inside ROOT once resolved (no '..', no symlink out)."""
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root or path == root:
        raise UnsafeLabName(f"{os.path.join(*parts)!r} leaves {root}")
    return path


def lab_dir(lab: str) -> str:
    return inside(RUN_DIR, check_lab(lab))


@dataclass
class State:
    lab: str
    mode: str = "sandbox"
    source: str = ""
    services: dict[str, dict] = field(default_factory=dict)  # name -> {pid, start, ns}
    nft: dict[str, str] = field(default_factory=dict)  # table text sha -> kernel listing fingerprint
    saved_sysctls: dict[str, str] = field(default_factory=dict)  # host mode: value before us

    @classmethod
    def load(cls, lab: str) -> State | None:
        try:
            with open(os.path.join(lab_dir(lab), "state.json")) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        if raw.get("lab") != lab:  # a state file naming another lab is not this one's
            raise UnsafeLabName(f"the state file of lab {lab} names lab {raw.get('lab')!r}")
        return cls(**raw)

    def save(self) -> None:
        d = lab_dir(self.lab)
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, ".state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(d, "state.json"))


def remove(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)

