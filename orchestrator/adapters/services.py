"""The containers' processes (the seed's `python3 -m http.server 80`): started detached in the
container's namespace, tracked by pid *and* start time (a reused pid is never mistaken for
ours), stopped by pid.

Each carries BRIDGELAB_SERVICE=<lab>/<name> in its environment, so it is found again even when
no state file recorded it (a `kill -9` of `up` or of the daemon between the fork and the state
write once left root processes holding deleted namespaces alive, untracked, and the next runs
restarted services in a loop). Its output goes to <run dir>/<lab>/logs/<name>.log, 0600 in a
0700 directory (access logs hold client addresses), capped at LOG_MAX bytes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

from ..lab.naming import lab_dir, lab_file
from ..lab.resources import ServiceProc
from . import netns

TAG = "BRIDGELAB_SERVICE"
LOG_MAX = 1 << 20   # a service log is cut back to its last LOG_KEEP bytes past this
LOG_KEEP = 256 << 10


class ServiceFailed(RuntimeError):
    pass


def start_time(pid: int, exited_too: bool = False) -> str | None:
    """The process's start time (its identity with the pid); None once it exited, unless
    EXITED_TOO (a zombie still has one: what start() records for a process that is already gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields[0] in ("Z", "X") and not exited_too:  # exited, not yet reaped: not running
        return None
    return fields[19]


def running(rec: dict | None) -> bool:
    """The recorded process still runs (wherever it is). A record without a start time is not
    running: a service that exited before start() read it once counted as running forever."""
    return bool(rec) and rec.get("start") is not None and start_time(rec["pid"]) == rec["start"]


def _ns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def alive(rec: dict | None, ns: str | None) -> bool:
    if not running(rec):
        return False
    try:
        return _ns_inode(rec["pid"]) == netns.inode(ns)
    except FileNotFoundError:
        return False


def tagged(lab: str) -> dict[str, list[dict]]:
    """Every process carrying a service tag of LAB: {service name: [records]}."""
    prefix = f"{TAG}={lab}/".encode()
    out: dict[str, list[dict]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if var.startswith(prefix):
                pid = int(entry)
                start = start_time(pid)
                if start:
                    out.setdefault(var[len(prefix):].decode(), []).append({"pid": pid, "start": start})
                break
    return out


def log_path(lab: str, name: str) -> str:
    return lab_file(lab, "logs", name.replace("/", "_") + ".log")


def _prepare(lab: str, svc: ServiceProc) -> int:
    os.makedirs(lab_dir(lab), mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(log_path(lab, svc.name)), mode=0o700, exist_ok=True)
    if svc.http_root:
        os.makedirs(svc.http_root, exist_ok=True)
        with open(os.path.join(svc.http_root, "index.html"), "w") as f:
            f.write(f"{svc.node}\n")
    else:
        os.makedirs(svc.cwd, exist_ok=True)
    return os.open(log_path(lab, svc.name), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def start(lab: str, svc: ServiceProc) -> dict:
    log = _prepare(lab, svc)
    argv = list(svc.argv)
    if argv[0] == "python3":
        argv[0] = sys.executable
    env = {**os.environ, TAG: f"{lab}/{svc.name}"}
    env.pop("NOTIFY_SOCKET", None)  # systemd's notify socket is the daemon's, not a service's
    try:
        proc = subprocess.Popen(
            argv, cwd=svc.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True, close_fds=True, preexec_fn=netns.setns_child(svc.ns),
        )
    except OSError as e:
        raise ServiceFailed(f"{svc.name}: cannot start {argv[0]}: {e.strerror}") from None
    finally:
        os.close(log)
    start = None
    for _ in range(100):  # /proc/PID/stat appears at fork; normally at once
        start = start_time(proc.pid, exited_too=True)
        if start:
            break
        time.sleep(0.001)
    proc.returncode = 0  # detached: Popen must not warn that we never wait() for it
    return {"pid": proc.pid, "start": start, "ns": svc.ns}


def _tail(lab: str, name: str, lines: int = 3) -> str:
    try:
        with open(log_path(lab, name), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 2000))
            text = f.read().decode(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(text)


async def settle(lab: str, svc: ServiceProc, rec: dict, timeout: float = 5.0) -> None:
    """Done means serving: a curl right after `up` must not be refused (a fresh http.server takes
    50-300 ms to bind on a busy machine). A service that exits at once is a failure, with the
    last lines of its log; one without a port must still run after a moment."""
    deadline = time.monotonic() + (timeout if svc.port else 0.5)
    while True:
        if not running(rec):
            reap(rec["pid"])
            tail = _tail(lab, svc.name)
            raise ServiceFailed(f"{svc.name} exited at once" + (f": {tail}" if tail else "")
                                + f" (log: {log_path(lab, svc.name)})")
        if svc.ns is not None and not alive(rec, svc.ns):
            # the namespace was deleted (or made anew) while the service started: waiting out
            # the timeout held the daemon's pass, and every repair behind it, for 5 s (a
            # container namespace deleted twice in a row, bench/heal_latency.py); the pass
            # fails now and the next one, already rung, starts it in the new namespace
            raise ServiceFailed(f"{svc.name}: its namespace {svc.ns} went away while it started")
        if svc.port and _listening(svc.ns, svc.port, svc.protocol):
            return
        if time.monotonic() > deadline:
            if svc.port:
                raise ServiceFailed(f"{svc.name} runs but does not listen on {svc.protocol.upper()} port {svc.port} "
                                    f"after {timeout:.0f} s")
            return
        await asyncio.sleep(0.02)


def _listening(ns: str | None, port: int, protocol: str = "tcp") -> bool:
    if protocol == "udp":  # bound, as the namespace's own socket tables say
        with netns.entered(ns):
            fds = [os.open(f"/proc/thread-self/net/{t}", os.O_RDONLY) for t in ("udp", "udp6")]
        try:
            text = b"".join(os.read(fd, 1 << 20) for fd in fds).decode()
        finally:
            for fd in fds:
                os.close(fd)
        return any(line.split()[1].endswith(f":{port:04X}") for line in text.splitlines()[1:] if line.split()[1:])
    for family, local in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with netns.entered(ns):
                s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # an IPv4-only namespace has no IPv6 sockets
        try:
            s.settimeout(0.2)
            if s.connect_ex((local, port)) == 0:
                return True
        finally:
            s.close()
    return False


def stop(rec: dict, timeout: float = 2.0) -> None:
    pid = rec["pid"]
    if rec.get("start") is None or start_time(pid) != rec["start"]:
        reap(pid)  # never signal a pid we cannot tell from a stranger that reused it
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


def cap_logs(lab: str) -> int:
    """Cut service logs past LOG_MAX back to their last LOG_KEEP bytes, in place: the service
    writes with O_APPEND and goes on at the new end. Returns how many were cut."""
    try:
        d = lab_file(lab, "logs")
        names = os.listdir(d)
    except OSError:
        return 0
    cut = 0
    for name in names:
        path = os.path.join(d, name)
        try:
            if os.path.getsize(path) <= LOG_MAX:
                continue
            with open(path, "r+b") as f:
                f.seek(-LOG_KEEP, os.SEEK_END)
                tail = f.read()
                f.seek(0)
                f.truncate()
                f.write(b"[bridgelab: log cut to its last %d bytes]\n" % LOG_KEEP + tail[tail.find(b"\n") + 1:])
            cut += 1
        except OSError:
            continue
    return cut
