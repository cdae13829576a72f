"""BPF links made with the raw bpf(2) syscall: tcx (tc without qdiscs or filters) and netfilter.

Links are held by file descriptor only, never pinned: when the daemon exits, however it exits
(kill -9 included), the kernel detaches every program. Nothing of ours can outlive us in a
qdisc, a filter or bpffs.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache
import os
import socket
import struct

from ..adapters import netns
from . import btf

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF = 321            # x86_64
_BPF_LINK_CREATE = 28
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0
SO_NETNS_COOKIE = 71
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    fd = _libc.syscall(_SYS_BPF, cmd, buf, 128)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


# what a compiled object (compiled.py) already read from the kernel's BTF in the child that
# built it: a daemon loading that object never parses the BTF itself (0.13 s and ~30 MB)
_FACTS: dict = {}


def set_facts(facts: dict) -> None:
    _FACTS.clear()
    _FACTS.update(facts)


def facts() -> dict:
    """What a compiled object needs the loading side to know about this kernel."""
    return {"attach_types": {k: v for k, v in _attach_types().items()
                             if k in ("BPF_TCX_INGRESS", "BPF_TCX_EGRESS", "BPF_NETFILTER")},
            "stats_offsets": list(_stats_offsets())}


@lru_cache(maxsize=1)
def _attach_types() -> dict[str, int]:
    if "attach_types" in _FACTS:
        return dict(_FACTS["attach_types"])
    return btf.kernel().enum("bpf_attach_type")


def attach_type(name: str) -> int:
    """The kernel's own value for BPF_TCX_INGRESS and friends (from its BTF, not a header).
    Kept apart from the parsed BTF, which the daemon frees once its probes are built."""
    try:
        return _attach_types()[name]
    except KeyError:
        raise OSError(95, f"this kernel has no {name}") from None


def tcx(prog_fd: int, ns: str | None, ifindex: int, egress: bool) -> int:
    """Attach a SCHED_CLS program to IFINDEX in NS; the device is looked up in the caller
    thread's namespace, so we enter NS for the call."""
    at = attach_type("BPF_TCX_EGRESS" if egress else "BPF_TCX_INGRESS")
    with netns.entered(ns):
        return _bpf(_BPF_LINK_CREATE, struct.pack("<IIII", prog_fd, ifindex, at, 0))


def netfilter(prog_fd: int, ns: str | None, hook: int, priority: int, pf: int = NFPROTO_IPV4) -> int:
    """A netfilter link: one family's hook (IPv4 and IPv6 hooks are separate lists in the
    kernel, so a dual-stack namespace takes each program twice)."""
    at = attach_type("BPF_NETFILTER")
    with netns.entered(ns):
        return _bpf(_BPF_LINK_CREATE, struct.pack("<IIIIIIiI", prog_fd, 0, at, 0, pf, hook, priority, 0))


def netns_cookie(ns: str | None) -> int:
    """The cookie bpf_get_netns_cookie() and net->net_cookie give inside NS."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    finally:
        s.close()


def enable_run_stats() -> int:
    """An fd that keeps the kernel counting run_time_ns/run_cnt of every program while open
    (the syscall, not the kernel.bpf_stats_enabled sysctl: nothing global to restore)."""
    return _bpf(_BPF_ENABLE_STATS, struct.pack("<I", _BPF_STATS_RUN_TIME))


def prog_stats(prog_fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program, from BPF_OBJ_GET_INFO_BY_FD."""
    info = ctypes.create_string_buffer(256)
    attr = struct.pack("<IIQ", prog_fd, 256, ctypes.addressof(info))
    _bpf(15, attr)  # BPF_OBJ_GET_INFO_BY_FD
    at_time, at_cnt = _stats_offsets()
    return struct.unpack_from("<Q", info.raw, at_time)[0], struct.unpack_from("<Q", info.raw, at_cnt)[0]


@lru_cache(maxsize=1)
def _stats_offsets() -> tuple[int, int]:
    if "stats_offsets" in _FACTS:
        return tuple(_FACTS["stats_offsets"])
    b = btf.kernel()
    return b.member("bpf_prog_info", "run_time_ns")[0], b.member("bpf_prog_info", "run_cnt")[0]


_BPF_MAP_LOOKUP_BATCH = 24


def _possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        n = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            n = max(n, int(hi or lo) + 1)
        return n


NCPU = _possible_cpus()


def dump_map(fd: int, key_size: int, value_size: int, percpu: bool, max_entries: int) -> list[tuple[bytes, list[bytes]]]:
    """Every (key, [value per CPU]) of a hash map in as few syscalls as the kernel allows
    (BPF_MAP_LOOKUP_BATCH): a scrape must not spend its time in one syscall and one ctypes
    object per key while holding the GIL the daemon's event loop needs."""
    vsz = (value_size + 7) // 8 * 8 if percpu else value_size
    ncpu = NCPU if percpu else 1
    count = max(1, max_entries)
    keys = ctypes.create_string_buffer(count * key_size)
    vals = ctypes.create_string_buffer(count * vsz * ncpu)
    out_batch = ctypes.create_string_buffer(max(8, key_size))
    in_batch = ctypes.create_string_buffer(max(8, key_size))
    rows: list[tuple[bytes, list[bytes]]] = []
    first = True
    while True:
        attr = struct.pack("<QQQQIIQQ", 0 if first else ctypes.addressof(in_batch), ctypes.addressof(out_batch),
                           ctypes.addressof(keys), ctypes.addressof(vals), count, fd, 0, 0)
        buf = ctypes.create_string_buffer(attr, 128)
        r = _libc.syscall(_SYS_BPF, _BPF_MAP_LOOKUP_BATCH, buf, len(attr))
        err = ctypes.get_errno() if r < 0 else 0
        got = struct.unpack_from("<I", buf.raw, 32)[0]  # the kernel writes back how many it copied
        kraw, vraw = keys.raw, vals.raw
        for i in range(got):
            k = kraw[i * key_size:(i + 1) * key_size]
            base = i * vsz * ncpu
            rows.append((k, [vraw[base + c * vsz: base + c * vsz + value_size] for c in range(ncpu)]))
        if r < 0:
            if err == 2:  # ENOENT: that was the last batch
                return rows
            raise OSError(err, os.strerror(err))
        in_batch.raw = out_batch.raw
        first = False


def dump_percpu_array(fd: int, value_size: int, max_entries: int) -> bytes:
    """Every value of a per-CPU array, raw: entry-major, CPU-minor, each value padded to 8 bytes
    as the kernel copies them. One buffer, no per-entry Python objects (read at every scrape)."""
    vsz = (value_size + 7) // 8 * 8
    keys = ctypes.create_string_buffer(max_entries * 4)
    vals = ctypes.create_string_buffer(max_entries * vsz * NCPU)
    out_batch = ctypes.create_string_buffer(8)
    attr = struct.pack("<QQQQIIQQ", 0, ctypes.addressof(out_batch), ctypes.addressof(keys),
                       ctypes.addressof(vals), max_entries, fd, 0, 0)
    buf = ctypes.create_string_buffer(attr, 128)
    r = _libc.syscall(_SYS_BPF, _BPF_MAP_LOOKUP_BATCH, buf, len(attr))
    err = ctypes.get_errno() if r < 0 else 0
    got = struct.unpack_from("<I", buf.raw, 32)[0]
    if r < 0 and err != 2:   # ENOENT: all of it came in this batch
        raise OSError(err, os.strerror(err))
    return vals.raw[:got * vsz * NCPU]


_BPF_MAP_UPDATE_ELEM = 2


def update_percpu(fd: int, key: bytes, values: list[bytes], value_size: int) -> None:
    """Write one element of a per-CPU map: VALUES holds each possible CPU's value in order."""
    vsz = (value_size + 7) // 8 * 8
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(b"".join(v.ljust(vsz, b"\0") for v in values), vsz * len(values))
    _bpf(_BPF_MAP_UPDATE_ELEM, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(kbuf), ctypes.addressof(vbuf), 0))
