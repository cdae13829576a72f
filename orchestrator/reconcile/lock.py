"""One manager per lab at a time: the daemon for its whole life, `up` and `down` while they
work. An flock on <run dir>/<lab>/lock: the kernel releases it when the holder's process ends,
however it ends (kill -9 included), so a stale lock cannot exist. Two daemons once fought over
the services forever and stacked namespace mounts; `down` under a daemon was undone within 3 s.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from ..errors import BusyError
from ..lab.naming import lab_dir, lab_file


class LabLock:
    def __init__(self, lab: str, role: str):
        self.lab, self.role = lab, role
        self.fd: int | None = None

    def holder(self) -> dict:
        try:
            with open(lab_file(self.lab, "lock")) as f:
                return json.loads(f.read() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> LabLock:
        os.makedirs(lab_dir(self.lab), mode=0o700, exist_ok=True)
        fd = os.open(lab_file(self.lab, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BusyError(busy_message(self.lab, self.holder())) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "role": self.role, "since": time.time()}).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last fd of the open file drops the flock
            self.fd = None

    def __enter__(self) -> LabLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def busy_message(lab: str, holder: dict) -> str:
    pid, role = holder.get("pid", "?"), holder.get("role", "?")
    if role == "daemon":
        return (f"lab {lab} is run by a daemon (pid {pid}, `bridgelab run`), which keeps it as its topology "
                f"says: stop it first (kill {pid}, or systemctl stop bridgelab), or have it apply a changed "
                f"topology file: kill -HUP {pid}")
    return f"another `bridgelab {role}` (pid {pid}) is working on lab {lab}; try again when it is done"
