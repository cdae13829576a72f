"""The cheap probes an expectation is checked with: one ICMP echo, one TCP connect, one UDP
request that wants a reply. Each runs in the source node's namespace from the calling thread
(setns is per thread), sends as little as it can, and leaves nothing behind: the conntrack
entry its flow made in the lab's host namespace is deleted at once (the lab would otherwise
carry a 30 s ICMP or a 120 s TIME_WAIT entry per check)."""

from __future__ import annotations

import errno
import random
import re
import select
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

from ...adapters import netns

ICMP_ECHO = {4: (8, 0), 6: (128, 129)}      # request type, reply type
STATES_WORK = {"replied", "connected"}


@dataclass
class Outcome:
    state: str           # replied, connected, refused, timeout, unreachable, error ...
    seconds: float
    packets: int         # what the probe sent (its cost, counted)
    sport: int = 0       # the source port (ICMP: the echo id): what its conntrack entry carries
    src: str = ""        # the source address the kernel chose

    @property
    def works(self) -> bool:
        return self.state in STATES_WORK


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def icmp(ns: str | None, addr: str, timeout: float = 1.0) -> Outcome:
    """One echo request from a raw socket (no ping process: its echo id is ours to pick and
    clean up after)."""
    fam = 6 if ":" in addr else 4
    req, rep = ICMP_ECHO[fam]
    ident = random.randint(1, 0xFFFF)
    t0 = time.monotonic()
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET6 if fam == 6 else socket.AF_INET, socket.SOCK_RAW,
                          socket.IPPROTO_ICMPV6 if fam == 6 else socket.IPPROTO_ICMP)
    try:
        payload = b"bridgelab check\0" + struct.pack("!d", time.time())
        head = struct.pack("!BBHHH", req, 0, 0, ident, 1)
        # ICMPv6's checksum covers a pseudo-header: the kernel fills it in for raw ICMPv6 sockets
        pkt = head + payload if fam == 6 else struct.pack("!BBHHH", req, 0, _csum(head + payload), ident, 1) + payload
        try:
            s.connect((addr, 0))
            src = s.getsockname()[0]
            s.send(pkt)
        except OSError as e:
            return Outcome(_errno_state(e), time.monotonic() - t0, 0, ident)
        deadline = t0 + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([s], [], [], left)[0]:
                return Outcome("timeout", time.monotonic() - t0, 1, ident, src)
            try:
                data = s.recv(2048)
            except OSError as e:   # a router's "unreachable" about our echo, as the socket's error
                return Outcome(_errno_state(e), time.monotonic() - t0, 1, ident, src)
            icmp_at = 0 if fam == 6 else (data[0] & 0x0F) * 4   # raw IPv4 sockets get the IP header too
            if len(data) < icmp_at + 8:
                continue
            typ, _code, _c, rid, _seq = struct.unpack_from("!BBHHH", data, icmp_at)
            if typ == rep and rid == ident:
                return Outcome("replied", time.monotonic() - t0, 1, ident, src)
            if typ in ((3, 11) if fam == 4 else (1, 3)) and _about(data, icmp_at + 8, fam, req, ident):
                return Outcome("unreachable", time.monotonic() - t0, 1, ident, src)
    finally:
        s.close()


def _about(data: bytes, at: int, fam: int, req: int, ident: int) -> bool:
    """An ICMP error is about our echo only if the packet it quotes is: every error the
    destination sends reaches a raw socket (a matrix check once took one about another probe's
    packet for its own and called a working path unreachable)."""
    if fam == 4:
        if len(data) < at + 20 or data[at + 9] != socket.IPPROTO_ICMP:
            return False
        inner = at + (data[at] & 0x0F) * 4
    else:
        if len(data) < at + 40 or data[at + 6] != socket.IPPROTO_ICMPV6:
            return False
        inner = at + 40
    if len(data) < inner + 6:
        return False
    typ, _code, _c, rid = struct.unpack_from("!BBHH", data, inner)
    return typ == req and rid == ident


def _socket(ns: str | None, addr: str, kind: int, timeout: float) -> tuple[socket.socket, int]:
    """A socket of ADDR's family made in NS (the namespace a socket is made in is its own)."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with netns.entered(ns):
        s = socket.socket(fam, kind)
    s.settimeout(timeout)
    return s, fam


def tcp(ns: str | None, addr: str, port: int, timeout: float = 1.5) -> Outcome:
    t0 = time.monotonic()
    s, fam = _socket(ns, addr, socket.SOCK_STREAM, timeout)
    # closed with a FIN, not a reset: a server reading its request sees an end, not an error
    # in its log (the source keeps a TIME_WAIT socket; the lab's conntrack entry is deleted)
    sport, src = 0, ""
    try:
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
        sport = s.getsockname()[1]
        s.connect((addr, port))
        src = s.getsockname()[0]
        took = time.monotonic() - t0
        # end it before its conntrack entry is deleted: a FIN or ACK arriving after the delete
        # would be picked up mid-stream as a new entry (nf_conntrack_tcp_loose)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.5)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        return Outcome("connected", took, 5, sport, src)
    except socket.timeout:
        return Outcome("timeout", time.monotonic() - t0, 1, sport)
    except OSError as e:
        return Outcome(_errno_state(e), time.monotonic() - t0, 1, sport)
    finally:
        s.close()


def udp(ns: str | None, addr: str, port: int, timeout: float = 1.0) -> Outcome:
    """A request that wants a reply: a UDP service that answers works; ICMP port unreachable
    (ECONNREFUSED on a connected socket) is refused; silence is a timeout."""
    t0 = time.monotonic()
    s, _fam = _socket(ns, addr, socket.SOCK_DGRAM, timeout)
    sport, src = 0, ""
    try:
        s.connect((addr, port))
        sport, src = s.getsockname()[1], s.getsockname()[0]
        s.send(b"bridgelab check")
        s.recv(2048)
        return Outcome("replied", time.monotonic() - t0, 1, sport, src)
    except socket.timeout:
        return Outcome("timeout", time.monotonic() - t0, 1, sport, src)
    except OSError as e:
        return Outcome(_errno_state(e), time.monotonic() - t0, 1, sport, src)
    finally:
        s.close()


def _errno_state(e: OSError) -> str:
    return {errno.ECONNREFUSED: "refused", errno.ENETUNREACH: "unreachable", errno.EHOSTUNREACH: "unreachable",
            errno.EACCES: "refused", errno.EPERM: "refused"}.get(e.errno, f"error {errno.errorcode.get(e.errno, e.errno)}")


def forget(ns: str | None, proto: str, src: str, dst: str, sport: int, dport: int | None) -> int:
    """Delete the conntrack entry the probe's flow made in NS (the lab's host) with conntrack(8);
    returns how many it deleted (0: none was made there, e.g. a flow that never crossed the
    host). The tool, not a netlink socket of our own: pyroute2's conntrack socket is opened by
    its own thread, outside the namespace we entered."""
    if not src or not sport:
        return 0
    v6 = ":" in src
    cmd = ["conntrack", "-D", "-f", "ipv6" if v6 else "ipv4", "-s", src, "-d", dst]
    if proto == "icmp":
        cmd += ["-p", "icmpv6" if v6 else "icmp", "--icmp-type" if not v6 else "--icmpv6-type",
                str(ICMP_ECHO[6 if v6 else 4][0]), "--icmp-id" if not v6 else "--icmpv6-id", str(sport)]
    else:
        cmd += ["-p", proto, "--sport", str(sport), "--dport", str(dport)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=5, preexec_fn=netns.setns_child(ns))
    m = re.search(r"(\d+) flow entr", r.stderr + r.stdout)
    return int(m.group(1)) if m else 0
