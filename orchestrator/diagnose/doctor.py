"""`bridgelab doctor`: what this machine's kernel and tools offer the lab and its probes.

Every answer comes from the running system (files under /sys and /proc, the tools' own
reports), never from a version number alone. The probe-by-probe verdicts join this report with
the eBPF tracer (issue #4); what is here is the ground they stand on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

from ..probes.kernel import TRACEFS, lockdown
TRACEPOINTS = [  # the hooks the tracer is designed around (../shared/notes/kernel-facts.md)
    "skb/kfree_skb", "skb/consume_skb", "net/netif_receive_skb", "net/net_dev_queue", "net/net_dev_xmit",
    "fib/fib_table_lookup", "bridge/br_fdb_add", "bridge/br_fdb_update", "neigh/neigh_update",
]


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not tell
    detail: str
    fix: str = ""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def drop_reasons() -> list[str]:
    """SKB_DROP_REASON names as the running kernel prints them (kfree_skb's print fmt)."""
    fmt = _read(f"{TRACEFS}/events/skb/kfree_skb/format") or ""
    return re.findall(r'\{\s*\d+,\s*"([A-Z0-9_]+)"\s*\}', fmt)


def _bpftool_types() -> dict[str, bool]:
    if not shutil.which("bpftool"):
        return {}
    try:
        out = subprocess.run(["bpftool", "feature", "probe", "kernel"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {m.group(1): m.group(2) is None
            for m in re.finditer(r"eBPF program_type (\w+) is (NOT )?available", out)}


def checks() -> list[Check]:
    out: list[Check] = []
    rel = os.uname().release
    out.append(Check("kernel", True, rel))
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    out.append(Check("btf", btf, "/sys/kernel/btf/vmlinux" + (" present" if btf else " missing"),
                     "" if btf else "a kernel built with CONFIG_DEBUG_INFO_BTF"))
    mode = lockdown()
    # only "confidentiality" forbids BPF from reading kernel memory; "integrity" does not
    out.append(Check("lockdown", None if mode is None else mode != "confidentiality",
                     f"lockdown={mode}" if mode else "securityfs not mounted",
                     "probes must not read kernel memory (bpf_probe_read_kernel is refused): "
                     "tracepoint fields and direct packet access only" if mode == "confidentiality" else ""))
    tracefs = os.path.isdir(f"{TRACEFS}/events")
    out.append(Check("tracefs", tracefs, TRACEFS + (" mounted" if tracefs else " not mounted"),
                     "" if tracefs else "mount -t tracefs nodev /sys/kernel/tracing (make setup does)"))
    kprobes = os.path.exists(f"{TRACEFS}/kprobe_events")
    out.append(Check("kprobes", kprobes, "available" if kprobes else "not in this kernel (CONFIG_KPROBES off)",
                     "" if kprobes else "probes use tracepoints, tc and netfilter hooks instead"))
    types = _bpftool_types()
    if types:
        fentry = types.get("tracing")
        out.append(Check("fentry", fentry, "BPF_PROG_TYPE_TRACING " + ("available" if fentry else "refused"),
                         "" if fentry else "no fentry/fexit: tracepoints instead"))
        out.append(Check("tc-bpf", types.get("sched_cls"), "BPF_PROG_TYPE_SCHED_CLS "
                         + ("available" if types.get("sched_cls") else "refused")))
    else:
        out.append(Check("bpftool", False, "bpftool missing or failed", "apt-get install bpftool"))
    for tp in TRACEPOINTS:
        present = os.path.isdir(f"{TRACEFS}/events/{tp}")
        out.append(Check(f"tracepoint {tp}", present if tracefs else None,
                         "present" if present else ("missing" if tracefs else "tracefs not mounted")))
    reasons = drop_reasons()
    out.append(Check("drop reasons", bool(reasons), f"{len(reasons)} names from the running kernel"
                     + (f" (e.g. {', '.join(reasons[:3])})" if reasons else "")))
    try:
        import bcc  # noqa: F401 - Debian's python3-bpfcc
        version = getattr(bcc, "__version__", "?")
        out.append(Check("bcc", True, f"python bcc {version}"))
    except Exception as e:  # bcc raises more than ImportError when libbcc is missing
        out.append(Check("bcc", False, f"cannot import bcc: {e}", "apt-get install python3-bpfcc (make setup does)"))
    out.append(headers_check(rel))
    out.append(_impairments())
    out += probe_checks()
    try:
        import nftables  # noqa: F401
        out.append(Check("libnftables", True, "python3-nftables importable"))
    except ImportError as e:
        out.append(Check("libnftables", False, str(e), "apt-get install python3-nftables"))
    return out


def _impairments() -> Check:
    from ..adapters import impair
    drv = impair.driver()
    if drv.name == "netem":
        return Check("link impairments", True, "sch_netem in this kernel: " + drv.what)
    return Check("link impairments", None, "no sch_netem in this kernel (CONFIG_NET_SCH_NETEM off): " + drv.what,
                 "delay, loss, corruption and duplication need the lab's delay line running (bridgelab restarts it)")


def headers_check(rel: str) -> Check:
    """bcc wants a headers tree; this machine's kernel has none, so make setup links Debian's.
    Safe only because the probes take nothing from it but uapi headers (stable across kernels)
    and get every kernel struct offset from the running kernel's BTF: say so, with both versions."""
    build = f"/lib/modules/{rel}/build"
    if not os.path.exists(build) and not os.environ.get("BCC_KERNEL_SOURCE"):
        return Check("headers", False, f"{build} missing", "make setup links Debian's linux-headers-amd64 there")
    tree = os.path.realpath(build) if os.path.exists(build) else os.environ["BCC_KERNEL_SOURCE"]
    m = re.search(r"linux-headers-(\d+\.\d+)", tree)
    running = ".".join(rel.split(".")[:2])
    if m and m.group(1) != running:
        return Check("headers", True, f"{tree}: {m.group(1)} headers for a {running} kernel — safe for these probes: "
                     "they use only uapi headers (stable ABI) and take every kernel struct offset from the "
                     "running kernel's BTF, never from this tree")
    return Check("headers", True, tree)


def probe_checks() -> list[Check]:
    """Which probes will attach, found by compiling and loading them here (through the verifier)
    exactly as the daemon does; nothing is attached."""
    out: list[Check] = []
    try:
        from ..probes import kernel
        caps = kernel.capabilities()
    except Exception as e:  # no BTF at all
        return [Check("probes", False, f"cannot inspect the kernel: {e}")]
    out.append(Check("tcx links", caps.tcx, "BPF_TCX_INGRESS/EGRESS " + ("in this kernel" if caps.tcx else "missing"),
                     "" if caps.tcx else "Linux ≥ 6.6 for tcx; the tc probes cannot attach"))
    out.append(Check("netfilter links", caps.netfilter_link,
                     "BPF_NETFILTER " + ("in this kernel" if caps.netfilter_link else "missing"),
                     "" if caps.netfilter_link else "Linux ≥ 6.4 with CONFIG_NETFILTER_BPF_LINK; no forward/NAT hops"))
    out.append(Check("packet reads at netfilter hooks", caps.read_kernel,
                     "bpf_probe_read_kernel " + ("allowed" if caps.read_kernel else f"refused (lockdown={caps.lockdown})"),
                     "" if caps.read_kernel else "netfilter hops are matched by flow hash; tuples come from the tc "
                     "hops around them; NAT translation counts unavailable"))
    try:
        from ..probes.families import BY_NAME
        from ..probes.loader import Probes
        p = Probes("doctor")
        p.load()
    except Exception as e:
        return out + [Check("probes", False, f"cannot load: {e}", "apt-get install python3-bpfcc (make setup does)")]
    for name, fam in p.families.items():
        if fam.ok and not fam.degraded:
            out.append(Check(f"probe {name}", True, "will attach: " + BY_NAME[name].attaches))
        elif fam.ok:
            out.append(Check(f"probe {name}", None, "will attach, degraded: " + fam.degraded))
        else:
            out.append(Check(f"probe {name}", False, "will not attach: " + fam.reason))
    out.append(Check("kprobes/fentry for probes", None,
                     "not used: tracepoints, tc and netfilter links cover the lab's path on every kernel we run on"))
    p.close()
    return out


def as_json(cs: list[Check]) -> dict:
    return {"checks": [asdict(c) for c in cs], "drop_reasons": drop_reasons()}


def render(cs: list[Check], c) -> str:
    lines = []
    for ch in cs:
        mark = c("32", "ok ") if ch.ok else (c("33", "?  ") if ch.ok is None else c("31", "no "))
        lines.append(f"  {mark} {ch.name:<32} {ch.detail}" + (f"\n        → {ch.fix}" if ch.fix else ""))
    return "\n".join(lines)
