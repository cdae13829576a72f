"""Named network namespaces, entered per thread instead of per helper process.

pyroute2's ``netns.create()`` and ``AsyncIPRoute(netns=...)`` fork a helper process for every
namespace (~5 ms each, see ../shared/notes/kernel-facts.md). A network namespace is a property
of a *thread*, so the calling thread can ``setns()`` in, create what it needs (a netlink
socket, an nft context, an open sysctl file — all stay bound to the namespace they were created
in) and ``setns()`` back, in microseconds. The layout on disk is iproute2's (`/run/netns/NAME`
bind mounts), so ``ip netns``, ``ip -n`` and every other tool see the same namespaces.

Everything here is synchronous and never awaits while switched, so the asyncio thread can use
it: no other coroutine can run while the thread is in a foreign namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterator

from ..errors import InputError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40

_libc = ctypes.CDLL(None, use_errno=True)
_rundir_ready = False
_rundir_lock = threading.Lock()


def _check(ret: int, what: str, name: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {os.strerror(err)}", name)


def path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def preflight() -> None:
    """Before the first change: namespaces made here must be visible to everyone else."""
    _ensure_rundir()


def _ensure_rundir() -> None:
    """Make /run/netns a shared mount, as iproute2 does, so bind mounts propagate."""
    global _rundir_ready
    with _rundir_lock:
        if _rundir_ready:
            return
        os.makedirs(NETNS_RUN_DIR, exist_ok=True)
        if _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
            d = NETNS_RUN_DIR.encode()
            _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), "bind /run/netns", d.decode())
            _check(_libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), "share /run/netns", d.decode())
        prop = _propagation(NETNS_RUN_DIR) or ""
        if "master:" in prop:
            # `ip netns exec` or a unit with PrivateTmp=/ProtectSystem= put us in a mount namespace
            # whose mounts do not propagate back: namespaces we made would exist for us alone.
            raise PrivateMountNamespace(
                "bridgelab runs in a private mount namespace (e.g. under `ip netns exec`); "
                "the namespaces it creates would be invisible to every other process. "
                "Enter only the network namespace instead: nsenter --net=/run/netns/NAME bridgelab ...")
        _rundir_ready = True


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def _is_namespace(st: os.stat_result) -> bool:
    # /run/netns/NAME is an empty file until the namespace is bind-mounted onto it; another
    # process (or a crash) can leave us looking at it in between, and setns on it says EINVAL
    return st.st_dev == _nsfs_dev()


def exists(name: str) -> bool:
    """NAME is a namespace now (not merely an entry still being made)."""
    try:
        return _is_namespace(os.stat(path(name)))
    except FileNotFoundError:
        return False


def list_names(prefix: str | tuple[str, ...] = "", half_made: bool = False) -> list[str]:
    """Namespaces under /run/netns starting with PREFIX (or one of them); HALF_MADE: entries not
    (yet) bound too."""
    try:
        names = [n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix)]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if half_made or exists(n))


def _setns(fd: int, name: str) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)


def _propagation(mountpoint: str) -> str | None:
    """The optional fields of MOUNTPOINT in our mountinfo ('shared:3', 'master:1', ...)."""
    with open("/proc/self/mountinfo") as f:
        found = None
        for line in f:
            parts = line.split()
            if parts[4] == mountpoint:
                found = " ".join(parts[6:parts.index("-")])
    return found


class PrivateMountNamespace(InputError):
    """The environment cannot hold a lab: refused before anything is applied (exit 2)."""


def _loopback_up() -> None:
    """Bring lo up in this thread's namespace: an ioctl, not a netlink round trip."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, req)
    finally:
        s.close()


# Defaults for every link made later in a lab namespace (conf/default), and its current ones.
IPV4_ONLY = (("all/disable_ipv6", "1"), ("default/disable_ipv6", "1"))
IPV6_STATIC = (
    # The lab's IPv6 is static: a router advertisement on a lab link (a container running radvd,
    # a router under test) would add addresses and routes the topology does not have (netavark
    # and Docker set accept_ra=0 on their bridges for the same reason)
    ("all/accept_ra", "0"), ("default/accept_ra", "0"),
    # No duplicate address detection: each address is given once (validated) and link-locals
    # come from the lab's unique MACs; a tentative address fails connections for ~1 s
    ("all/accept_dad", "0"), ("default/accept_dad", "0"),
)


def create_many(names: list[str], ipv4_only: bool = False) -> None:
    """Create /run/netns/NAME for each name, each a new namespace with its loopback up.

    ipv4_only: links made in it later get no IPv6 (no link-local address, DAD or MLD work
    each time one comes up), as Docker does for networks without IPv6.
    """
    _ensure_rundir()
    fds: list[tuple[str, int]] = []
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        for name in names:
            try:
                os.close(os.open(path(name), os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            except FileExistsError:
                if exists(name):
                    raise
                # an entry a crashed creator left without its namespace: ours to finish
                os.unlink(path(name))
                os.close(os.open(path(name), os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            try:
                _check(_libc.unshare(CLONE_NEWNET), "unshare", name)
                _loopback_up()
                for key, value in (IPV4_ONLY if ipv4_only else IPV6_STATIC):
                    with open(f"/proc/sys/net/ipv6/conf/{key}", "w") as f:
                        f.write(value)
                fds.append((name, os.open("/proc/thread-self/ns/net", os.O_RDONLY)))
            finally:
                _setns(home, name)

        def bind() -> None:
            for name, fd in fds:
                src = f"/proc/self/fd/{fd}".encode()
                _check(_libc.mount(src, path(name).encode(), b"none", MS_BIND, None), "bind namespace", name)

        bind()
    except BaseException:
        remove_many(names)
        raise
    finally:
        os.close(home)
        for _, fd in fds:
            os.close(fd)


def remove_many(names: list[str]) -> list[str]:
    """Drop the names; the kernel frees each namespace (and its veths) once nothing holds it."""
    names = [n for n in names if os.path.exists(path(n))]
    if not names:
        return []

    def unbind() -> None:
        for name in names:
            _libc.umount2(path(name).encode(), MNT_DETACH)

    unbind()
    gone = []
    for name in names:
        try:
            os.unlink(path(name))
            gone.append(name)
        except FileNotFoundError:
            pass
    return gone


def open_fd(name: str | None) -> int:
    """An fd for the namespace; None means the caller's own namespace."""
    if name is None:
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    return os.open(path(name), os.O_RDONLY)


def inode(name: str | None) -> int:
    if name is None:
        return os.stat("/proc/thread-self/ns/net").st_ino
    return os.stat(path(name)).st_ino


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body with this thread inside namespace NAME (None: stay where we are)."""
    if name is None:
        yield
        return
    try:
        fd = os.open(path(name), os.O_RDONLY)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "no such network namespace", name) from None
    if not _is_namespace(os.fstat(fd)):
        os.close(fd)
        raise OSError(errno.ENOENT, "network namespace still being made (or left half-made)", name)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(fd, name)
        try:
            yield
        finally:
            _setns(home, "home")
    finally:
        os.close(fd)
        os.close(home)


def switch(name: str) -> None:
    """Move this thread into NAME and stay (before an exec)."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        _setns(fd, name)
    finally:
        os.close(fd)


def netlink_socket(name: str | None, proto: int = 0) -> socket.socket:
    """A NETLINK_ROUTE (or other proto) socket living in namespace NAME."""
    with entered(name):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, proto)


def setns_child(name: str | None):
    """A ``preexec_fn`` moving a forked child into the namespace before exec."""
    if name is None:
        return None
    target = path(name)

    def _enter() -> None:
        fd = os.open(target, os.O_RDONLY)
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)
        os.close(fd)

    return _enter
