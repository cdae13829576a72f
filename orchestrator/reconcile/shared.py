"""Sysctls several host-mode labs share in one namespace (net.ipv4.ip_forward, ...): the value
found before the first lab set it, and which labs need it now. The last lab to go restores it;
one lab's `down` once turned ip_forward off under another that still forwarded.

<run dir>/shared/sysctls-<dev>-<inode>.json per network namespace, changed under an flock.
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


@contextlib.contextmanager
def _registry():
    d = os.path.join(run_dir(), "shared")
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = inside(d, f"sysctls-{ns_identity()}.json")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 1 << 20)
        try:
            reg = json.loads(raw) if raw else {}
        except ValueError:
            reg = {}
        yield reg
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
    d = os.path.join(run_dir(), "shared")
    try:
        with open(inside(d, f"sysctls-{ns_identity()}.json")) as f:
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
