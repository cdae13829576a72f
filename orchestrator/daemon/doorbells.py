"""Change doorbells for the daemon: netlink multicast per namespace and nftables changes (the
poller, poller.py, covers what the kernel announces nowhere).

A doorbell only says "look again" and why; what changed is found by the reconcile's own full
observation, so a lost event (ENOBUFS) costs one extra look, never a missed repair.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from .. import logs
from ..adapters import netns
from ..lab.resources import Desired

log = logs.get("bridgelab.daemon")

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_TC = 0x8  # qdiscs: a netem or tbf of an impairment changed or deleted
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTMGRP_NEIGH = 0x4   # a VXLAN device's flood entries (FDB): only their deletion rings (fdb_doorbell)
RTM_DELNEIGH, AF_BRIDGE = 29, 7
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7

_EVENT_NAMES = {16: "newlink", 17: "dellink", 20: "newaddr", 21: "deladdr", 24: "newroute", 25: "delroute",
                36: "newqdisc", 37: "delqdisc"}


class Doorbell:
    """One multicast netlink socket in one namespace, read from the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ns: str | None, proto: int, groups: int,
                 ring: Callable[[str, str | None, bool], None], accept: Callable | None = None):
        self.ns = ns
        self.accept = accept   # which rtnl messages ring (None: all)
        self.loop = loop
        self.ring = ring
        self.proto = proto
        self.sock = netns.netlink_socket(ns, proto)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if proto == NETLINK_NETFILTER:
            self.sock.bind((0, 0))
            self.sock.setsockopt(270, 1, NFNLGRP_NFTABLES)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP
        else:
            self.sock.bind((0, groups))
        self.sock.setblocking(False)
        self.inode = netns.inode(ns)
        self._marshal = MarshalRtnl() if proto == 0 else None
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        causes: list[str] = []
        lost = False
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # the kernel dropped events for us: look at everything
                    lost = True
                    continue
                raise
            if self._marshal is not None and self.accept is not None:
                msgs = [m for m in self._marshal.parse(data) if self.accept(m)]
                causes += [f"fdb entry deleted on {m.get('ifindex')}" for m in msgs][:4]
            elif self._marshal is not None and len(causes) < 4:
                for msg in self._marshal.parse(data):
                    kind = _EVENT_NAMES.get(msg["header"]["type"], str(msg["header"]["type"]))
                    name = msg.get("ifname") or msg.get("address") or msg.get("dst") or ""
                    causes.append(f"{kind} {name}".strip())
            elif self._marshal is None:
                causes = ["nftables changed"]
        if self.accept is not None and not causes and not lost:
            return   # neighbour churn that is not ours to heal
        # an rtnl event concerns only its namespace; nftables changes are observed every pass
        self.ring("; ".join(causes[:4]) or "event", self.ns, lost, "ns" if self._marshal is not None else "none")

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()


def rtnl_doorbell(loop, ns, ring) -> Doorbell:
    return Doorbell(loop, ns, 0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_TC
                    | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE, ring)


def _flood_deleted(msg) -> bool:
    return (msg["header"]["type"] == RTM_DELNEIGH and msg.get("family") == AF_BRIDGE
            and msg.get("NDA_LLADDR") == "00:00:00:00:00:00")


def fdb_doorbell(loop, ns, ring) -> Doorbell:
    return Doorbell(loop, ns, 0, RTMGRP_NEIGH, ring, accept=_flood_deleted)


def nft_doorbell(loop, ns, ring) -> Doorbell:
    return Doorbell(loop, ns, NETLINK_NETFILTER, 0, ring)


class Doorbells:
    """A doorbell in every managed namespace (an nftables one in the host's), reopened when a
    namespace is made anew."""

    def __init__(self, d: Desired, ring: Callable[[str, str | None, bool, str], None]):
        self.d = d
        self.ring = ring
        self.bells: dict[tuple[str | None, str], Doorbell] = {}

    def __len__(self) -> int:
        return len(self.bells)

    def inode(self, ns: str | None) -> int | None:
        bell = self.bells.get((ns, "rtnl"))
        return bell.inode if bell is not None else None

    def subscribe(self) -> bool:
        """Open a doorbell in every managed namespace that lacks a current one. True if any."""
        loop = asyncio.get_running_loop()
        opened = False
        for ns in self.d.managed_ns():
            if ns is not None and not netns.exists(ns):
                continue
            try:
                ino = netns.inode(ns)
                for kind, make in (("rtnl", rtnl_doorbell), ("nft", nft_doorbell), ("fdb", fdb_doorbell)):
                    if kind == "nft" and ns != self.d.host_ns and ns not in self._ruled():
                        continue
                    if kind == "fdb" and ns not in {x.ns for x in self.d.vxlans}:
                        continue
                    bell = self.bells.get((ns, kind))
                    if bell is not None and bell.inode == ino:
                        continue
                    if bell is not None:
                        bell.close()
                    self.bells[(ns, kind)] = make(loop, ns, self.ring)
                    opened = True
            except OSError as e:
                # someone deleted or is re-creating it right now (a half-made /run/netns entry is
                # an empty file: setns says EINVAL); the poller sees the outcome and rings again
                log.warning("subscribe deferred", ns=ns, error=str(e))
                loop.call_later(0.05, self.ring, f"subscribe {ns}: {e.strerror or e}")
        return opened

    def _ruled(self) -> set:
        """Namespaces holding netfilter rules of the lab's besides the host's (impairments' queues)."""
        return {x for i in self.d.impairments for x in (i.ns, i.peer_ns)}

    def rtnl_namespaces(self) -> list[str | None]:
        return [ns for ns, kind in self.bells if kind == "rtnl"]

    def close(self) -> None:
        for bell in self.bells.values():
            bell.close()
        self.bells.clear()
