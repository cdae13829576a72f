"""Link impairments (netem): one small driver interface, two drivers, chosen by what the
running kernel has (detected, never assumed).

- ``NetemDriver``: the kernel's sch_netem as the root qdisc of the sending end's egress; delay,
  jitter, loss, rate, corruption and duplication all in one qdisc, changed in place.
- ``DelayLineDriver`` for a kernel without sch_netem (this machine kind's: CONFIG_NET_SCH_NETEM
  off, no modules): rate by tbf at the sending end's egress (the kernel has it), the rest by the
  lab's delay line (impair/delayline.py) behind an NFQUEUE rule at the receiving end's
  PREROUTING (ip6tables too), `--queue-bypass` so a missing delay line never black-holes a link.

Writes go through iproute2's `tc` and iptables (few, on change); observation is a netlink
qdisc dump and the rule listing.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import re
import shlex
import subprocess

from ..lab.resources import Impairment
from ..lab.spec import Netem
from . import netns

COMMENT = "bridgelab:{lab}:impair"
TBF_LATENCY = "50ms"  # what tbf may hold before it drops: a shaper's queue, not a delay


@functools.lru_cache(maxsize=1)
def netem_available() -> bool:
    """sch_netem in the running kernel: its config if readable, else a probe on a veth pair in
    a namespace of our own, removed at once."""
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{os.uname().release}", open)):
        try:
            with opener(path, "rt") as f:
                text = f.read()
            return bool(re.search(r"^CONFIG_NET_SCH_NETEM=[ym]", text, re.M))
        except OSError:
            continue
    ns = f"bl-probe-netem{os.getpid()}"
    try:
        netns.create_many([ns])
        _run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        return subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"],
                              capture_output=True).returncode == 0
    except (OSError, RuntimeError):
        return False
    finally:
        netns.remove_many([ns])


def _run(cmd: list[str], ns: str | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=netns.setns_child(ns))
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def _tc(ns: str | None, *args: str) -> str:
    return _run(["tc", *args], ns)


def netem_args(em: Netem) -> list[str]:
    out = []
    if em.delay_us:
        out += ["delay", f"{em.delay_us}us"] + ([f"{em.jitter_us}us"] if em.jitter_us else [])
    for key, v in (("loss", em.loss_pct), ("corrupt", em.corrupt_pct), ("duplicate", em.duplicate_pct)):
        if v:
            out += [key, f"{v:g}%"]
    if em.rate_bps:
        out += ["rate", f"{em.rate_bps}bit"]
    return out


def tbf_args(rate_bps: int) -> list[str]:
    # burst: at least one jiffy's worth at the rate (1/250 s) and a few full frames
    burst = max(rate_bps // 8 // 250, 3 * 1514)
    return ["rate", f"{rate_bps}bit", "burst", str(burst), "latency", TBF_LATENCY]


class NetemDriver:
    name = "netem"
    what = "sch_netem qdisc at each sending end's egress"

    def apply(self, imp: Impairment, lab: str, queue_of) -> None:
        _tc(imp.ns, "qdisc", "replace", "dev", imp.dev, "root", "netem", *netem_args(imp.netem))

    def clear(self, ns: str | None, dev: str, lab: str) -> None:
        _del_root_qdisc(ns, dev)


def _del_root_qdisc(ns: str | None, dev: str) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, preexec_fn=netns.setns_child(ns))


class DelayLineDriver:
    """Each direction gets two queue rules: its TCP at the receiver's PREROUTING (there the skb
    has crossed the veth and belongs to no socket; held at the sender, TCP small queues
    throttled a 20 ms link to 2.6 Mbit/s, held at the receiver it carried 740 Mbit/s) and
    everything else at the sender's POSTROUTING (a packet held at the receiver's ingress already
    carries its receive timestamp, and ping's RTT would leave that delay out)."""

    name = "delayline"
    what = "tbf for rate at the sending end, the lab's delay line (NFQUEUE) for the rest"

    @staticmethod
    def queued(em: Netem) -> bool:
        return bool(em.delay_us or em.loss_pct or em.corrupt_pct or em.duplicate_pct)

    @staticmethod
    def rules_of(imp: Impairment) -> list[tuple[str | None, str, str, list[str]]]:
        """(namespace, tag, chain, iptables match) of the direction's two rules."""
        if imp.peer_port:
            ingress = ["-m", "physdev", "--physdev-in", imp.peer_dev]
        else:
            ingress = ["-i", imp.peer_dev]
        egress = ["-m", "physdev", "--physdev-out", imp.dev] if imp.port else ["-o", imp.dev]
        return [(imp.peer_ns, f"in:{imp.peer_dev}", "PREROUTING", [*ingress, "-p", "tcp"]),
                (imp.ns, f"out:{imp.dev}", "POSTROUTING", [*egress, "!", "-p", "tcp"])]

    def apply(self, imp: Impairment, lab: str, queue_of) -> None:
        em = imp.netem
        if em.rate_bps:
            _tc(imp.ns, "qdisc", "replace", "dev", imp.dev, "root", "tbf", *tbf_args(em.rate_bps))
        else:
            _del_root_qdisc(imp.ns, imp.dev)
        for ns, tag, chain, match in self.rules_of(imp):
            remove_rules(ns, lab, tag)
            if self.queued(em):
                for tool in ("iptables", "ip6tables"):
                    _run([tool, "-w", "-t", "mangle", "-A", chain, *match, "-m", "mark", "!", "--mark", "0x626c",
                          "-m", "comment", "--comment", f"{COMMENT.format(lab=lab)}:{tag}", "-j", "NFQUEUE",
                          "--queue-num", str(queue_of(ns, tag)), "--queue-bypass"], ns)

    def clear(self, ns: str | None, dev: str, lab: str) -> None:
        _del_root_qdisc(ns, dev)


def _our_rules(tool: str, ns: str | None, comment: str, tag: str | None = None) -> list[str]:
    out = []
    for chain in ("PREROUTING", "POSTROUTING"):
        try:
            listing = _run([tool, "-w", "-t", "mangle", "-S", chain], ns)
        except RuntimeError:
            continue
        out += [x for x in listing.splitlines() if f"{comment}:{tag}" in x] if tag else \
            [x for x in listing.splitlines() if f"{comment}:" in x]
    return out


_seen: dict[tuple, tuple[tuple[int, str], set[str]]] = {}


def queue_rules(ns: str | None, lab: str) -> set[str]:
    """The tags ("in:DEV", "out:DEV") of our queue rules in NS (IPv4's). iptables keeps the
    comment where nft's JSON does not show it, so `iptables -S` tells; it runs only when the
    table changed since the last look (its in-process JSON listing says): a pass must not fork."""
    from . import nft
    try:
        fp = json.dumps(nft.table_json(ns, "ip", "mangle"), sort_keys=True)
        fp = re.sub(r'"counter": \{[^}]*\}', "", fp)  # counters move with every packet
    except nft.NftError:
        fp = ""
    key, ino = (ns, lab), netns.inode(ns)
    hit = _seen.get(key)   # one entry per namespace name: a namespace made anew replaces it
    if hit is not None and hit[0] == (ino, fp):
        return set(hit[1])
    comment = COMMENT.format(lab=lab)
    tags = {m.group(1) for line in _our_rules("iptables", ns, comment)
            for m in [re.search(re.escape(comment) + r':([^"\s]+)', line)] if m}
    _seen[key] = ((ino, fp), tags)
    return set(tags)


def remove_rules(ns: str | None, lab: str, tag: str) -> None:
    comment = COMMENT.format(lab=lab)
    for tool in ("iptables", "ip6tables"):
        for rule in _our_rules(tool, ns, comment, tag):
            _run([tool, "-w", "-t", "mangle", *shlex.split("-D" + rule[2:])], ns)


def driver():
    return NetemDriver() if netem_available() else DelayLineDriver()


def read_config(path: str) -> dict[str, dict]:
    try:
        with open(path) as f:
            return {q["name"]: q for q in json.load(f).get("queues", [])}
    except (OSError, ValueError):
        return {}


def write_config(path: str, queues: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"queues": queues}, f, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
