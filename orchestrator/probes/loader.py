"""Compile the probe families with bcc, attach them to the lab's devices and namespaces, and
keep them attached as the lab heals (a recreated veth has a new ifindex, a recreated namespace
a new cookie): `sync()` runs after every reconcile pass.

A family that cannot compile, load or attach is reported with the kernel's reason and the
others carry on: the daemon runs with whatever this kernel allows, and says what is missing.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
from dataclasses import dataclass, field

from .. import logs, netns
from ..model import Desired
from . import btf, kernel, links
from .points import MAX_SHIFT, NF_POINTS

log = logs.get("bridgelab.probes")

PROBE_DIR = os.environ.get("BRIDGELAB_PROBE_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "probes")
FAMILIES = ("tc", "nf", "drops", "fdb")
SCENERY = ("lan", "gateway", "client", "internet")
# a container's own hops add nothing to the metrics but the drops inside it: where its packets
# enter and leave its stack is enough to attribute those (programs nf_cN: no packet reads)
CONTAINER_NF = tuple(p for p in NF_POINTS if p.name in ("prerouting", "output"))
_PLACEHOLDER = 0x626C6E73636F6F6B  # "blnscook", NS_COOKIE in tc_points.c
SOURCES = {"tc": "tc_points.c", "nf": "nf_hooks.c", "drops": "drops.c", "fdb": "bridge_fdb.c"}


@dataclass
class TraceFilter:
    proto: int = 0           # IPPROTO_*; 0 any
    net: int = 0             # network byte order as the packet has it
    mask: int = 0
    port: int = 0


@dataclass
class Family:
    name: str
    ok: bool = False
    reason: str = ""
    bpf: object = None
    progs: dict = field(default_factory=dict)      # function name -> fd
    degraded: str = ""


@dataclass
class Attachment:
    ns: str | None
    node: str
    ifname: str
    ifindex: int
    inode: int
    fds: list[int]


def _kernel_offsets() -> list[str]:
    b = btf.kernel()
    want = {
        "SKB_LEN": ("sk_buff", "len"), "SKB_HASH": ("sk_buff", "hash"), "SKB_HEAD": ("sk_buff", "head"),
        "SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
        "ST_HOOK": ("nf_hook_state", "hook"), "ST_IN": ("nf_hook_state", "in"),
        "ST_OUT": ("nf_hook_state", "out"), "ST_NET": ("nf_hook_state", "net"),
        "DEV_IFINDEX": ("net_device", "ifindex"), "NET_COOKIE": ("net", "net_cookie"),
    }
    return [f"-D{k}={b.member(s, m)[0]}" for k, (s, m) in want.items()]


def kernel_hz() -> tuple[int, str]:
    """CONFIG_HZ of the running kernel and where it was read; 1000 (the highest usual value, so
    the shortest window a jiffies count can mean) when the kernel's config cannot be found."""
    import gzip
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


class Probes:
    def __init__(self, lab: str, trace: TraceFilter | None = None, read_packet: bool | None = None,
                 ring_pages: int = 256, probe_dir: str | None = None, fast_bits: int = 11):
        self.lab = lab
        self.fast_bits = fast_bits   # log2 of the counters' fast slots (common.h); tests make it tiny
        self.trace = trace
        self.probe_dir = probe_dir or PROBE_DIR
        self.ring_pages = ring_pages
        caps = kernel.capabilities()
        if read_packet is None:
            read_packet = caps.read_kernel and os.environ.get("BRIDGELAB_PROBE_NO_READ") != "1"
        self.read_packet = read_packet
        self.families: dict[str, Family] = {n: Family(n) for n in FAMILIES}
        self.tc: dict[tuple[str | None, str], Attachment] = {}
        self.nf: dict[str | None, Attachment] = {}
        self.cookies: dict[int, str] = {}         # netns cookie -> node
        self.ifnames: dict[tuple[int, int], str] = {}  # (cookie, ifindex) -> name
        self.attach_errors: dict[str, str] = {}   # "tc host/veth1" -> reason
        self.lock = threading.Lock()
        self._tc_copies: dict[tuple[str, int], int] = {}
        self._retired_stats = [0, 0]   # run_time_ns, run_cnt of tc copies already closed
        self.stats_enabled = False      # someone holds BPF_ENABLE_STATS: run_stats() means something
        self.known_cookies: dict[int, str] = {}
        self.known_ifnames: dict[tuple[int, int], str] = {}

    # ---------------------------------------------------------------- compile
    def _cflags(self, families: list[str]) -> list[str]:
        f = ["-w", f"-I{self.probe_dir}", f"-DRING_PAGES={self.ring_pages}",
             f"-DSKB_CONSUMED_MAX={_consumed_max()}", f"-DFAST_BITS={self.fast_bits}", *_kernel_offsets()]
        # the drop attribution window, 200 ms, in the unit of the probes' clock (common.h NOW()):
        # nanoseconds in a trace, jiffies for the metrics probes
        if self.trace is not None:
            t = self.trace
            f += ["-DTRACE", f"-DF_PROTO={t.proto}", f"-DF_NET={t.net}U", f"-DF_NET_MASK={t.mask}U",
                  f"-DF_PORT={t.port}", "-DATTRIBUTION=200000000ULL"]
        else:
            hz, where = kernel_hz()
            if where.startswith("assumed"):
                log.info("kernel HZ unknown: drop attribution window is 200 jiffies (200 ms at HZ=1000, "
                         "longer at a lower HZ)", hz=hz, source=where)
            f.append(f"-DATTRIBUTION={max(1, hz // 5)}ULL")
        if "nf" in families and self.read_packet:
            f.append("-DREAD_PACKET")
        if "nf" in families and "tc" in families:
            f.append("-DHAVE_TC")      # nf matches the flows tc found
        if "drops" in families and "nf" in families:
            f.append("-DHAVE_NF")      # drops are attributed to where nf saw the skb last
        return f

    def load(self) -> None:
        """All families in one compile unit, sharing their maps; if that fails, each on its own
        (no sharing: drops unattributed, nf matching only what it can read) so one broken family
        costs only itself. Reading packets at netfilter hooks is tried first where the kernel may
        allow it, and given up (degraded, said) if the verifier refuses."""
        from bcc import BPF  # Debian's python3-bpfcc; imported here so the CLI starts fast
        at_nf = None
        try:
            at_nf = links.attach_type("BPF_NETFILTER")
        except OSError:
            pass
        self._plan = {
            "tc": [("tc_ingress", BPF.SCHED_CLS, -1), ("tc_egress", BPF.SCHED_CLS, -1)],
            "nf": [(f"nf_p{p.id}", 32, at_nf) for p in NF_POINTS]        # BPF_PROG_TYPE_NETFILTER
                  + [(f"nf_c{p.id}", 32, at_nf) for p in CONTAINER_NF],
            "drops": [],                                                  # TRACEPOINT_PROBE attaches itself
            "fdb": [],
        }
        avail = []
        for name in FAMILIES:
            fam = self.families[name]
            if name == "tc" and not kernel.capabilities().tcx:
                fam.reason = "this kernel has no tcx links (BPF_TCX_INGRESS, Linux ≥ 6.6)"
            elif name == "nf" and at_nf is None:
                fam.reason = "this kernel has no netfilter BPF links (BPF_NETFILTER, Linux ≥ 6.4)"
            elif name == "drops" and not os.path.isdir(f"{kernel.TRACEFS}/events/skb/kfree_skb"):
                fam.reason = ("tracepoint skb:kfree_skb not found: tracefs not mounted at "
                              f"{kernel.TRACEFS} (make setup mounts it) or not in this kernel")
            elif name == "fdb" and not os.path.isdir(f"{kernel.TRACEFS}/events/bridge/br_fdb_update"):
                fam.reason = f"tracepoint bridge:br_fdb_update not found under {kernel.TRACEFS}"
            else:
                avail.append(name)
        read_error = ""
        while avail:
            try:
                self._compile(avail)
                break
            except _LoadError as e:
                if e.family == "nf" and self.read_packet:
                    read_error = e.text
                    log.warning("probe degraded", probe="nf", reason=e.text[:200])
                    self.read_packet = False
                    continue
                together = e.text
            except Exception as e:  # bcc raises bare Exception for compile failures
                together = str(e)
            log.warning("probes compiled one by one", reason=together[:300])
            for name in avail:
                try:
                    self._compile([name])
                except Exception as e:
                    fam = self.families[name]
                    fam.reason, fam.bpf, fam.progs = _explain(e), None, {}
                    log.error("probe failed", probe=name, reason=fam.reason)
            break
        nf = self.families["nf"]
        if nf.ok and not self.read_packet:
            mode = kernel.capabilities().lockdown
            why = (read_error or f"lockdown={mode} refuses bpf_probe_read_kernel" if mode == "confidentiality"
                   else read_error or "BRIDGELAB_PROBE_NO_READ=1 (as if lockdown=confidentiality)")
            nf.degraded = f"no tuples at netfilter hooks ({why}): hops matched by flow hash, NAT translation counts unavailable"
        if self.families["drops"].ok and not (nf.ok and nf.bpf is self.families["drops"].bpf):
            self.families["drops"].degraded = "drops not attributed to a node or hook (the netfilter probes did not load with them)"
        for fam in self.families.values():
            if fam.ok:
                log.info("probe loaded", probe=fam.name, degraded=fam.degraded or None)

    def _compile(self, families: list[str]) -> None:
        from bcc import BPF
        # one text, not #includes: bcc only turns functions of the main file into programs
        text = ""
        for n in families:
            with open(os.path.join(self.probe_dir, SOURCES[n])) as f:
                text += f'#line 1 "{SOURCES[n]}"\n' + f.read() + "\n"
        cflags = self._cflags(families)
        try:
            bpf = BPF(text=text.encode(), cflags=cflags)
        except Exception as e:
            detail = _diagnose(text, cflags, [])
            raise type(e)(f"{e}: {detail}" if detail else str(e)) from None
        progs: dict[str, dict] = {}
        for name in families:
            progs[name] = {}
            for fn, ptype, at in self._plan[name]:
                try:
                    progs[name][fn] = bpf.load_func(fn.encode(), ptype, attach_type=at).fd
                except Exception as e:
                    bpf.cleanup()
                    detail = _diagnose(text, cflags, [[fn, ptype, at]])
                    raise _LoadError(name, f"{e}: {detail}" if detail else str(e)) from None
        for name in families:
            fam = self.families[name]
            fam.bpf, fam.progs, fam.ok = bpf, progs[name], True

    def _tc_prog(self, fn: str, cookie: int) -> int:
        """A copy of tc program FN for the namespace with COOKIE (see NS_COOKIE in tc_points.c):
        the compiled instructions, the placeholder's ld_imm64 patched, loaded once more."""
        import ctypes as ct
        import struct as st
        from bcc.libbcc import lib
        fam = self.families["tc"]
        key = (fn, cookie)
        if key in self._tc_copies:
            return self._tc_copies[key]
        mod = fam.bpf.module
        start = lib.bpf_function_start(mod, fn.encode())
        size = lib.bpf_function_size(mod, fn.encode())
        code = bytearray(ct.string_at(start, size))
        found = 0
        for i in range(0, len(code) - 15, 8):
            if code[i] == 0x18 and st.unpack_from("<I", code, i + 4)[0] == _PLACEHOLDER & 0xFFFFFFFF \
                    and st.unpack_from("<I", code, i + 12)[0] == _PLACEHOLDER >> 32:
                st.pack_into("<I", code, i + 4, cookie & 0xFFFFFFFF)
                st.pack_into("<I", code, i + 12, cookie >> 32)
                found += 1
        if found != 1:
            raise OSError(errno.EINVAL, f"{fn}: namespace placeholder found {found} times, expected once")
        buf = ct.create_string_buffer(bytes(code), len(code))
        fd = lib.bcc_func_load(mod, fam.bpf.SCHED_CLS, fn.encode(), buf, len(code),
                               lib.bpf_module_license(mod), lib.bpf_module_kern_version(mod),
                               0, None, 0, None, -1)
        if fd < 0:
            err = ct.get_errno()
            raise OSError(err, f"loading {fn} for a namespace: {os.strerror(err)}")
        self._tc_copies[key] = fd
        return fd

    # ---------------------------------------------------------------- attach
    def sync(self, d: Desired) -> int:
        """Attach to what the lab has now; re-attach where a device or namespace was made anew;
        let go of what is gone. Returns the number of links made."""
        made = 0
        node_of = {ns: node for node, ns in d.nodes.items()}
        node_of.setdefault(d.host_ns, "host")
        skip = self._scenery(d)
        want_if: dict[tuple[str | None, str], None] = {}
        for b in d.bridges:
            if b.ns not in skip:
                want_if[(b.ns, b.name)] = None
        for v in d.veths:
            for e in (v.a, v.b):
                if e.ns not in skip:
                    want_if[(e.ns, e.name)] = None
        if d.uplink:
            want_if[(d.host_ns, d.uplink)] = None
        cookies: dict[int, str] = {}
        ifnames: dict[tuple[int, int], str] = {}
        seen: dict[str | None, tuple[int, int, dict[str, int]]] = {}   # ns -> inode, cookie, devices
        for ns in d.managed_ns():
            if ns is not None and not netns.exists(ns):
                continue
            try:
                ino = netns.inode(ns)
                cookie = links.netns_cookie(ns)
                with netns.entered(ns):
                    devices = {name: idx for idx, name in socket.if_nameindex()}
            except OSError:
                continue
            seen[ns] = (ino, cookie, devices)
            cookies[cookie] = node_of.get(ns, ns or "host")
            # every device of the namespace gets a name now (a stranger's is "other"), so a count
            # never changes label later, which would make its counter fall
            for idx in devices.values():
                ifnames[(cookie, idx)] = "other"
            ifnames[(cookie, 1)] = "lo"
            if ns not in skip:
                made += self._sync_nf(ns, node_of.get(ns, "host"), ino, full=(ns == d.host_ns or self.trace is not None))
        tc = self.families["tc"]
        live = set()
        for (ns, ifname) in want_if:
            if ns not in seen or not seen[ns][2].get(ifname):
                continue
            ino, cookie, devices = seen[ns]
            ifindex = devices[ifname]
            ifnames[(cookie, ifindex)] = ifname
            live.add((ns, ifname))
            if not tc.ok:
                continue
            cur = self.tc.get((ns, ifname))
            if cur and cur.ifindex == ifindex and cur.inode == ino and cur.fds:
                continue  # (one that failed to attach is tried again)
            if cur:
                _close(cur.fds)
            fds = []
            try:
                for fn, egress in (("tc_ingress", False), ("tc_egress", True)):
                    fds.append(links.tcx(self._tc_prog(fn, cookie), ns, ifindex, egress))
                self.attach_errors.pop(f"tc {node_of.get(ns)}/{ifname}", None)
                made += 2
            except OSError as e:
                _close(fds)
                fds = []
                self.attach_errors[f"tc {node_of.get(ns)}/{ifname}"] = _explain(e)
            self.tc[(ns, ifname)] = Attachment(ns, node_of.get(ns, "host"), ifname, ifindex, ino, fds)
        for key in [k for k in self.tc if k not in live]:
            _close(self.tc.pop(key).fds)
        for ns in [n for n in self.nf if n not in set(d.managed_ns()) or (n is not None and not netns.exists(n))]:
            _close(self.nf.pop(ns).fds)
        with self.lock:
            for key in [k for k in self._tc_copies if k[1] not in cookies]:
                fd = self._tc_copies.pop(key)
                try:  # its runs stay counted: bridgelab_probe_run*_total never go backwards
                    a, b = links.prog_stats(fd)
                    self._retired_stats[0] += a
                    self._retired_stats[1] += b
                except OSError:
                    pass
                _close([fd])
        with self.lock:
            self.cookies, self.ifnames = cookies, ifnames
            # names stay known after a device or namespace is gone: the counts it left in the
            # maps are folded into the same label set (collector.fold), never lost
            self.known_cookies.update(cookies)
            self.known_ifnames.update(ifnames)
        return made

    def _scenery(self, d: Desired) -> set:
        """Namespaces the metrics probes leave alone: the sandbox's stand-ins for the LAN, the
        gateway, the Windows client and the internet are not the lab a host runs (host mode has
        none of them), and probing them would triple the cost per packet. A trace follows
        packets through them too."""
        if self.trace is not None or d.mode != "sandbox":
            return set()
        return {d.nodes[n] for n in SCENERY if n in d.nodes}

    def _sync_nf(self, ns: str | None, node: str, ino: int, full: bool = True) -> int:
        nf = self.families["nf"]
        if not nf.ok:
            return 0
        cur = self.nf.get(ns)
        if cur and cur.inode == ino and cur.fds:
            return 0
        if cur:
            _close(cur.fds)
        fds = []
        try:
            for p in NF_POINTS if full else CONTAINER_NF:
                prog = nf.progs[f"nf_p{p.id}" if full else f"nf_c{p.id}"]
                for k in range(MAX_SHIFT):
                    try:
                        fds.append(links.netfilter(prog, ns, p.hook, p.priority + k * p.step))
                        break
                    except OSError as e:
                        if e.errno != errno.EBUSY or k == MAX_SHIFT - 1:
                            raise
            self.attach_errors.pop(f"nf {node}", None)
        except OSError as e:
            _close(fds)
            fds = []
            self.attach_errors[f"nf {node}"] = _explain(e)
        self.nf[ns] = Attachment(ns, node, "", 0, ino, fds)
        return len(fds)

    def close(self) -> None:
        for a in list(self.tc.values()) + list(self.nf.values()):
            _close(a.fds)
        _close(list(self._tc_copies.values()))
        self._tc_copies.clear()
        self.tc.clear()
        self.nf.clear()
        done = set()
        for fam in self.families.values():
            if fam.bpf is not None and id(fam.bpf) not in done:
                done.add(id(fam.bpf))
                try:
                    fam.bpf.cleanup()
                except Exception:
                    pass
            fam.bpf = None

    # ---------------------------------------------------------------- state
    def attached(self) -> dict[str, bool]:
        """Per probe family: loaded and attached everywhere it should be."""
        out = {}
        for name, fam in self.families.items():
            if not fam.ok:
                out[name] = False
            elif name == "tc":  # list(): a snapshot, the loop thread may be syncing meanwhile
                att = list(self.tc.values())
                out[name] = bool(att) and all(a.fds for a in att)
            elif name == "nf":
                att = list(self.nf.values())
                out[name] = bool(att) and all(a.fds for a in att)
            else:
                out[name] = True
        return out

    def run_stats(self) -> dict[str, tuple[int, int]]:
        """Per family (run_time_ns, run_cnt), summed over its programs and per-namespace copies;
        zero unless someone holds BPF stats enabled (links.enable_run_stats)."""
        out = {}
        with self.lock:  # sync closes copies under it: no fd read here is stale or reused
            for name, fam in self.families.items():
                if not fam.ok:
                    continue
                fds = list(fam.progs.values()) + (list(self._tc_copies.values()) if name == "tc" else [])
                ns, cnt = self._retired_stats if name == "tc" else (0, 0)
                for fd in fds:
                    try:
                        a, b = links.prog_stats(fd)
                    except OSError:
                        continue
                    ns, cnt = ns + a, cnt + b
                out[name] = (ns, cnt)
        return out

    def table(self, family: str, name: str):
        fam = self.families[family]
        return fam.bpf[name] if fam.ok and fam.bpf is not None else None


class _LoadError(Exception):
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


def _diagnose(text: str, cflags: list[str], progs: list) -> str:
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
            r = subprocess.run([sys.executable, "-c", _DIAGNOSE, f.name, json.dumps(cflags), json.dumps(progs)],
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


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def _explain(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    err = getattr(e, "errno", None)
    if err == errno.EPERM:
        mode = kernel.capabilities().lockdown
        return f"{text} (EPERM: lockdown={mode} or missing CAP_BPF/CAP_NET_ADMIN)"
    if err in (errno.EOPNOTSUPP, errno.EINVAL):
        return f"{text} (the kernel does not support this attachment)"
    return text[:300]
