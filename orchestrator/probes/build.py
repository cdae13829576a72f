"""Compile the probe families with bcc and load their programs through the verifier.

All available families go into one compile unit, sharing their maps (drops are attributed from
what nf saw; nf in a trace matches the flows tc found); if that fails, each is compiled on its
own so one broken family costs only itself. Reading packets at netfilter hooks is tried first
where the kernel may allow it and given up (degraded, said) if the verifier refuses.
"""
from __future__ import annotations

import ctypes as ct
import errno
import gzip
import os
from functools import lru_cache

from .. import logs
from . import btf, kernel, links
from .families import BY_NAME, FAMILIES

log = logs.get("bridgelab.probes")


def kernel_offsets() -> list[str]:
    """-D macros for the kernel struct members the C reads, from the running kernel's BTF."""
    b = btf.kernel()
    want = {
        "SKB_LEN": ("sk_buff", "len"), "SKB_HASH": ("sk_buff", "hash"), "SKB_HEAD": ("sk_buff", "head"),
        "SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
        "ST_HOOK": ("nf_hook_state", "hook"), "ST_IN": ("nf_hook_state", "in"),
        "ST_OUT": ("nf_hook_state", "out"), "ST_NET": ("nf_hook_state", "net"),
        "ST_PF": ("nf_hook_state", "pf"),
        "DEV_IFINDEX": ("net_device", "ifindex"), "NET_COOKIE": ("net", "net_cookie"),
    }
    out = [f"-D{k}={b.member(s, m)[0]}" for k, (s, m) in want.items()]
    # conntrack's view, for the NAT translation counts (nf_hooks.c nat_count); a kernel without
    # conntrack has neither, and no NAT to count
    try:
        out += [f"-DSKB_NFCT={b.member('sk_buff', '_nfct')[0]}", f"-DCT_STATUS={b.member('nf_conn', 'status')[0]}"]
    except btf.BTFError:
        pass
    return out


def kernel_hz() -> tuple[int, str]:
    """CONFIG_HZ of the running kernel and where it was read; 1000 (the highest usual value, so
    the shortest window a jiffies count can mean) when the kernel's config cannot be found."""
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{os.uname().release}", open)):
        try:
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=", 1)[1]), path
        except (OSError, ValueError):
            continue
    return 1000, "assumed (no kernel config found)"


def _consumed_max() -> int:
    reasons = btf.kernel().enum("skb_drop_reason")
    return max(reasons.get("SKB_CONSUMED", 1), reasons.get("SKB_NOT_DROPPED_YET", 0))


@lru_cache(maxsize=1)
def _reason_flags() -> tuple[str, ...]:
    """Where ip6_mc_input's text is, so drops.c can name its multicast frees (reasons.py).
    Cached: it sorts all of /proc/kallsyms, and the compile and the degradation report ask."""
    from .reasons import MCAST_NOT_JOINED, symbol_range
    rng = symbol_range("ip6_mc_input")
    reasons = btf.kernel().enum("skb_drop_reason")
    if rng is None or "SKB_DROP_REASON_NOT_SPECIFIED" not in reasons:
        return ()
    out = (f"-DMC_INPUT_START={rng[0]}ULL", f"-DMC_INPUT_END={rng[1]}ULL", f"-DR_MCAST_NOT_JOINED={MCAST_NOT_JOINED}",
           f"-DREASON_NOT_SPECIFIED={reasons['SKB_DROP_REASON_NOT_SPECIFIED']}")
    rng4 = symbol_range("ip_rcv_finish_core")
    if rng4 is not None:
        out += (f"-DRCV4_START={rng4[0]}ULL", f"-DRCV4_END={rng4[1]}ULL")
    return out


def cflags(p, families: list[str]) -> list[str]:
    f = ["-w", f"-I{p.probe_dir}", f"-DRING_PAGES={p.ring_pages}",
         f"-DSKB_CONSUMED_MAX={_consumed_max()}", f"-DFAST_BITS={p.fast_bits}", *kernel_offsets()]
    if "drops" in families:
        f += _reason_flags()
    # the drop attribution window, 200 ms, in the unit of the probes' clock (common.h NOW()):
    # nanoseconds in a trace, jiffies for the metrics probes
    if p.trace is not None:
        t = p.trace
        f += ["-DTRACE", f"-DF_PROTO={t.proto}", f"-DF_NET={t.net}U", f"-DF_NET_MASK={t.mask}U",
              f"-DF_PORT={t.port}", "-DATTRIBUTION=200000000ULL"]
        if t.ndp:
            f.append("-DF_NDP")
        if getattr(t, "net6", None) is not None:
            from .events import parse_net6
            words, masks = parse_net6(str(t.net6))
            f += [f"-DF6_NET{i}={w}U" for i, w in enumerate(words)] + [f"-DF6_MASK{i}={m}U" for i, m in enumerate(masks)]
    else:
        hz, where = kernel_hz()
        if where.startswith("assumed"):
            log.info("kernel HZ unknown: drop attribution window is 200 jiffies (200 ms at HZ=1000, "
                     "longer at a lower HZ)", hz=hz, source=where)
        f.append(f"-DATTRIBUTION={max(1, hz // 5)}ULL")
    if "nf" in families and p.read_packet:
        f.append("-DREAD_PACKET")
    if "nf" in families and "tc" in families:
        f.append("-DHAVE_TC")      # nf matches the flows tc found
    if "drops" in families and "nf" in families:
        f.append("-DHAVE_NF")      # drops are attributed to where nf saw the skb last
    return f


def load(p) -> None:
    """Compile and load every family this kernel can run into p.families."""
    caps = kernel.capabilities()
    avail = []
    for spec in FAMILIES:
        why = spec.needs(caps)
        if why:
            p.families[spec.name].reason = why
        else:
            avail.append(spec.name)
    read_error = ""
    while avail:
        try:
            _compile(p, avail)
            break
        except LoadError as e:
            if e.family == "nf" and p.read_packet:
                read_error = e.text
                log.warning("probe degraded", probe="nf", reason=e.text[:200])
                p.read_packet = False
                continue
            together = e.text
        except Exception as e:  # bcc raises bare Exception for compile failures
            together = str(e)
        log.warning("probes compiled one by one", reason=together[:300])
        for name in avail:
            try:
                _compile(p, [name])
            except Exception as e:
                fam = p.families[name]
                fam.reason, fam.bpf, fam.progs = explain(e), None, {}
                log.error("probe failed", probe=name, reason=fam.reason)
        break
    _degradations(p, read_error)
    for fam in p.families.values():
        if fam.ok:
            log.info("probe loaded", probe=fam.name, degraded=fam.degraded or None)


def _degradations(p, read_error: str) -> None:
    nf = p.families["nf"]
    if nf.ok and not p.read_packet:
        mode = kernel.capabilities().lockdown
        why = (read_error or f"lockdown={mode} refuses bpf_probe_read_kernel" if mode == "confidentiality"
               else read_error or "BRIDGELAB_PROBE_NO_READ=1 (as if lockdown=confidentiality)")
        nf.degraded = f"no tuples at netfilter hooks ({why}): hops matched by flow hash, NAT translation counts unavailable"
    drops = p.families["drops"]
    if drops.ok and not (nf.ok and nf.bpf is drops.bpf):
        drops.degraded = "drops not attributed to a node or hook (the netfilter probes did not load with them)"
    elif drops.ok and not _reason_flags():
        drops.degraded = ("multicast not joined counted as NOT_SPECIFIED drops (kallsyms hides "
                          "ip6_mc_input's and ip_rcv_finish_core's addresses: kptr_restrict)")
    elif drops.ok and not p.read_packet:
        drops.degraded = ("IPv4 multicast not joined counted as NOT_SPECIFIED drops (telling it apart reads the "
                          "IP header, which lockdown or BRIDGELAB_PROBE_NO_READ forbids)")


def _compile(p, families: list[str]) -> None:
    from bcc import BPF  # Debian's python3-bpfcc; imported here so the CLI starts fast
    # one text, not #includes: bcc only turns functions of the main file into programs
    text = ""
    for n in families:
        src = BY_NAME[n].source
        with open(os.path.join(p.probe_dir, src)) as f:
            text += f'#line 1 "{src}"\n' + f.read() + "\n"
    flags = cflags(p, families)
    try:
        bpf = BPF(text=text.encode(), cflags=flags)
    except Exception as e:
        detail = _diagnose(text, flags, [])
        raise type(e)(f"{e}: {detail}" if detail else str(e)) from None
    progs: dict[str, dict] = {}
    for name in families:
        progs[name] = {}
        for prog in BY_NAME[name].programs:
            at = links.attach_type(prog.attach_type) if prog.attach_type else -1
            try:
                progs[name][prog.fn] = bpf.load_func(prog.fn.encode(), prog.prog_type, attach_type=at).fd
            except Exception as e:
                bpf.cleanup()
                detail = _diagnose(text, flags, [[prog.fn, prog.prog_type, at]])
                raise LoadError(name, f"{e}: {detail}" if detail else str(e)) from None
    from bcc.libbcc import lib
    license = lib.bpf_module_license(bpf.module).decode()
    for name in families:
        fam = p.families[name]
        fam.bpf, fam.progs, fam.ok, fam.license = bpf, progs[name], True, license
        # what tc_prog copies per namespace: the instructions as bcc loaded them (maps' fds in)
        starts = {fn: lib.bpf_function_start(bpf.module, fn.encode()) for fn in BY_NAME[name].functions}
        fam.insns = {fn: ct.string_at(at, lib.bpf_function_size(bpf.module, fn.encode()))
                     for fn, at in starts.items() if at}


class LoadError(Exception):
    def __init__(self, family: str, text: str):
        super().__init__(text)
        self.family, self.text = family, text


_DIAGNOSE = """
import json, sys
from bcc import BPF
text, cflags, progs = open(sys.argv[1]).read(), json.loads(sys.argv[2]), json.loads(sys.argv[3])
b = BPF(text=text.encode(), cflags=cflags)
for fn, ptype, at in progs:
    b.load_func(fn.encode(), ptype, attach_type=at)
"""


def _diagnose(text: str, flags: list[str], progs: list) -> str:
    """bcc prints compiler errors and verifier logs on fd 2 and raises a bare 'Failed to ...'.
    Redirecting our own fd 2 would swallow the daemon's logs meanwhile, so on failure (only)
    the same compile and load run again in a child whose stderr we read."""
    import json
    import subprocess
    import sys
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".c") as f:
        f.write(text)
        f.flush()
        try:
            r = subprocess.run([sys.executable, "-c", _DIAGNOSE, f.name, json.dumps(flags), json.dumps(progs)],
                               capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
    lines = [x.strip() for x in r.stderr.splitlines() if x.strip()]
    for x in lines:
        if "error:" in x:
            return x.split("error:", 1)[1].strip()
    for i, x in enumerate(lines):  # a verifier log: the line before its "processed N insns" summary
        if x.startswith("processed ") and i:
            return lines[i - 1][:200]
    return ""


def explain(e: BaseException) -> str:
    """One line for a failure to load or attach, with what the errno means here."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    err = getattr(e, "errno", None)
    if err == errno.EPERM:
        mode = kernel.capabilities().lockdown
        return f"{text} (EPERM: lockdown={mode} or missing CAP_BPF/CAP_NET_ADMIN)"
    if err in (errno.EOPNOTSUPP, errno.EINVAL):
        return f"{text} (the kernel does not support this attachment)"
    return text[:300]
