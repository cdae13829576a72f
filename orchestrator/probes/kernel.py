"""What this kernel lets the probes do, found out at start (never assumed from a version)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from . import btf

TRACEFS = "/sys/kernel/tracing"


def lockdown() -> str | None:
    """The kernel's lockdown mode (none, integrity, confidentiality), from securityfs."""
    try:
        with open("/sys/kernel/security/lockdown") as f:
            text = f.read().strip()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else text


def tracepoint(name: str) -> bool:
    return os.path.isdir(f"{TRACEFS}/events/{name}")


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
