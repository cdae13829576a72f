"""Attach the loaded probes to the lab's devices and namespaces, and keep them attached as the
lab heals: a recreated veth has a new ifindex, a recreated namespace a new cookie. ``sync``
runs after repairs (off the heal's path, see daemon/probe_supervisor.py)."""
from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from ..adapters import netns
from ..lab.desired import SCENERY
from ..lab.resources import Desired, VethEnd
from . import links
from .families.base import BPF_PROG_TYPE_SCHED_CLS
from .build import explain
from .points import CONTAINER_NF, MAX_SHIFT, METRICS_NF, NF_POINTS

_PLACEHOLDER = 0x626C6E73636F6F6B  # "blnscook", NS_COOKIE in tc_points.c


@dataclass
class Attachment:
    ns: str | None
    node: str
    ifname: str
    ifindex: int
    inode: int
    fds: list[int]
    pfs: tuple = ()     # netfilter: the families hooked (IPv4, and IPv6 in a dual-stack lab)


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def tc_prog(p, fn: str, cookie: int) -> int:
    """A copy of tc program FN for the namespace with COOKIE (see NS_COOKIE in tc_points.c):
    its instructions as first loaded, the placeholder's ld_imm64 patched, loaded once more."""
    from .objects import prog_load
    fam = p.families["tc"]
    key = (fn, cookie)
    if key in p.tc_copies:
        return p.tc_copies[key]
    code = bytearray(fam.insns[fn])
    found = 0
    for i in range(0, len(code) - 15, 8):
        if code[i] == 0x18 and struct.unpack_from("<I", code, i + 4)[0] == _PLACEHOLDER & 0xFFFFFFFF \
                and struct.unpack_from("<I", code, i + 12)[0] == _PLACEHOLDER >> 32:
            struct.pack_into("<I", code, i + 4, cookie & 0xFFFFFFFF)
            struct.pack_into("<I", code, i + 12, cookie >> 32)
            found += 1
    if found != 1:
        raise OSError(errno.EINVAL, f"{fn}: namespace placeholder found {found} times, expected once")
    fd = prog_load(BPF_PROG_TYPE_SCHED_CLS, bytes(code), fn, fam.license)
    p.tc_copies[key] = fd
    return fd


def scenery(p, d: Desired) -> set:
    """Namespaces the metrics probes leave alone: the sandbox's stand-ins for the LAN, the
    gateway, the Windows client and the internet are not the lab a host runs (host mode has
    none of them), and probing them would triple the cost per packet. A trace follows
    packets through them too."""
    if p.trace is not None or d.mode != "sandbox":
        return set()
    return {d.nodes[n] for n in SCENERY if n in d.nodes}


def routers(d: Desired) -> set:
    """Namespaces that forward: they get every netfilter point (a forwarded packet's hops and
    where it is dropped), not only where packets enter and leave their own stack."""
    return {s.ns for s in d.sysctls if s.key.endswith(("ip_forward", "forwarding")) and s.value == "1"}


def veth_counting(p, d: Desired) -> list[tuple[VethEnd, VethEnd | None]]:
    """Where the tc probes count each veth pair: (the end they attach to, the end whose counts
    are its mirror, or None). What one end sends the other receives — the same skb, length
    and all — so the metrics probes attach at one end only (the bridge port where there is one)
    and give the other end the mirror of its counts: egress of one is ingress of the other.
    That halves the tc links (each waits out an RCU grace period under RTNL: 11.7 ms here) and
    the tc runs of every packet through a veth. What the kernel drops between the two ends (a
    full backlog, a peer that is down) is in the drop counts, not in the mirror. A trace attaches
    at both ends: it shows every hop."""
    skip = scenery(p, d)
    out: list[tuple[VethEnd, VethEnd | None]] = []
    for v in d.veths:
        ends = [e for e in v.ends if e.ns not in skip]
        if p.trace is not None or len(ends) < 2:
            out += [(e, None) for e in ends]
            continue
        here = v.b if v.b.master and not v.a.master else v.a
        out.append((here, v.b if here is v.a else v.a))
    return out


def mirrors(p, d: Desired) -> dict[tuple[str, str], tuple[str, str]]:
    """(node, interface) counted -> (node, interface) whose counts mirror it (collector.py)."""
    nodes = d.ns_nodes()
    return {(nodes.get(e.ns, "host"), e.name): (nodes.get(m.ns, "host"), m.name)
            for e, m in veth_counting(p, d) if m is not None}


def wanted_devices(p, d: Desired) -> list[tuple[str | None, str]]:
    skip = scenery(p, d)
    want = {(b.ns, b.name): None for b in d.bridges if b.ns not in skip}
    want.update({(e.ns, e.name): None for e, _ in veth_counting(p, d)})
    want.update({(x.ns, x.name): None for x in d.vxlans})   # a network's way to the other lab hosts
    if d.uplink:
        want[(d.host_ns, d.uplink)] = None
    return list(want)


def sync(p, d: Desired) -> int:
    """Attach to what the lab has now; re-attach where a device or namespace was made anew;
    let go of what is gone. Returns the number of links made."""
    made = 0
    node_of = d.ns_nodes()
    skip = scenery(p, d)
    cookies: dict[int, str] = {}
    ifnames: dict[tuple[int, int], str] = {}
    seen: dict[str | None, tuple[int, int, dict[str, int]]] = {}   # ns -> inode, cookie, devices
    for ns in d.managed_ns():
        if ns is not None and not netns.exists(ns):
            continue
        try:
            ino = netns.inode(ns)
            cookie = links.netns_cookie(ns)
            with netns.entered(ns):
                devices = {name: idx for idx, name in socket.if_nameindex()}
        except OSError:
            continue
        seen[ns] = (ino, cookie, devices)
        cookies[cookie] = node_of.get(ns, ns or "host")
        # every device of the namespace gets a name now (a stranger's is "other"), so a count
        # never changes label later, which would make its counter fall
        for idx in devices.values():
            ifnames[(cookie, idx)] = "other"
        ifnames[(cookie, 1)] = "lo"
        if ns not in skip:
            made += _sync_nf(p, ns, node_of.get(ns, "host"), ino, full=(ns == d.host_ns or p.trace is not None
                                                                        or ns in routers(d)),
                             pfs=PFS_DUAL if d.ipv6 else PFS_V4)
    live = set()
    for (ns, ifname) in wanted_devices(p, d):
        if ns not in seen or not seen[ns][2].get(ifname):
            continue
        ino, cookie, devices = seen[ns]
        ifnames[(cookie, devices[ifname])] = ifname
        live.add((ns, ifname))
        made += _sync_tc(p, ns, node_of.get(ns, "host"), ifname, devices[ifname], ino, cookie)
    for key in [k for k in p.tc if k not in live]:
        close_fds(p.tc.pop(key).fds)
    managed = set(d.managed_ns())
    for ns in [n for n in p.nf if n not in managed or (n is not None and not netns.exists(n))]:
        close_fds(p.nf.pop(ns).fds)
    _retire_copies(p, cookies)
    with p.lock:
        p.cookies, p.ifnames = cookies, ifnames
        # names stay known after a device or namespace is gone: the counts it left in the
        # maps are folded into the same label set (collector.fold), never lost
        p.known_cookies.update(cookies)
        p.known_ifnames.update(ifnames)
    return made


def _sync_tc(p, ns: str | None, node: str, ifname: str, ifindex: int, ino: int, cookie: int) -> int:
    if not p.families["tc"].ok:
        return 0
    cur = p.tc.get((ns, ifname))
    if cur and cur.ifindex == ifindex and cur.inode == ino and cur.fds:
        return 0  # (one that failed to attach is tried again)
    if cur:
        close_fds(cur.fds)
    fds: list[int] = []
    try:
        for fn, egress in (("tc_ingress", False), ("tc_egress", True)):
            fds.append(links.tcx(tc_prog(p, fn, cookie), ns, ifindex, egress))
        p.attach_errors.pop(f"tc {node}/{ifname}", None)
    except OSError as e:
        close_fds(fds)
        p.attach_errors[f"tc {node}/{ifname}"] = explain(e)
    p.tc[(ns, ifname)] = Attachment(ns, node, ifname, ifindex, ino, fds)
    return len(fds)


def _retire_copies(p, cookies: dict[int, str]) -> None:
    with p.lock:
        for key in [k for k in p.tc_copies if k[1] not in cookies]:
            fd = p.tc_copies.pop(key)
            try:  # its runs stay counted: bridgelab_probe_run*_total never go backwards
                a, b = links.prog_stats(fd)
                p.retired_stats[0] += a
                p.retired_stats[1] += b
            except OSError:
                pass
            close_fds([fd])


PFS_V4 = (links.NFPROTO_IPV4,)
PFS_DUAL = (links.NFPROTO_IPV4, links.NFPROTO_IPV6)


def _sync_nf(p, ns: str | None, node: str, ino: int, full: bool = True, pfs: tuple = PFS_V4) -> int:
    nf = p.families["nf"]
    if not nf.ok:
        return 0
    cur = p.nf.get(ns)
    if cur and cur.inode == ino and cur.fds and cur.pfs == pfs:
        return 0
    if cur:
        close_fds(cur.fds)
    fds: list[int] = []
    try:
        for pf in pfs:
            for pt in (NF_POINTS if p.trace is not None else METRICS_NF) if full else CONTAINER_NF:
                prog = nf.progs[f"nf_p{pt.id}" if full else f"nf_c{pt.id}"]
                fds.append(_free_priority(prog, ns, pt, pf))
        p.attach_errors.pop(f"nf {node}", None)
    except OSError as e:
        close_fds(fds)
        p.attach_errors[f"nf {node}"] = explain(e)
    p.nf[ns] = Attachment(ns, node, "", 0, ino, fds, pfs)
    return len(fds)


def _free_priority(prog: int, ns: str | None, pt, pf: int = links.NFPROTO_IPV4) -> int:
    """A netfilter hook takes one program per priority: the daemon's, a trace's and an
    explain's each find a free one near the designed priority, never across the NAT one."""
    for k in range(MAX_SHIFT):
        try:
            return links.netfilter(prog, ns, pt.hook, pt.priority + k * pt.step, pf)
        except OSError as e:
            if e.errno != errno.EBUSY or k == MAX_SHIFT - 1:
                raise
    raise OSError(errno.EBUSY, "no free priority")


def close(p) -> None:
    for a in list(p.tc.values()) + list(p.nf.values()):
        close_fds(a.fds)
    close_fds(list(p.tc_copies.values()))
    p.tc_copies.clear()
    for fam in p.families.values():   # a compiled object's programs, perf events, then maps
        close_fds(fam.owned)
        fam.maps, fam.progs, fam.insns = {}, {}, {}
    close_fds(p.owned_map_fds)
    p.tc.clear()
    p.nf.clear()
    done = set()
    for fam in p.families.values():
        if fam.bpf is not None and id(fam.bpf) not in done:
            done.add(id(fam.bpf))
            try:
                fam.bpf.cleanup()
            except Exception:
                pass
        fam.bpf = None
