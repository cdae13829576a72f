"""Links, addresses and routes through pyroute2's AsyncIPRoute, one socket per namespace.

Sockets are opened by entering the namespace from this thread (see netns.py) and handed to
AsyncIPRoute as a file descriptor: no helper process per namespace. Creates carry NLM_F_ECHO
so they return the new link (with its index and, for a veth, its peer's index) without a
second round trip.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ..lab.naming import ROUTE_PROTO
from ..reconcile.snapshot import Link, NsState, RouteEntry
from . import netns

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # carrier
RT_TABLE_MAIN = 254
AF_BRIDGE = 7
IFLA_BRPORT_MODE = 4
_REQ = NLM_F_REQUEST | NLM_F_ACK


class Rtnl:
    def __init__(self) -> None:
        self._handles: dict[str | None, AsyncIPRoute] = {}

    def handle(self, ns: str | None) -> AsyncIPRoute:
        h = self._handles.get(ns)
        if h is None:
            sock = netns.netlink_socket(ns)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._bind_unique(sock)
            h = AsyncIPRoute(fileno=sock.detach())
            self._handles[ns] = h
        return h

    _next_port = 0

    @classmethod
    def _bind_unique(cls, sock: socket.socket) -> None:
        """A port id of our own per socket. Left to autobind, every socket gets the process id
        (port ids are per namespace), and the kernel's echo of a veth peer created in namespace
        B would land on our socket in B as an unsolicited message that nothing ever reads."""
        for _ in range(1024):
            cls._next_port = (cls._next_port + 1) & 0x3FF
            try:
                sock.bind((((os.getpid() & 0x1FFFFF) << 10) | cls._next_port, 0))
                return
            except OSError:
                continue
        sock.bind((0, 0))

    def drain_unsolicited(self) -> list[tuple[str | None, int, int]]:
        """Drop messages no request claimed (pyroute2 parks them in its queue's root slot, where
        nothing reads them: a leak) and say what they were: (namespace, type, seq) each."""
        out = []
        for ns, h in self._handles.items():
            root = vars(h.msg_queue).get("root")
            while root is not None and not root.empty():
                data = root.get_nowait()
                if isinstance(data, bytes) and len(data) >= 16:
                    _, mtype, _, seq, _ = struct.unpack_from("=IHHII", data)
                    out.append((ns, mtype, seq))
        return out

    def forget(self, ns: str | None) -> None:
        h = self._handles.pop(ns, None)
        if h is not None:
            h.close()

    def close(self) -> None:
        for ns in list(self._handles):
            self.forget(ns)

    # ------------------------------------------------------------------ observe

    async def observe(self, ns: str | None) -> NsState:
        h = self.handle(ns)
        st = NsState()
        names: dict[int, str] = {}
        async for msg in await h.link("dump"):
            idx = msg["index"]
            name = msg.get("ifname")
            info = msg.get_attr("IFLA_LINKINFO")
            slave = info.get_attr("IFLA_INFO_SLAVE_DATA") if info else None
            names[idx] = name
            st.links[name] = Link(
                index=idx,
                name=name,
                kind=msg.get(("linkinfo", "kind")),
                up=bool(msg["flags"] & IFF_UP),
                master=msg.get("master"),
                alias=msg.get("ifalias"),
                peer_index=msg.get("link"),
                hairpin=bool(slave.get_attr("IFLA_BRPORT_MODE")) if slave else False,
            )
        async for msg in await h.addr("dump", family=socket.AF_INET):
            dev = names.get(msg["index"])
            st.addresses.add((dev, ipaddress.IPv4Interface(f"{msg.get('address')}/{msg['prefixlen']}")))
        async for msg in await h.route("dump", family=socket.AF_INET, table=RT_TABLE_MAIN):
            if msg["type"] != 1:  # RTN_UNICAST only: skip local/broadcast entries
                continue
            dst = msg.get("dst") or "0.0.0.0"
            gw = msg.get("gateway")
            st.routes.append(RouteEntry(
                dst=ipaddress.IPv4Network(f"{dst}/{msg['dst_len']}"),
                gateway=ipaddress.IPv4Address(gw) if gw else None,
                oif=msg.get("oif"),
                proto=msg["proto"],
            ))
        return st

    async def not_yet_transmitting(self, ns: str | None, names: set[str]) -> set[str]:
        """Of NAMES, the links that are up with carrier whose carrier the kernel's linkwatch work
        has not processed yet (operstate not UP): until it has, their transmit queues still hold
        the noop qdisc, which drops everything. A veth end already up when its peer comes up gets
        carrier at once but working queues only later, asynchronously (milliseconds; longer on a
        busy machine): a bridge forwarding a container's ARP reply into it in between loses it,
        and the container asks again only after a second (its neighbour retransmit time). The
        link's own IFLA_QDISC already names the real qdisc then: it cannot tell."""
        out = set()
        async for msg in await self.handle(ns).link("dump"):
            name = msg.get("ifname")
            if name in names and msg["flags"] & IFF_UP and msg["flags"] & IFF_LOWER_UP \
                    and msg.get("operstate") != "UP":
                out.add(name)
        return out

    # ------------------------------------------------------------------ act

    async def _create_link(self, ns: str | None, msg) -> dict:
        """RTM_NEWLINK with NLM_F_ECHO: the kernel answers with the new link (its index, and for
        a veth its peer's index). No NLM_F_ACK: pyroute2 stops reading after the echo, and an
        ACK behind it would sit unread in the socket's queue forever (an error still comes)."""
        flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO
        out = [m async for m in await self.handle(ns).nlm_request(msg, RTM_NEWLINK, flags)]
        return next(m for m in out if m["header"]["type"] == RTM_NEWLINK)

    async def create_bridge(self, ns: str | None, name: str, alias: str | None, mac: str = "") -> int:
        msg = ifinfmsg()
        msg["flags"] = msg["change"] = IFF_UP
        msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})]
        if mac:
            msg["attrs"].append(("IFLA_ADDRESS", mac))
        index = (await self._create_link(ns, msg))["index"]
        await self._mark(ns, index, alias)
        return index

    async def _mark(self, ns: str | None, index: int, alias: str | None) -> None:
        # the kernel ignores IFLA_IFALIAS in a create request: it takes a set
        if alias:
            await self.handle(ns).link("set", index=index, ifalias=alias)

    async def create_veth(self, ns: str | None, name: str, alias: str | None, master: int | None,
                          up: bool, peer_ns: str | None, peer_name: str, mac: str = "",
                          peer_mac: str = "") -> tuple[int, int]:
        fd = netns.open_fd(peer_ns)
        try:
            peer = [("IFLA_IFNAME", peer_name), ("IFLA_NET_NS_FD", fd)]
            if peer_mac:
                peer.append(("IFLA_ADDRESS", peer_mac))
            msg = ifinfmsg()
            if up:
                msg["flags"] = msg["change"] = IFF_UP
            msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [
                ("IFLA_INFO_KIND", "veth"),
                ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer})]})]})]
            if master:
                msg["attrs"].append(("IFLA_MASTER", master))
            if mac:
                msg["attrs"].append(("IFLA_ADDRESS", mac))
            new = await self._create_link(ns, msg)
        finally:
            os.close(fd)
        await self._mark(ns, new["index"], alias)
        return new["index"], new.get("link")

    # The hot path (hundreds of requests for a big lab) builds messages directly: pyroute2's
    # keyword processing costs more than the kernel's work for these small requests.

    async def _request(self, ns: str | None, msg, msg_type: int, flags: int = _REQ) -> None:
        async for _ in await self.handle(ns).nlm_request(msg, msg_type, flags):
            pass

    async def set_link(self, ns: str | None, index: int, up: bool | None = None,
                       master: int | None = None) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        if up is not None:
            msg["flags"] = IFF_UP if up else 0
            msg["change"] = IFF_UP
        if master is not None:
            msg["attrs"].append(("IFLA_MASTER", master))
        await self._request(ns, msg, RTM_NEWLINK)

    async def set_hairpin(self, ns: str | None, index: int, on: bool) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        msg["attrs"] = [("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_SLAVE_KIND", "bridge"),
            ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", int(on))]})]})]
        await self._request(ns, msg, RTM_NEWLINK)

    async def delete_link(self, ns: str | None, index: int) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        try:
            await self._request(ns, msg, RTM_DELLINK)
        except NetlinkError as e:
            if e.code != 19:  # ENODEV: already gone (deleting one veth end takes the other)
                raise

    async def add_address(self, ns: str | None, index: int, iface: ipaddress.IPv4Interface) -> None:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        ip = str(iface.ip)
        msg["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
        if iface.network.prefixlen < 31:
            msg["attrs"].append(("IFA_BROADCAST", str(iface.network.broadcast_address)))
        try:
            await self._request(ns, msg, RTM_NEWADDR, _REQ | NLM_F_CREATE | NLM_F_EXCL)
        except NetlinkError as e:
            if e.code != 17:  # EEXIST: raced with ourselves or an admin, the result is what we want
                raise

    async def replace_route(self, ns: str | None, dst: ipaddress.IPv4Network,
                            gateway: ipaddress.IPv4Address, oif: int) -> None:
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["dst_len"] = dst.prefixlen
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = ROUTE_PROTO
        msg["scope"] = 0  # universe
        msg["type"] = 1  # unicast
        msg["attrs"] = [("RTA_TABLE", RT_TABLE_MAIN), ("RTA_GATEWAY", str(gateway)), ("RTA_OIF", oif)]
        if dst.prefixlen:
            msg["attrs"].append(("RTA_DST", str(dst.network_address)))
        await self._request(ns, msg, RTM_NEWROUTE, _REQ | NLM_F_CREATE | NLM_F_REPLACE)

    async def delete_route(self, ns: str | None, r: RouteEntry) -> None:
        try:
            kw = {"gateway": str(r.gateway)} if r.gateway else {}
            await self.handle(ns).route("del", dst=str(r.dst), proto=r.proto, table=RT_TABLE_MAIN, **kw)
        except NetlinkError as e:
            if e.code != 3:  # ESRCH: already gone
                raise

    # ------------------------------------------------------------------ look up (explain)

    async def route_get(self, ns: str | None, dst: str) -> tuple[str | None, str | None]:
        """(output device, preferred source) of the route the kernel would take to DST."""
        try:
            got = await self.handle(ns).route("get", dst=dst)
            msgs = [m async for m in got] if hasattr(got, "__aiter__") else list(got)
        except NetlinkError:
            return None, None  # no route (ENETUNREACH)
        if not msgs:
            return None, None
        oif, src = msgs[0].get("oif"), msgs[0].get("prefsrc")
        names = {m["index"]: m.get("ifname") async for m in await self.handle(ns).link("dump")}
        return names.get(oif), src

    async def neighbours(self, ns: str | None) -> dict[str, str]:
        """Address -> neighbour state as iproute2 names it (REACHABLE, FAILED, ...)."""
        out = {}
        async for m in await self.handle(ns).neigh("dump"):
            dst = m.get("dst")
            if dst:
                state = m["state"]
                out[dst] = ",".join(name for bit, name in _NUD if state & bit) or "NONE"
        return out


_NUD = ((0x01, "INCOMPLETE"), (0x02, "REACHABLE"), (0x04, "STALE"), (0x08, "DELAY"), (0x10, "PROBE"),
        (0x20, "FAILED"), (0x40, "NOARP"), (0x80, "PERMANENT"))
