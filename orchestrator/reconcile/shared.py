"""Sysctls several host-mode labs share in one namespace (net.ipv4.ip_forward, ...): the value
found before the first lab set it, and which labs need it now. The last lab to go restores it;
one lab's `down` once turned ip_forward off under another that still forwarded.

<run dir>/.shared/sysctls-<dev>-<inode>.json per network namespace, changed under an flock. The dot
keeps it apart from lab state dirs: no lab name starts with one (a lab named "shared" once
shared this directory). A registry that empties is removed, not left behind as "{}".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

from ..lab.naming import inside, run_dir


def ns_identity() -> str:
    st = os.stat("/proc/thread-self/ns/net")
    return f"{st.st_dev}-{st.st_ino}"


def _dir() -> str:
    return os.path.join(run_dir(), ".shared")


def _locked_open(path: str) -> int:
    """Open and flock PATH, retrying if it was unlinked between our open and our lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _adopt_legacy(path: str) -> None:
    """Until 2026-12 the registry lived in <run dir>/shared/: move it, or an upgraded host would
    forget the values to restore."""
    old = os.path.join(run_dir(), "shared", os.path.basename(path))
    if os.path.exists(old) and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            os.rename(old, path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(old))


@contextlib.contextmanager
def _registry():
    d = _dir()
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = inside(d, f"sysctls-{ns_identity()}.json")
    _adopt_legacy(path)
    fd = _locked_open(path)
    try:
        raw = os.read(fd, 1 << 20)
        try:
            reg = json.loads(raw) if raw else {}
        except ValueError:
            reg = {}
        yield reg
        if not reg:
            # unlinked while still locked: a claimer waiting on this inode sees it is gone
            # (_locked_open) and opens a fresh file instead of writing to an unlinked one
            os.unlink(path)
            return
        data = json.dumps(reg, indent=1, sort_keys=True).encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)


def claim(lab: str, key: str, current: str | None, legacy: str | None = None) -> None:
    """LAB needs KEY here; the first claim records the value found (or LEGACY, what an older
    state file recorded before us)."""
    with _registry() as reg:
        e = reg.setdefault(key, {"original": legacy if legacy is not None else current, "labs": []})
        if lab not in e["labs"]:
            e["labs"].append(lab)


def claimed(lab: str) -> set[str]:
    """The keys LAB has claimed here (read without writing)."""
    d = _dir()
    path = inside(d, f"sysctls-{ns_identity()}.json")
    _adopt_legacy(path)
    try:
        with open(path) as f:
            reg = json.load(f)
    except (OSError, ValueError):
        return set()
    return {k for k, e in reg.items() if lab in e.get("labs", [])}


def release(lab: str) -> list[tuple[str, str | None, list[str]]]:
    """LAB no longer needs its keys: (key, value to restore or None if others still need it,
    the labs that still do)."""
    out = []
    with _registry() as reg:
        for key in list(reg):
            e = reg[key]
            if lab not in e["labs"]:
                continue
            e["labs"].remove(lab)
            if e["labs"]:
                out.append((key, None, list(e["labs"])))
            else:
                out.append((key, e["original"], []))
                del reg[key]
    return out
