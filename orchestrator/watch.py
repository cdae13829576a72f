"""Change doorbells for the daemon: netlink multicast per namespace, nftables changes, and a
fast poll for what the kernel announces nowhere (sysctls, /run/netns names, dead services).

A doorbell only says "look again" and why; what changed is found by the reconcile's own full
observation, so a lost event (ENOBUFS) costs one extra look, never a missed repair.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from . import netns

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7

_EVENT_NAMES = {16: "newlink", 17: "dellink", 20: "newaddr", 21: "deladdr", 24: "newroute", 25: "delroute"}


class Doorbell:
    """One multicast netlink socket in one namespace, read from the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ns: str | None, proto: int, groups: int,
                 ring: Callable[[str, str | None, bool], None]):
        self.ns = ns
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
            if self._marshal is not None and len(causes) < 4:
                for msg in self._marshal.parse(data):
                    kind = _EVENT_NAMES.get(msg["header"]["type"], str(msg["header"]["type"]))
                    name = msg.get("ifname") or msg.get("address") or msg.get("dst") or ""
                    causes.append(f"{kind} {name}".strip())
            elif self._marshal is None:
                causes = ["nftables changed"]
        # an rtnl event concerns only its namespace; nftables changes are observed every pass
        self.ring("; ".join(causes[:4]) or "event", self.ns, lost, "ns" if self._marshal is not None else "none")

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()


def rtnl_doorbell(loop, ns, ring) -> Doorbell:
    return Doorbell(loop, ns, 0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE, ring)


def nft_doorbell(loop, ns, ring) -> Doorbell:
    return Doorbell(loop, ns, NETLINK_NETFILTER, 0, ring)
