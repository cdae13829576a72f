"""What this kernel lets the probes do, found out at start (never assumed from a version)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from ..doctor import TRACEFS, lockdown
from . import btf


@dataclass(frozen=True)
class Caps:
    lockdown: str | None
    read_kernel: bool        # bpf_probe_read_kernel allowed (lockdown below confidentiality)
    btf: bool
    tcx: bool
    netfilter_link: bool
    kprobes: bool
    tracefs: bool


@lru_cache(maxsize=1)
def capabilities() -> Caps:
    mode = lockdown()
    has_btf = os.path.exists(btf.VMLINUX)
    tcx = nf = False
    if has_btf:
        try:
            at = btf.kernel().enum("bpf_attach_type")
            tcx, nf = "BPF_TCX_INGRESS" in at, "BPF_NETFILTER" in at
        except btf.BTFError:
            pass
    return Caps(lockdown=mode, read_kernel=mode != "confidentiality", btf=has_btf, tcx=tcx,
                netfilter_link=nf, kprobes=os.path.exists(f"{TRACEFS}/kprobe_events"),
                tracefs=os.path.isdir(f"{TRACEFS}/events"))
