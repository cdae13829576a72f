"""The lab's delay line: netem's delay, jitter, loss, corruption and duplication in user space,
for kernels without sch_netem (this machine kind's: CONFIG_NET_SCH_NETEM off, no modules).

Each impaired direction of a link has an iptables NFQUEUE rule at the receiving end's
PREROUTING (there the skb has crossed the veth and belongs to no socket: held at the sender's
egress instead, TCP small queues throttled a 20 ms link to 2.6 Mbit/s; held at the receiver,
740 Mbit/s). This process reads every queue of the lab, one netlink socket per namespace, and
gives each packet its verdict: dropped (loss), accepted with a byte flipped (corruption),
accepted and sent once more (duplication), accepted after its delay (± jitter). Rate is the
kernel's (tbf at the sender's egress). The rules carry --queue-bypass: without this process the
link carries traffic unimpaired, never black-holed; bridgelab restarts it like a service.

    python3 -m orchestrator.impair LAB CONFIG

CONFIG (JSON, rewritten by `bridgelab up` and the daemon, re-read when it changes):
    {"queues": [{"ns": "bl-x-r2", "queue": 1, "name": "r1:eth1 -> r2:eth1", "delay_us": 20000,
                 "jitter_us": 2000, "loss_pct": 0.5, "corrupt_pct": 0, "duplicate_pct": 0}, ...]}
Counters go to CONFIG's directory as impair-stats.json every second.
"""
from __future__ import annotations

import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN = 1
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
MARK = 0x626C  # what our duplicates carry, so their own rule lets them by
QUEUE_MAXLEN = 65536  # past this the kernel accepts (fail-open), it never drops for us
SO_MARK = 36


def _nla(t: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, t) + data + b"\0" * (-n % 4)


def _msg(mtype: int, queue: int, attrs: list[bytes], flags: int = NLM_F_REQUEST, family: int = 0) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype, flags, 0, 0) + body


class Queue:
    """One NFQUEUE in one namespace, with the impairment it applies."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.ns, self.num = cfg["ns"], cfg["queue"]
        self.sock = _netlink_in(self.ns)
        self.inode = _inode(self.ns)
        self.stats = {"delayed": 0, "dropped": 0, "corrupted": 0, "duplicated": 0, "passed": 0}
        # one bind for the queue number: both families' rules (iptables, ip6tables) feed it
        self._config(_nla(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, socket.htons(socket.AF_INET))))
        self._config(_nla(NFQA_CFG_PARAMS, struct.pack(">IB", 0xFFFF, NFQNL_COPY_PACKET)),
                     _nla(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", QUEUE_MAXLEN)),
                     _nla(NFQA_CFG_MASK, struct.pack(">I", NFQA_CFG_F_FAIL_OPEN)),
                     _nla(NFQA_CFG_FLAGS, struct.pack(">I", NFQA_CFG_F_FAIL_OPEN)))
        self.sock.setblocking(False)
        self.raw: dict[int, socket.socket] = {}

    def _config(self, *attrs: bytes) -> None:
        self.sock.send(_msg(NFQNL_MSG_CONFIG, self.num, list(attrs), NLM_F_REQUEST | NLM_F_ACK))
        data = self.sock.recv(4096)
        err = struct.unpack_from("=i", data, 16)[0] if len(data) >= 20 else 0
        if err:
            raise OSError(-err, f"NFQUEUE {self.num} in {self.ns}: {os.strerror(-err)}")

    def verdict(self, pid: int, verdict: int, payload: bytes | None = None) -> None:
        attrs = [_nla(NFQA_VERDICT_HDR, struct.pack(">II", verdict, pid))]
        if payload is not None:
            attrs.append(_nla(NFQA_PAYLOAD, payload))
        try:
            self.sock.send(_msg(NFQNL_MSG_VERDICT, self.num, attrs))
        except OSError:
            pass  # the namespace went away; the kernel has freed its queue

    def duplicate(self, payload: bytes) -> None:
        """Send a copy of the packet as it arrived: a raw socket in the receiver's namespace,
        marked so the queue rule lets it by (it then takes the same way the original does)."""
        v = payload[0] >> 4
        s = self.raw.get(v)
        if s is None:
            s = self.raw[v] = _raw_in(self.ns, v)
        try:
            dst = socket.inet_ntop(socket.AF_INET if v == 4 else socket.AF_INET6,
                                   payload[16:20] if v == 4 else payload[24:40])
            s.sendto(payload, (dst, 0))
        except OSError:
            pass

    def close(self) -> None:
        for s in [self.sock, *self.raw.values()]:
            s.close()


def _inode(ns: str) -> int:
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except FileNotFoundError:
        return 0


def _netlink_in(ns: str) -> socket.socket:
    from ..adapters import netns
    s = netns.netlink_socket(ns, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((0, 0))
    return s


def _raw_in(ns: str, version: int) -> socket.socket:
    from ..adapters import netns
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET if version == 4 else socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
    return s


def decide(cfg: dict, rnd: random.Random) -> tuple[bool, bool, bool, float]:
    """(drop, corrupt, duplicate, delay in seconds) for one packet, netem's order (pure)."""
    drop = rnd.random() * 100 < cfg.get("loss_pct", 0)
    dup = not drop and rnd.random() * 100 < cfg.get("duplicate_pct", 0)
    corrupt = not drop and rnd.random() * 100 < cfg.get("corrupt_pct", 0)
    delay = cfg.get("delay_us", 0)
    jitter = cfg.get("jitter_us", 0)
    if jitter:
        delay = max(0, delay + rnd.uniform(-jitter, jitter))
    return drop, corrupt, dup, delay / 1e6


def corrupted(payload: bytes, rnd: random.Random) -> bytes:
    """One random bit flipped past the IP header (netem corrupts one bit of the packet; the
    transport checksum then fails where it is checked)."""
    v = payload[0] >> 4
    start = (payload[0] & 0x0F) * 4 if v == 4 else 40
    if len(payload) <= start:
        return payload
    i = rnd.randrange(start, len(payload))
    b = bytearray(payload)
    b[i] ^= 1 << rnd.randrange(8)
    return bytes(b)


def packets(data: bytes):
    """(packet id, payload) of each NFQNL_MSG_PACKET in a netlink datagram."""
    off = 0
    while off + 16 <= len(data):
        ln, mtype = struct.unpack_from("=IH", data, off)
        if ln < 16:
            return
        if mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pid, payload, a = None, b"", off + 20
            while a + 4 <= off + ln:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                atype &= 0x7FFF
                if atype == NFQA_PACKET_HDR:
                    pid = struct.unpack_from(">I", data, a + 4)[0]
                elif atype == NFQA_PAYLOAD:
                    payload = data[a + 4:a + alen]
                a += (alen + 3) & ~3
            if pid is not None:
                yield pid, payload
        off += (ln + 3) & ~3


class DelayLine:
    def __init__(self, config_path: str):
        self.path = config_path
        self.stats_path = os.path.join(os.path.dirname(config_path), "impair-stats.json")
        self.mtime = 0.0
        self.queues: dict[tuple[str, int], Queue] = {}
        self.by_fd: dict[int, Queue] = {}
        self.held: list[tuple[float, int, int, Queue]] = []  # (due, seq, packet id, queue)
        self.rnd = random.Random()
        self.seq = 0
        self.totals: dict[str, dict] = {}

    def reload(self) -> None:
        """Follow the config: open queues of new or re-made namespaces, close gone ones."""
        try:
            st = os.stat(self.path)
            if st.st_mtime == self.mtime and all(q.inode == _inode(q.ns) for q in self.queues.values()):
                return
            with open(self.path) as f:
                want = {(c["ns"], c["queue"]): c for c in json.load(f).get("queues", [])}
            self.mtime = st.st_mtime
        except (OSError, ValueError):
            return
        for key in [k for k, q in self.queues.items() if k not in want or q.inode != _inode(q.ns)]:
            self._drop_queue(key)
        for key, cfg in want.items():
            q = self.queues.get(key)
            if q is not None:
                q.cfg = cfg
                continue
            try:
                q = self.queues[key] = Queue(cfg)
                self.by_fd[q.sock.fileno()] = q
            except OSError as e:
                print(f"bridgelab delay line: {e}", file=sys.stderr, flush=True)

    def _drop_queue(self, key) -> None:
        q = self.queues.pop(key)
        self.by_fd.pop(q.sock.fileno(), None)
        self.totals[q.cfg.get("name", str(key))] = dict(q.stats)  # counters never fall
        q.close()

    def handle(self, q: Queue) -> None:
        while True:
            try:
                data = q.sock.recv(1 << 17)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ENOBUFS: the kernel dropped queue messages (fail-open keeps traffic)
                continue
            now = time.monotonic()
            for pid, payload in packets(data):
                drop, corrupt, dup, delay = decide(q.cfg, self.rnd)
                if drop:
                    q.stats["dropped"] += 1
                    q.verdict(pid, NF_DROP)
                    continue
                if dup:
                    q.stats["duplicated"] += 1
                    q.duplicate(payload)
                new = corrupted(payload, self.rnd) if corrupt and payload else None
                if new is not None:
                    q.stats["corrupted"] += 1
                if delay > 0:
                    q.stats["delayed"] += 1
                    self.seq += 1
                    heapq.heappush(self.held, (now + delay, self.seq, pid, q, new))
                else:
                    q.stats["passed"] += 1
                    q.verdict(pid, NF_ACCEPT, new)

    def release(self) -> None:
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            _, _, pid, q, new = heapq.heappop(self.held)
            if q.num is not None and q.sock.fileno() in self.by_fd:
                q.verdict(pid, NF_ACCEPT, new)

    def write_stats(self) -> None:
        out = dict(self.totals)
        out["_config_mtime"] = self.mtime  # which config is in force: `up` waits for it
        for q in self.queues.values():
            name = q.cfg.get("name", f"{q.ns}/{q.num}")
            prev = self.totals.get(name, {})
            out[name] = {k: v + prev.get(k, 0) for k, v in q.stats.items()}
        tmp = self.stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, self.stats_path)

    def run(self) -> None:
        # SIGHUP (the config changed): wake up at once, through a pipe select() watches
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)
        signal.signal(signal.SIGHUP, lambda *_: None)
        last_look = 0.0
        while True:
            now = time.monotonic()
            if now - last_look >= 1.0:
                self.reload()
                self.write_stats()
                last_look = now
            timeout = min(1.0, max(0.0, self.held[0][0] - now)) if self.held else 1.0
            try:
                ready, _, _ = select.select([r, *self.by_fd], [], [], timeout)
            except (OSError, ValueError):  # a socket closed under us by a reload
                ready = []
            if r in ready:
                os.read(r, 512)
                last_look = 0.0  # reload now
                continue
            for fd in ready:
                q = self.by_fd.get(fd)
                if q is not None:
                    self.handle(q)
            self.release()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m orchestrator.impair LAB CONFIG", file=sys.stderr)
        return 2
    line = DelayLine(argv[1])
    line.reload()
    try:
        line.run()
    except KeyboardInterrupt:
        pass
    return 0
