"""The containers' processes (the seed's `python3 -m http.server 80`): started detached in the
container's namespace, tracked by pid *and* start time (a reused pid is never mistaken for
ours), stopped by pid."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

from . import netns
from ..lab.naming import lab_dir
from ..lab.resources import ServiceProc


def start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: not running
        return None
    return fields[19]


def running(rec: dict | None) -> bool:
    """The recorded process still runs (wherever it is)."""
    return bool(rec) and start_time(rec["pid"]) == rec.get("start")


def alive(rec: dict | None, ns: str | None) -> bool:
    if not rec or start_time(rec["pid"]) != rec["start"]:
        return False
    try:
        return os.stat(f"/proc/{rec['pid']}/ns/net").st_ino == netns.inode(ns)
    except FileNotFoundError:
        return False


def start(lab: str, svc: ServiceProc) -> dict:
    os.makedirs(svc.cwd, exist_ok=True)
    if svc.cwd.startswith(lab_dir(lab)):
        with open(os.path.join(svc.cwd, "index.html"), "w") as f:
            f.write(f"{svc.node}\n")
    argv = list(svc.argv)
    if argv[0] == "python3":
        argv[0] = sys.executable
    log = open(os.path.join(lab_dir(lab), f"{svc.name.replace('/', '_')}.log"), "ab")
    with log:
        proc = subprocess.Popen(
            argv, cwd=svc.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True, preexec_fn=netns.setns_child(svc.ns),
        )
    start = None
    for _ in range(100):  # /proc/PID/stat appears at fork; normally at once
        start = start_time(proc.pid)
        if start:
            break
        time.sleep(0.001)
    proc.returncode = 0  # detached: Popen must not warn that we never wait() for it
    return {"pid": proc.pid, "start": start, "ns": svc.ns}


def stop(rec: dict, timeout: float = 2.0) -> None:
    pid = rec["pid"]
    if start_time(pid) != rec["start"]:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if start_time(pid) != rec["start"]:
            return
        reap(pid)
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    reap(pid)


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


async def listening(ns: str | None, port: int, timeout: float = 5.0) -> bool:
    """Wait until something accepts TCP connections on PORT inside NS (a fresh python3 http.server
    takes 50-300 ms to bind on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with netns.entered(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        finally:
            s.close()
        await asyncio.sleep(0.02)
    return False
