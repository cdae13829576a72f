"""What a lab remembers between runs: /run/bridgelab/<lab>/state.json (gone after a reboot, as
is everything it describes). Written atomically so a crash leaves the old or the new file."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field

RUN_DIR = os.environ.get("BRIDGELAB_RUN_DIR", "/run/bridgelab")


def lab_dir(lab: str) -> str:
    return os.path.join(RUN_DIR, lab)


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
                return cls(**json.load(f))
        except FileNotFoundError:
            return None

    def save(self) -> None:
        d = lab_dir(self.lab)
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, ".state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(d, "state.json"))


def remove(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)

