"""The probes compiled once, in a child process, and kept on disk for the next start.

bcc compiles with an in-process clang/LLVM: ~1.6 s for the seed's probes, and once the compiler
has run its libraries and heap stay in the process (the daemon held 197 MB RSS after a compile,
87 MB after giving back what it could). So the daemon never compiles: a child does it (python -m
orchestrator.probes.compiled), writes what bcc produced — each program's instructions, where
they load which map, each map's shape, and what it read from the kernel's BTF — to a file, and
exits; the daemon makes the maps and programs from that file with bpf(2) (objects.py).

The file is named by a hash of everything the compile depends on: the C sources and the Python
that drives bcc, the options, the running kernel (its build, its BTF, its lockdown mode) and this
boot (the multicast drop range is a kernel text address, which KASLR moves at every boot). A
daemon restarted with nothing changed loads the file without a compile. The cache directory is
root's alone; a file in it that is not ours, not readable, or not for this key is compiled anew.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

from .. import logs

log = logs.get("bridgelab.probes")
VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(os.path.dirname(HERE))
COMPILE_TIMEOUT = 600
# the Python that decides what is compiled and how (the rest only loads or reads the result)
COMPILE_PY = ("build.py", "compiled.py", "btf.py", "kernel.py", "reasons.py", "points.py", "loader.py")


def cache_dir() -> str:
    return os.environ.get("BRIDGELAB_CACHE_DIR") or "/var/cache/bridgelab/probes"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _bcc_version() -> bytes:
    import importlib.util
    try:
        spec = importlib.util.find_spec("bcc")   # finds it without importing it (and libbcc)
    except (ImportError, ValueError):
        return b"no bcc"
    return _read(os.path.join(os.path.dirname(spec.origin), "version.py")) if spec and spec.origin else b"no bcc"


def key(p) -> str:
    """The hash naming the compiled object for probes P on this kernel and boot."""
    from .kernel import lockdown
    h = hashlib.sha256(f"v{VERSION} {p.ring_pages} {p.fast_bits} {p.read_packet} {lockdown()}".encode())
    u = os.uname()
    h.update(f"{u.release} {u.version} {u.machine}".encode())
    h.update(_read("/proc/sys/kernel/random/boot_id"))
    try:
        st = os.stat("/sys/kernel/btf/vmlinux")
        h.update(f"btf {st.st_size} {st.st_mtime_ns}".encode())
    except OSError:
        h.update(b"no btf")
    h.update(_bcc_version())
    for d, names in ((p.probe_dir, None), (HERE, COMPILE_PY), (os.path.join(HERE, "families"), None)):
        try:
            names = names or sorted(n for n in os.listdir(d) if n.endswith((".c", ".h", ".py")))
        except OSError:
            names = []
        for n in names:
            h.update(n.encode() + b"\0" + _read(os.path.join(d, n)) + b"\0")
    return h.hexdigest()[:32]


def _safe_dir(d: str) -> str:
    """'' when D may hold objects we load into the kernel: ours, and no one else may write."""
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.stat(d)
    except OSError as e:
        return f"{d}: {e.strerror}"
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return f"{d}: owned by uid {st.st_uid} or writable by others (mode {st.st_mode & 0o777:o})"
    return ""


def _load_file(path: str, want: str) -> tuple[dict | None, str]:
    """(the object, '') or (None, why it cannot be used)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        return None, "" if e.errno == errno.ENOENT else f"{path}: {e.strerror}"
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None, f"{path}: not ours or writable by others"
        with os.fdopen(fd, "rb") as f:
            fd = -1
            obj = json.loads(f.read())
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable ({e})"
    finally:
        if fd >= 0:
            os.close(fd)
    if not isinstance(obj, dict) or obj.get("key") != want or obj.get("version") != VERSION:
        return None, f"{path}: not the object for this key"
    return obj, ""


class CompileError(Exception):
    pass


def get(p) -> tuple[dict, dict]:
    """The compiled object for P: from the cache, or compiled now in a child (and cached).
    Returns (object, how: {"cache": "hit"|"miss"|"off", "compile_seconds", ...})."""
    want = key(p)
    d = cache_dir()
    unsafe = _safe_dir(d)
    how: dict = {"cache": "off" if unsafe else "miss"}
    if unsafe:
        log.warning("probe cache unusable: compiling every start", reason=unsafe)
        how["reason"] = unsafe
    path = os.path.join(d, f"probes-{want}.json")
    if not unsafe:
        obj, why = _load_file(path, want)
        if obj is not None:
            how["cache"] = "hit"
            return obj, how
        if why:
            log.warning("probe cache entry not used: compiling", reason=why)
            how["reason"] = why
    t0 = time.monotonic()
    out = path if not unsafe else os.path.join(tempfile.mkdtemp(prefix="bridgelab-probes-"), "probes.json")
    tmp = out + f".{os.getpid()}.tmp"
    cmd = [sys.executable, "-m", "orchestrator.probes.compiled", tmp, want, str(p.ring_pages), str(p.fast_bits),
           "1" if p.read_packet else "0", p.probe_dir]
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT, env=env, cwd=PACKAGE_ROOT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CompileError(f"probe compiler did not run: {e}") from None
    # the child's log lines (what it degraded, what failed) are the daemon's to show, as its own
    for line in r.stderr.splitlines():
        try:
            rec = json.loads(line)
            level, event = rec.pop("level", "info"), rec.pop("event", "probe compiler")
            for k in ("timestamp", "logger"):
                rec.pop(k, None)
            getattr(log, level if level in ("debug", "info", "warning", "error") else "info")(event, child="compiler", **rec)
        except (ValueError, AttributeError, TypeError):
            if line.strip():
                log.info("probe compiler", line=line.strip()[:400])
    if r.returncode != 0:
        last = next((x for x in reversed(r.stderr.splitlines()) if x.strip()), f"exit {r.returncode}")
        _unlink(tmp)
        raise CompileError(f"probe compiler failed: {last.strip()[:400]}")
    os.replace(tmp, out)
    if out == path:
        prune(d, keep=os.path.basename(path))
    obj, why = _load_file(out, want)
    if out != path:
        _unlink(out)
        os.rmdir(os.path.dirname(out))
    if obj is None:
        raise CompileError(f"probe compiler wrote no usable object: {why}")
    how["compile_seconds"] = round(time.monotonic() - t0, 3)
    return obj, how


STALE_DAYS = 7


def prune(d: str, keep: str, now: float | None = None) -> list[str]:
    """Objects of other keys (an earlier boot, kernel or version) left untouched for STALE_DAYS:
    removed when a new one is written, so the directory does not grow by one file per boot.
    A daemon running on one of them read it at its start and never again."""
    now = time.time() if now is None else now
    gone = []
    try:
        names = os.listdir(d)
    except OSError:
        return gone
    for n in names:
        if n == keep or not (n.startswith("probes-") and n.endswith(".json")):
            continue
        f = os.path.join(d, n)
        try:
            if now - os.stat(f).st_mtime > STALE_DAYS * 86400:
                os.unlink(f)
                gone.append(n)
        except OSError:
            pass
    return gone


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --- the child ------------------------------------------------------------------------------

def _map_info(fd: int) -> dict:
    import ctypes as ct
    from . import links
    info = ct.create_string_buffer(64)
    links._bpf(15, struct.pack("<IIQ", fd, 64, ct.addressof(info)))  # BPF_OBJ_GET_INFO_BY_FD
    t, _id, ks, vs, me, fl = struct.unpack_from("<IIIIII", info.raw)
    return {"type": t, "key_size": ks, "value_size": vs, "max_entries": me, "flags": fl}


def extract(p) -> dict:
    """What bcc made of P's families (loaded in this process by build.load), as plain data."""
    import ctypes as ct
    import re
    from bcc.libbcc import lib
    from . import links
    from .families import BY_NAME
    from .objects import BPF_PROG_TYPE_TRACEPOINT, BPF_PSEUDO_MAP_FD
    from .reasons import reason_names
    units: list[dict] = []
    by_bpf: dict[int, int] = {}
    families: dict[str, dict] = {}
    license = "GPL"
    for name, fam in p.families.items():
        spec = BY_NAME[name]
        f = {"ok": fam.ok, "reason": fam.reason, "degraded": fam.degraded, "unit": None,
             "programs": list(spec.functions), "tracepoint": spec.tracepoint}
        families[name] = f
        if not fam.ok:
            continue
        mod = fam.bpf.module
        license = lib.bpf_module_license(mod).decode()
        if id(fam.bpf) not in by_bpf:
            by_bpf[id(fam.bpf)] = len(units)
            text = "".join(_read(os.path.join(p.probe_dir, BY_NAME[n].source)).decode()
                           for n, o in p.families.items() if o.bpf is fam.bpf)
            names = {}
            for tok in set(re.findall(r"\b[a-z_][a-z0-9_]*\b", text)):
                fd = lib.bpf_table_fd(mod, tok.encode())
                if fd >= 0:
                    names[fd] = tok
            units.append({"maps": {}, "programs": {}, "_names": names})
        f["unit"] = by_bpf[id(fam.bpf)]
        unit = units[f["unit"]]
        types = {prog.fn: (prog.prog_type, links.attach_type(prog.attach_type) if prog.attach_type else 0)
                 for prog in spec.programs}
        for fn in spec.functions:
            start, size = lib.bpf_function_start(mod, fn.encode()), lib.bpf_function_size(mod, fn.encode())
            if not start:
                raise CompileError(f"{name}: bcc made no function {fn}")
            code = ct.string_at(start, size)
            relocs = []
            for off in range(0, len(code) - 15, 8):
                if code[off] == 0x18 and code[off + 1] >> 4 == BPF_PSEUDO_MAP_FD:
                    fd = struct.unpack_from("<i", code, off + 4)[0]
                    mname = unit["_names"].get(fd)
                    if mname is None:
                        raise CompileError(f"{fn}: a map (fd {fd}) not declared in its sources")
                    unit["maps"].setdefault(mname, _map_info(fd))
                    relocs.append([off, mname])
            ptype, at = types.get(fn, (BPF_PROG_TYPE_TRACEPOINT, 0))
            unit["programs"][fn] = {"type": ptype, "attach_type": at, "insns": code.hex(), "relocs": relocs}
    for u in units:
        del u["_names"]
    facts = {**links.facts(), "reason_names": {str(k): v for k, v in reason_names().items()}, "license": license}
    return {"version": VERSION, "units": units, "families": families, "read_packet": p.read_packet, "facts": facts}


def main(argv: list[str]) -> int:
    out, want, ring_pages, fast_bits, read_packet, probe_dir = argv
    from . import build
    from .loader import Probes
    p = Probes("compile", ring_pages=int(ring_pages), fast_bits=int(fast_bits), read_packet=read_packet == "1",
               probe_dir=probe_dir)
    build.load(p)
    obj = extract(p)
    obj["key"] = want
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    return 0


if __name__ == "__main__":
    logs.configure()
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:   # one line for the daemon's log, not a traceback
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
