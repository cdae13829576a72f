"""Give back what the probe compiler left resident, where it ran in-process (a trace, doctor's
or a bench's own probes: the daemon's come from a child, compiled.py, and this only trims its
heap). When the daemon compiled in-process with bcc's clang/LLVM, after a compile it held 197 MB RSS
for the seed lab, of which ~41 MB were heap pages clang had freed but glibc kept, and ~77 MB the
text of libLLVM, libclang-cpp and libbcc, touched once by the compile and never again (measured
with /proc/self/smaps_rollup: 197 -> 156 MB after malloc_trim, -> 78 MB after MADV_PAGEOUT).
The parsed kernel BTF is let go too.

Paging out read-only file mappings is safe: a page needed again faults back in from the file. Kernels before 5.4 have
no MADV_PAGEOUT: then only the trim happens, and the log says so."""

from __future__ import annotations

import ctypes
import errno
import gc

MADV_PAGEOUT = 21                       # include/uapi/asm-generic/mman-common.h, Linux 5.4
COMPILER_LIBS = ("libLLVM", "libclang", "libbcc")
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def release(first: bool = True) -> dict:
    """malloc_trim, then page out the compiler libraries' read-only mappings: RSS before and
    after, and what failed (never raises: the probes run the same either way). FIRST (once the
    probes are built) also lets the parsed BTF go, with a gc pass; later calls (after a sync
    loaded program copies) skip that: a full gc holds the GIL for tens of ms."""
    before = rss_kib()
    if first:
        # the parsed kernel BTF (~150k types as tuples) is only needed to build the probes; what
        # later steps read of it (attach types, stats offsets, reason names) is cached apart
        from . import btf
        from . import links, reasons
        links._attach_types()
        links._stats_offsets()
        reasons.reason_names()
        btf.kernel.cache_clear()
        gc.collect()
    _libc.malloc_trim(0)
    error = ""
    with open("/proc/self/maps") as f:
        maps = f.read().splitlines()
    for line in maps:
        f = line.split()
        if len(f) < 6 or "w" in f[1] or not any(k in f[5] for k in COMPILER_LIBS):
            continue
        start, end = (int(x, 16) for x in f[0].split("-"))
        if _libc.madvise(start, end - start, MADV_PAGEOUT) != 0 and not error:
            e = ctypes.get_errno()
            error = f"madvise(MADV_PAGEOUT): {errno.errorcode.get(e, e)}"
    return {"rss_mib_before": round(before / 1024, 1), "rss_mib_after": round(rss_kib() / 1024, 1),
            **({"error": error} if error else {})}
