"""Links, addresses and routes through pyroute2's AsyncIPRoute, one socket per namespace.

Sockets are opened by entering the namespace from this thread (see netns.py) and handed to
AsyncIPRoute as a file descriptor: no helper process per namespace. Creates carry NLM_F_ECHO
so they return the new link (with its index and, for a veth, its peer's index) without a
second round trip.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import os
import socket
import struct

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ..lab.naming import ROUTE_PROTO
from ..reconcile.snapshot import Link, NsState, RouteEntry
from . import netns

SO_RCVBUFFORCE = 33
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # carrier
RT_TABLE_MAIN = 254
AF_BRIDGE = 7
IFLA_BRPORT_MODE = 4
_REQ = NLM_F_REQUEST | NLM_F_ACK


# route types worth seeing: a blackhole or unreachable route hijacks traffic as surely as a unicast one
ROUTE_TYPES = {1, 6, 7, 8}  # RTN_UNICAST, RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT
RT_TABLE_LOCAL = 255
IFA_F_NODAD = 0x02
ZERO_MAC = "00:00:00:00:00:00"   # a VXLAN FDB entry for it: where broadcast and unknown unicast go


def _route_entry(msg, family: int) -> RouteEntry | None:
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    if msg["type"] not in ROUTE_TYPES or table == RT_TABLE_LOCAL:
        return None  # local, broadcast and multicast entries are the kernel's bookkeeping
    dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
    gw = msg.get("gateway")
    if gw is None:
        via = msg.get("via")  # IPv4 over an IPv6 next hop and the like: shown, never ours
        gw = via.get("addr") if isinstance(via, dict) else None
    return RouteEntry(
        dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
        gateway=ipaddress.ip_address(gw) if gw else None,
        oif=msg.get("oif"),
        proto=msg["proto"],
        table=table,
        type=msg["type"],
        priority=msg.get("priority") or 0,
    )


# Requests in flight per socket. asyncio.gather of a 1000-container `up` once sent every request
# before reading a reply; the echoes and acks overran the socket's receive buffer (the host
# namespace's socket showed drops), pyroute2 marked the socket failed and every request waited
# forever. 64 in flight keep a few hundred KB in the buffer at most; a timeout and a retry on a
# fresh socket recover from a loss anyway, and ENOBUFS on a request socket is such a loss.
WINDOW = 64
RCVBUF = 8 << 20
TIMEOUT = 10.0
RETRIES = 4  # each on a fresh socket with half the window


class NetlinkLost(RuntimeError):
    """A request whose reply never came, even on a fresh socket."""


def _fresh(msg):
    """The same request as a new message (a sent one carries its sequence number)."""
    m = msg.__class__()
    m.setvalue(copy.deepcopy({k: v for k, v in msg.items() if k != "header"}))
    return m


class Rtnl:
    def __init__(self) -> None:
        self._handles: dict[str | None, AsyncIPRoute] = {}
        self._windows: dict[str | None, asyncio.Semaphore] = {}
        self._sizes: dict[str | None, int] = {}
        self.lost = 0  # requests retried on a fresh socket (a lost reply or ENOBUFS)

    def handle(self, ns: str | None) -> AsyncIPRoute:
        h = self._handles.get(ns)
        if h is None:
            sock = netns.netlink_socket(ns)
            for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # FORCE: past rmem_max, with CAP_NET_ADMIN
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
                    break
                except OSError:
                    continue
            self._bind_unique(sock)
            h = AsyncIPRoute(fileno=sock.detach())
            self._handles[ns] = h
        return h

    async def call(self, ns: str | None, what: str, make):
        """MAKE(handle) -> awaitable, run within the namespace's window, bounded in time, and
        retried on a fresh socket when its reply was lost. Netlink errors (the kernel's answer)
        pass through; only silence or a failed socket is retried."""
        for attempt in range(RETRIES + 1):
            window = self._windows.get(ns) or self._windows.setdefault(ns, asyncio.Semaphore(WINDOW))
            async with window:
                h = self.handle(ns)
                try:
                    return await asyncio.wait_for(make(h, attempt), TIMEOUT)
                except NetlinkError:
                    raise
                except (asyncio.TimeoutError, OSError) as e:
                    if attempt == RETRIES:
                        raise NetlinkLost(f"{what} in {ns or 'the current netns'}: no reply after {RETRIES + 1} "
                                          f"tries ({type(e).__name__}: {e})") from None
                    self.lost += 1
                    if self._handles.get(ns) is h:
                        self.forget(ns)  # a socket that lost a reply is not trusted again
                        # and fewer in flight: what overran the buffer once will again
                        size = self._sizes.get(ns, WINDOW)
                        self._sizes[ns] = max(1, size // 2)
                        self._windows[ns] = asyncio.Semaphore(self._sizes[ns])
        raise AssertionError("unreachable")

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

    async def observe(self, ns: str | None, v6: bool = False) -> NsState:
        return await self.call(ns, "dump", lambda h, _: self._observe(h, v6))

    async def _observe(self, h, v6: bool) -> NsState:
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
                mtu=msg.get("mtu") or 0,
            )
        for family in (socket.AF_INET, socket.AF_INET6) if v6 else (socket.AF_INET,):
            async for msg in await h.addr("dump", family=family):
                dev = names.get(msg["index"])
                iface = ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")
                st.addresses.add((dev, iface))
            async for msg in await h.route("dump", family=family):
                entry = _route_entry(msg, family)
                if entry is not None:
                    st.routes.append(entry)
        return st

    async def not_yet_transmitting(self, ns: str | None, names: set[str]) -> set[str]:
        """Of NAMES, the links that are up with carrier whose carrier the kernel's linkwatch work
        has not processed yet (operstate not UP): until it has, their transmit queues still hold
        the noop qdisc, which drops everything. A veth end already up when its peer comes up gets
        carrier at once but working queues only later, asynchronously (milliseconds; longer on a
        busy machine): a bridge forwarding a container's ARP reply into it in between loses it,
        and the container asks again only after a second (its neighbour retransmit time). The
        link's own IFLA_QDISC already names the real qdisc then: it cannot tell."""
        async def go(h, _):
            out = set()
            async for msg in await h.link("dump"):
                name = msg.get("ifname")
                if name in names and msg["flags"] & IFF_UP and msg["flags"] & IFF_LOWER_UP \
                        and msg.get("operstate") not in ("UP", "UNKNOWN"):   # a VXLAN device stays UNKNOWN
                    out.add(name)
            return out
        return await self.call(ns, "link dump", go)

    # ------------------------------------------------------------------ act

    async def _create_link(self, ns: str | None, msg, name: str) -> dict:
        """RTM_NEWLINK with NLM_F_ECHO: the kernel answers with the new link (its index, and for
        a veth its peer's index). No NLM_F_ACK: pyroute2 stops reading after the echo, and an
        ACK behind it would sit unread in the socket's queue forever (an error still comes).
        A retry whose first try was made but not answered finds the link already there."""
        flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO

        async def go(h, attempt):
            try:
                out = [m async for m in await h.nlm_request(_fresh(msg), RTM_NEWLINK, flags)]
            except NetlinkError as e:
                if attempt and e.code == 17:  # EEXIST: our own lost first try
                    return {"index": None}
                raise
            return next(m for m in out if m["header"]["type"] == RTM_NEWLINK)
        new = await self.call(ns, f"create {name}", go)
        if new["index"] is None:
            new = await self._link_by_name(ns, name)
        return new

    async def _link_by_name(self, ns: str | None, name: str) -> dict:
        async def go(h, _):
            # read the whole dump: a reader that stops early leaves the rest of it in the
            # socket, where it is taken for unsolicited replies later
            found = [m async for m in await h.link("dump") if m.get("ifname") == name]
            if found:
                return {"index": found[0]["index"], "link": found[0].get("link")}
            raise NetlinkLost(f"{name} in {ns or 'the current netns'}: made, then not found")
        return await self.call(ns, f"find {name}", go)

    async def create_bridge(self, ns: str | None, name: str, alias: str | None, mac: str = "", mtu: int = 0) -> int:
        msg = ifinfmsg()
        msg["flags"] = msg["change"] = IFF_UP
        msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})]
        if mac:
            msg["attrs"].append(("IFLA_ADDRESS", mac))
        if mtu:
            msg["attrs"].append(("IFLA_MTU", mtu))
        index = (await self._create_link(ns, msg, name))["index"]
        await self._mark(ns, index, alias)
        return index

    async def _mark(self, ns: str | None, index: int, alias: str | None) -> None:
        # the kernel ignores IFLA_IFALIAS in a create request: it takes a set
        if alias:
            msg = ifinfmsg()
            msg["index"] = index
            msg["attrs"] = [("IFLA_IFALIAS", alias)]
            await self._request(ns, msg, RTM_NEWLINK)

    async def create_veth(self, ns: str | None, name: str, alias: str | None, master: int | None,
                          up: bool, peer_ns: str | None, peer_name: str, mac: str = "",
                          peer_mac: str = "", mtu: int = 0) -> tuple[int, int]:
        fd = netns.open_fd(peer_ns)
        try:
            peer = [("IFLA_IFNAME", peer_name), ("IFLA_NET_NS_FD", fd)]
            if peer_mac:
                peer.append(("IFLA_ADDRESS", peer_mac))
            if mtu:
                peer.append(("IFLA_MTU", mtu))
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
            if mtu:
                msg["attrs"].append(("IFLA_MTU", mtu))
            new = await self._create_link(ns, msg, name)
        finally:
            os.close(fd)
        await self._mark(ns, new["index"], alias)
        return new["index"], new.get("link")

    async def create_vxlan(self, ns: str | None, name: str, alias: str | None, vni: int, local: str, dev: str,
                           port: int, master: int | None, mtu: int = 0, mac: str = "") -> int:
        """A VXLAN device over DEV (learning on: unicast MACs are learnt from what arrives;
        flooding goes where the all-zeros FDB entries say)."""
        underlay = (await self._link_by_name(ns, dev))["index"]
        data = [("IFLA_VXLAN_ID", vni), ("IFLA_VXLAN_PORT", port), ("IFLA_VXLAN_LINK", underlay),
                ("IFLA_VXLAN_LEARNING", 1)]
        data.append(("IFLA_VXLAN_LOCAL6" if ":" in local else "IFLA_VXLAN_LOCAL", local))
        msg = ifinfmsg()
        msg["flags"] = msg["change"] = IFF_UP
        msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": data})]})]
        if master:
            msg["attrs"].append(("IFLA_MASTER", master))
        if mtu:
            msg["attrs"].append(("IFLA_MTU", mtu))
        if mac:
            msg["attrs"].append(("IFLA_ADDRESS", mac))
        index = (await self._create_link(ns, msg, name))["index"]
        await self._mark(ns, index, alias)
        return index

    async def vxlan_info(self, ns: str | None, name: str) -> dict | None:
        """VNI, local address, port and underlay of a VXLAN device, or None."""
        async def go(h, _):
            for m in [m async for m in await h.link("dump") if m.get("ifname") == name]:   # the whole dump read
                info = m.get_attr("IFLA_LINKINFO")
                data = info.get_attr("IFLA_INFO_DATA") if info else None
                if data is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
                    return None
                return {"index": m["index"], "vni": data.get_attr("IFLA_VXLAN_ID"),
                        "local": data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6"),
                        "port": data.get_attr("IFLA_VXLAN_PORT") or 0,   # pyroute2 gives it in host order
                        "link": data.get_attr("IFLA_VXLAN_LINK")}
            return None
        return await self.call(ns, f"vxlan {name}", go)

    async def flood_entries(self, ns: str | None, index: int) -> set[str]:
        """The remote addresses of the all-zeros FDB entries of a VXLAN device (its flood list)."""
        async def go(h, _):
            out = set()
            async for m in await h.fdb("dump", ifindex=index):
                if m.get("ifindex") == index and m.get("NDA_LLADDR") == ZERO_MAC and m.get("NDA_DST"):
                    out.add(m.get("NDA_DST"))
            return out
        return await self.call(ns, "fdb dump", go)

    async def flood_entry(self, ns: str | None, index: int, dst: str, add: bool) -> None:
        async def go(h, attempt):
            try:
                await h.fdb("append" if add else "del", ifindex=index, lladdr=ZERO_MAC, dst=dst)
            except NetlinkError as e:
                if attempt and e.code in (17, 2):  # our own lost first try did it
                    return
                raise
        await self.call(ns, f"fdb {'append' if add else 'del'} {dst}", go)

    # The hot path (hundreds of requests for a big lab) builds messages directly: pyroute2's
    # keyword processing costs more than the kernel's work for these small requests.

    async def _request(self, ns: str | None, msg, msg_type: int, flags: int = _REQ) -> None:
        async def go(h, _):
            async for _m in await h.nlm_request(_fresh(msg), msg_type, flags):
                pass
        await self.call(ns, f"request type {msg_type}", go)

    async def set_link(self, ns: str | None, index: int, up: bool | None = None,
                       master: int | None = None, mtu: int | None = None) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        if up is not None:
            msg["flags"] = IFF_UP if up else 0
            msg["change"] = IFF_UP
        if master is not None:
            msg["attrs"].append(("IFLA_MASTER", master))
        if mtu is not None:
            msg["attrs"].append(("IFLA_MTU", mtu))
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

    @staticmethod
    def _addr_msg(index: int, iface) -> ifaddrmsg:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        ip = str(iface.ip)
        msg["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
        if iface.version == 4 and iface.network.prefixlen < 31:
            msg["attrs"].append(("IFA_BROADCAST", str(iface.network.broadcast_address)))
        if iface.version == 6:
            # no duplicate address detection: the topology gives each address once (validated),
            # and a tentative address would fail the first connection after `up` for ~1 s
            msg["flags"] = IFA_F_NODAD
            msg["attrs"].append(("IFA_FLAGS", IFA_F_NODAD))
        return msg

    async def delete_address(self, ns: str | None, index: int, iface) -> None:
        try:
            await self._request(ns, self._addr_msg(index, iface), RTM_DELADDR)
        except NetlinkError as e:
            if e.code not in (19, 99):  # ENODEV, EADDRNOTAVAIL: already gone
                raise

    async def add_address(self, ns: str | None, index: int, iface) -> None:
        msg = self._addr_msg(index, iface)
        try:
            await self._request(ns, msg, RTM_NEWADDR, _REQ | NLM_F_CREATE | NLM_F_EXCL)
        except NetlinkError as e:
            if e.code != 17:  # EEXIST: raced with ourselves or an admin, the result is what we want
                raise

    async def replace_route(self, ns: str | None, dst, gateway, oif: int) -> None:
        msg = rtmsg()
        msg["family"] = socket.AF_INET if dst.version == 4 else socket.AF_INET6
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
        """Exactly route R (its table, type, metric, next hop and device), not another to its dst."""
        msg = rtmsg()
        msg["family"] = socket.AF_INET if r.dst.version == 4 else socket.AF_INET6
        msg["dst_len"] = r.dst.prefixlen
        msg["table"] = r.table if r.table < 256 else 252
        msg["type"] = r.type
        msg["proto"] = r.proto
        attrs = [("RTA_TABLE", r.table)]
        if r.dst.prefixlen:
            attrs.append(("RTA_DST", str(r.dst.network_address)))
        if r.gateway is not None:
            attrs.append(("RTA_GATEWAY", str(r.gateway)))
        if r.oif:
            attrs.append(("RTA_OIF", r.oif))
        if r.priority:
            attrs.append(("RTA_PRIORITY", r.priority))
        msg["attrs"] = attrs
        try:
            await self._request(ns, msg, RTM_DELROUTE)
        except NetlinkError as e:
            if e.code != 3:  # ESRCH: already gone
                raise

    async def qdiscs(self, ns: str | None) -> dict[str, tuple[str, object]]:
        """The root qdisc of each device by name: ("tbf", rate in bit/s), ("netem", fingerprint),
        or (kind, None)."""
        async def go(h, _):
            names = {m["index"]: m.get("ifname") async for m in await h.link("dump")}
            return {names.get(i, str(i)): q for i, q in (await _qdisc_dump(h)).items()}
        return await self.call(ns, "qdisc dump", go)

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


async def _qdisc_dump(h) -> dict[int, tuple[str, object]]:
    out = {}
    async for m in await h.tc("dump"):
        if m["parent"] != 0xFFFFFFFF:
            continue  # only root qdiscs: what a device's egress goes through
        kind = m.get_attr("TCA_KIND")
        opts = m.get_attr("TCA_OPTIONS")
        if kind == "tbf" and opts is not None:
            parms = opts.get_attr("TCA_TBF_PARMS") or {}
            out[m["index"]] = ("tbf", int(parms.get("rate", 0)) * 8)
        elif kind == "netem":
            out[m["index"]] = ("netem", repr(opts))  # compared by fingerprint with what we applied
        else:
            out[m["index"]] = (kind or "", None)
    return out
