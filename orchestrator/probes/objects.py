"""Maps and programs made from a compiled object (compiled.py) with the bpf(2) syscall itself.

The daemon never loads bcc: clang/LLVM stay out of its address space (they held 77 MB of its
RSS after a compile, and paged back in whenever a program copy was loaded for a namespace made
anew). What bcc produced in a child process — each program's instructions and the maps they
name — is made here again: the maps created, their descriptors written into the instructions'
map loads, the programs passed through the verifier, the tracepoint programs attached.
"""
from __future__ import annotations

import ctypes as ct
import errno
import os
import struct

from . import links
from .events import Tuple

_libc = ct.CDLL(None, use_errno=True)
_SYS_PERF_EVENT_OPEN = 298                      # x86_64
_BPF_MAP_CREATE, _BPF_MAP_LOOKUP_ELEM, _BPF_MAP_DELETE_ELEM, _BPF_PROG_LOAD = 0, 1, 3, 5
BPF_PSEUDO_MAP_FD = 1                           # src_reg of an ld_imm64 loading a map
PERCPU_TYPES = {5, 6, 10}                       # BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH
ARRAY_TYPES = {2, 6}
BPF_PROG_TYPE_TRACEPOINT = 5
_PERF_TYPE_TRACEPOINT = 2
_PERF_SAMPLE_RAW = 1 << 10
_PERF_FLAG_FD_CLOEXEC = 8
_PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_EVENT_IOC_SET_BPF = 0x40042408
_LOG_SIZE = 1 << 20


def map_create(spec: dict, name: str) -> int:
    return links._bpf(_BPF_MAP_CREATE, struct.pack("<IIIIIII16s", spec["type"], spec["key_size"], spec["value_size"],
                                                 spec["max_entries"], spec["flags"], 0, 0, name.encode()[:15]))


def prog_load(prog_type: int, insns: bytes, name: str, license: str = "GPL", expected_attach_type: int = 0) -> int:
    """BPF_PROG_LOAD; on refusal, again with the verifier's log, whose last words go in the error."""
    code = ct.create_string_buffer(insns, len(insns))
    lic = ct.create_string_buffer(license.encode())

    def attempt(log: ct.Array | None) -> int:
        attr = struct.pack("<IIQQIIQII16sII", prog_type, len(insns) // 8, ct.addressof(code), ct.addressof(lic),
                           1 if log is not None else 0, _LOG_SIZE if log is not None else 0,
                           ct.addressof(log) if log is not None else 0, 0, 0, name.encode()[:15], 0,
                           expected_attach_type)
        return links._bpf(_BPF_PROG_LOAD, attr)
    try:
        return attempt(None)
    except OSError as e:
        first = e
    log = ct.create_string_buffer(_LOG_SIZE)
    try:
        return attempt(log)   # (a verifier that passes the second time: take it)
    except OSError:
        pass
    lines = [x for x in log.value.decode(errors="replace").splitlines() if x.strip()]
    said = next((lines[i - 1] for i in range(len(lines) - 1, 0, -1) if lines[i].startswith("processed ")),
                lines[-1] if lines else "")
    raise OSError(first.errno, f"loading {name}: {os.strerror(first.errno)}" + (f": {said[:200]}" if said else ""))


def relocate(insns: bytes, relocs: list, fds: dict[str, int]) -> bytes:
    """Write each map's descriptor into the ld_imm64 instructions that load it."""
    code = bytearray(insns)
    for off, name in relocs:
        if code[off] != 0x18 or (code[off + 1] >> 4) != BPF_PSEUDO_MAP_FD:
            raise OSError(errno.EINVAL, f"compiled object: no map load at instruction {off // 8}")
        struct.pack_into("<i", code, off + 4, fds[name])
    return bytes(code)


def attach_tracepoint(prog_fd: int, tracepoint: str) -> int:
    """A perf event on the tracepoint with the program on it (what bcc does): the program runs
    on every CPU, whichever CPU the event was opened for. Closing the fd detaches it."""
    from .kernel import TRACEFS
    cat, ev = tracepoint.split(":")
    with open(f"{TRACEFS}/events/{cat}/{ev}/id") as f:
        tp_id = int(f.read())
    attr = ct.create_string_buffer(struct.pack("<IIQQQ", _PERF_TYPE_TRACEPOINT, 128, tp_id, 1, _PERF_SAMPLE_RAW)
                                   .ljust(128, b"\0"), 128)
    struct.pack_into("<I", attr, 48, 1)          # wakeup_events
    fd = _libc.syscall(_SYS_PERF_EVENT_OPEN, attr, -1, 0, -1, _PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, f"perf_event_open({tracepoint}): {os.strerror(err)}")
    for req, arg in ((_PERF_EVENT_IOC_SET_BPF, prog_fd), (_PERF_EVENT_IOC_ENABLE, 0)):
        if _libc.ioctl(fd, req, arg) != 0:
            err = ct.get_errno()
            os.close(fd)
            raise OSError(err, f"attaching to {tracepoint}: {os.strerror(err)}")
    return fd


# --- the maps user space reads, typed as in probes/*.c (sizes checked against the kernel's) ----

class TcKey(ct.Structure):
    _fields_ = [("cookie", ct.c_uint64), ("ifindex", ct.c_uint32), ("dir", ct.c_uint8), ("proto", ct.c_uint8),
                ("family", ct.c_uint8), ("ndp", ct.c_uint8)]


class Counter(ct.Structure):
    _fields_ = [("packets", ct.c_uint64), ("bytes", ct.c_uint64)]


class NfKey(ct.Structure):
    _fields_ = [("cookie", ct.c_uint64), ("iif", ct.c_uint32), ("oif", ct.c_uint32), ("point", ct.c_uint8),
                ("family", ct.c_uint8), ("_pad", ct.c_uint8 * 6)]


class DropKey(ct.Structure):
    _fields_ = [("cookie", ct.c_uint64), ("reason", ct.c_uint32), ("point", ct.c_uint8), ("family", ct.c_uint8),
                ("_pad", ct.c_uint8 * 2)]


class NatKey(ct.Structure):
    _fields_ = [("cookie", ct.c_uint64), ("kind", ct.c_uint8), ("family", ct.c_uint8), ("_pad", ct.c_uint8 * 6)]


class FdbKey(ct.Structure):
    _fields_ = [("addr", ct.c_uint8 * 6), ("vid", ct.c_uint16)]


TYPES = {
    "tc_counts": (TcKey, Counter), "nf_counts": (NfKey, Counter), "drop_counts": (DropKey, ct.c_uint64),
    "nat_counts": (NatKey, ct.c_uint64), "drop_samples": (DropKey, Tuple), "drop_unattributed": (ct.c_uint32, ct.c_uint64),
    "fdb_learned": (FdbKey, ct.c_uint64),
}


class Map:
    """The part of bcc's table interface the collector uses, over a map descriptor: items(),
    keys(), [key], del [key]; map_fd and max_entries for the batch reads in links.py."""

    def __init__(self, name: str, fd: int, spec: dict):
        self.name, self.map_fd, self.max_entries = name, fd, spec["max_entries"]
        self.percpu = spec["type"] in PERCPU_TYPES
        self.key_size, self.value_size = spec["key_size"], spec["value_size"]
        self.Key, self.Leaf = TYPES.get(name, (None, None))
        if self.Key is not None and (ct.sizeof(self.Key), ct.sizeof(self.Leaf)) != (self.key_size, self.value_size):
            raise OSError(errno.EINVAL, f"map {name}: key/value {self.key_size}/{self.value_size} bytes in the object, "
                          f"{ct.sizeof(self.Key)}/{ct.sizeof(self.Leaf)} in objects.TYPES")

    def _leaf(self, raw: bytes):
        v = self.Leaf.from_buffer_copy(raw)
        return v.value if self.percpu and not isinstance(v, ct.Structure) else v

    def items(self) -> list:
        rows = links.dump_map(self.map_fd, self.key_size, self.value_size, self.percpu, self.max_entries)
        if self.percpu:
            return [(self.Key.from_buffer_copy(k), [self._leaf(v) for v in vs]) for k, vs in rows]
        return [(self.Key.from_buffer_copy(k), self._leaf(vs[0])) for k, vs in rows]

    def keys(self) -> list:
        return [k for k, _ in self.items()]

    def _key(self, key) -> ct.Array:
        raw = bytes(self.Key(key)) if isinstance(key, int) else bytes(key)
        return ct.create_string_buffer(raw, len(raw))

    def __getitem__(self, key):
        k = self._key(key)
        vsz = (self.value_size + 7) // 8 * 8 if self.percpu else self.value_size
        n = links.NCPU if self.percpu else 1
        v = ct.create_string_buffer(vsz * n)
        try:
            links._bpf(_BPF_MAP_LOOKUP_ELEM, struct.pack("<IIQQ", self.map_fd, 0, ct.addressof(k), ct.addressof(v)))
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise KeyError(key) from None
            raise
        vals = [self._leaf(v.raw[i * vsz:i * vsz + self.value_size]) for i in range(n)]
        return vals if self.percpu else vals[0]

    def __delitem__(self, key) -> None:
        k = self._key(key)
        try:
            links._bpf(_BPF_MAP_DELETE_ELEM, struct.pack("<IIQ", self.map_fd, 0, ct.addressof(k)))
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise KeyError(key) from None
            raise


def load(p, obj: dict) -> None:
    """Make every family of the object that compiled in the child: its maps, programs and
    tracepoint attachments, into p.families (what build.load does with bcc in-process)."""
    from .build import explain
    facts = obj["facts"]
    links.set_facts(facts)
    p.read_packet = obj["read_packet"]
    unit_maps: list[dict[str, int]] = []
    for unit in obj["units"]:
        fds: dict[str, int] = {}
        try:
            for name, spec in unit["maps"].items():
                fds[name] = map_create(spec, name)
        except OSError as e:
            for fd in fds.values():
                os.close(fd)
            fds = {"error": explain(e)}
        unit_maps.append(fds)
    for name, f in obj["families"].items():
        fam = p.families[name]
        fam.reason, fam.degraded = f["reason"], f["degraded"]
        if not f["ok"]:
            continue
        unit, fds = obj["units"][f["unit"]], unit_maps[f["unit"]]
        if "error" in fds:
            fam.reason = f"creating its maps: {fds['error']}"
            continue
        made: list[int] = []
        try:
            insns, progs = {}, {}
            for fn in f["programs"]:
                prog = unit["programs"][fn]
                insns[fn] = relocate(bytes.fromhex(prog["insns"]), prog["relocs"], fds)
                progs[fn] = prog_load(prog["type"], insns[fn], fn, facts["license"], prog["attach_type"])
                made.append(progs[fn])
            if f["tracepoint"]:
                made.append(attach_tracepoint(progs[f["programs"][0]], f["tracepoint"]))
            maps = {m: Map(m, fd, unit["maps"][m]) for m, fd in fds.items()}
        except OSError as e:
            for fd in made:
                os.close(fd)
            fam.reason = explain(e)
            continue
        fam.ok, fam.progs, fam.insns, fam.maps, fam.owned = True, progs, insns, maps, made
        fam.license = facts["license"]
    p.owned_map_fds = [fd for fds in unit_maps for k, fd in fds.items() if k != "error"]
