"""Prometheus families read from the probes' kernel maps at scrape time.

Label sets are bounded by the lab: `node` (its namespaces), `interface` (the lab's own devices),
`hook` (the points in points.py, tc ingress/egress, and bridge_* for frames br_netfilter shows the
IP hooks), `direction`, `protocol` (tcp, udp, icmp, other_ip, non_ip; `ipv4` at netfilter hooks),
`reason` (the kernel's drop reasons), `probe` (tc, nf, drops). No per-flow labels.
"""
from __future__ import annotations

import struct
import threading
from types import SimpleNamespace

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import links, points
from .points import nf_hook
from .events import tuple_dict
from .reasons import is_loss, reason_names

PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 0: "non_ip"}
NDP = "ndp"   # ICMPv6 types 133-137 (tc_points.c tc_key.ndp): apart from ping and errors
FAMILY = {4: "ipv4", 6: "ipv6"}


def _proto(k) -> str:
    if not k.family:
        return "non_ip"
    if getattr(k, "ndp", 0):
        return NDP
    return PROTO.get(k.proto, "other_ip")


# key and value layouts of the maps read at scrape (probes/*.c)
LAYOUTS = {
    "tc_counts": ("<QIBBBB", ("cookie", "ifindex", "dir", "proto", "family", "ndp"), "<QQ", ("packets", "bytes")),
    "nf_counts": ("<QIIBB6x", ("cookie", "iif", "oif", "point", "family"), "<QQ", ("packets", "bytes")),
    "drop_counts": ("<QIBB2x", ("cookie", "reason", "point", "family"), "<Q", None),
    "nat_counts": ("<QBB6x", ("cookie", "kind", "family"), "<Q", None),
}


def read_table(t, table: str) -> list:
    """(key, [value]) with values summed over CPUs, in one batch syscall or a few; bcc's own
    per-key iteration if the kernel has no batch lookup."""
    kfmt, kf, vfmt, vf = LAYOUTS[table]
    try:
        rows = links.dump_map(t.map_fd, struct.calcsize(kfmt), struct.calcsize(vfmt), True,
                              int(getattr(t, "max_entries", 16384)))
    except OSError:
        return list(t.items())
    out = []
    for k, vs in rows:
        key = SimpleNamespace(**dict(zip(kf, struct.unpack(kfmt, k))))
        tot = [sum(x) for x in zip(*(struct.unpack(vfmt, v) for v in vs))]
        out.append((key, [SimpleNamespace(**dict(zip(vf, tot)))] if vf else [tot[0]]))
    return out


# the per-CPU direct-mapped fronts of tc_counts and nf_counts (common.h FAST_BITS): each CPU's
# copy of a slot holds its own key, so these are read as (key, counter) entries, not by key
FAST = {"tc_counts": ("tc_fast", "<QIBBBBQQ"), "nf_counts": ("nf_fast", "<QIIBB6xQQ")}


def fast_entries(t, table: str) -> list[tuple[int, list[tuple | None]]]:
    """(slot, [the entry of each CPU, None where free]) for the slots some CPU holds."""
    fmt = FAST[table][1]
    size = struct.calcsize(fmt)
    raw = links.dump_percpu_array(t.map_fd, size, int(getattr(t, "max_entries", 2048)))
    ncpu, vsz = links.NCPU, (size + 7) // 8 * 8
    # most slots are free and a key's first word is a netns cookie, never 0: find the held ones
    # by that word alone before unpacking anything (this runs at every scrape)
    first = memoryview(raw).cast("Q")[::vsz // 8]
    held: dict[int, list] = {}
    for i in [i for i, w in enumerate(first) if w]:
        held.setdefault(i // ncpu, [None] * ncpu)[i % ncpu] = struct.unpack_from(fmt, raw, i * vsz)
    return sorted(held.items())


def _fast_items(table: str, entries) -> list:
    """Entries as read_table gives rows: (key, [counter]), one per (slot, CPU) holding a key."""
    kf = LAYOUTS[table][1]
    n = len(kf)
    # a slot caught between its claim and its first count holds no packet yet: no series for it
    return [(SimpleNamespace(**dict(zip(kf, e[:n]))), [SimpleNamespace(packets=e[n], bytes=e[n + 1])])
            for _, per_cpu in entries for e in per_cpu if e and e[n]]


def _sum(v, attr=None):
    return sum(getattr(x, attr) for x in v) if attr else sum(int(x) for x in v)


class ProbeCollector:
    def __init__(self, probes, ports: set[str], macs: dict[str, tuple[str, str]] | None = None,
                 networks: dict[tuple[str, str], str] | None = None,
                 mirrors: dict[tuple[str, str], tuple[str, str]] | None = None):
        self.networks = networks or {}  # (node, interface) -> the topology network it is on
        self.mirrors = mirrors or {}    # a counted veth end -> its peer, counted as its mirror (attach.veth_counting)
        self.p = probes
        self.ports = ports          # names of the bridge ports (veth host ends)
        self.macs = macs or {}      # "aa:bb:..." -> (node, interface), the lab's own MACs
        self.carry: dict = {"packets": {}, "bytes": {}, "drops": {}, "nat": {}, "frees": {}}
        self.lock = threading.Lock()

    def _names(self, cookie: int, ifindex: int) -> tuple[str, str]:
        node = self.p.known_cookies.get(cookie)
        if node is None:
            return "", ""
        # a device that is not the lab's (a stranger's link in a managed namespace): one bucket
        return node, (self.p.known_ifnames.get((cookie, ifindex), "other") if ifindex else "")

    def fold(self) -> int:
        """Move the counts of devices and namespaces that no longer exist (a heal made them anew,
        with a new ifindex or cookie) out of the kernel maps into `carry`, under the same labels:
        the maps stay small on a lab healed for months, and no counter ever goes backwards."""
        live_c, live_i = set(self.p.cookies), set(self.p.ifnames)
        moved = 0
        with self.lock:
            for fam, table, stale in (
                ("tc", "tc_counts", lambda k: k.cookie not in live_c or (k.cookie, k.ifindex) not in live_i),
                ("nf", "nf_counts", lambda k: k.cookie not in live_c
                    or (k.iif and (k.cookie, k.iif) not in live_i) or (k.oif and (k.cookie, k.oif) not in live_i)),
                ("drops", "drop_counts", lambda k: k.cookie not in live_c),
                ("nf", "nat_counts", lambda k: k.cookie not in live_c),
            ):
                t = self.p.table(fam, table) if (table != "nat_counts" or self.p.read_packet) else None
                if t is None:
                    continue
                gone = [(k, v) for k, v in t.items() if stale(k)]
                moved += self._fold_fast(fam, table, stale)
                if not gone:
                    continue
                part = self._label(fam, table, gone)
                for name, rows in part.items():
                    for key, v in rows.items():
                        self.carry[name][key] = self.carry[name].get(key, 0) + v
                for k, _ in gone:  # a dead device sends nothing more: reading then deleting loses nothing
                    try:
                        del t[k]
                    except KeyError:
                        pass
                moved += len(gone)
        return moved

    def _fold_fast(self, fam: str, table: str, stale) -> int:
        """Fold the fast slots whose key is stale into carry and free them for live keys. A slot
        is written for all CPUs at once: a live entry of another CPU in the same slot is written
        back as read, so a packet counted there during the few microseconds between read and
        write would go uncounted (never counted twice, never backwards)."""
        if table not in FAST:
            return 0
        t = self.p.table(fam, FAST[table][0])
        if t is None:
            return 0
        fmt = FAST[table][1]
        size = struct.calcsize(fmt)
        kf = LAYOUTS[table][1]
        moved = 0
        for slot, per_cpu in fast_entries(t, table):
            dead = [e for e in per_cpu if e and stale(SimpleNamespace(**dict(zip(kf, e[:len(kf)]))))]
            if not dead:
                continue
            part = self._label(fam, table, _fast_items(table, [(slot, dead)]))
            for name, rows in part.items():
                for key, v in rows.items():
                    self.carry[name][key] = self.carry[name].get(key, 0) + v
            keep = [struct.pack(fmt, *e) if e and e not in dead else bytes(size) for e in per_cpu]
            links.update_percpu(t.map_fd, struct.pack("<I", slot), keep, size)
            moved += len(dead)
        return moved

    def samples(self) -> dict:
        """Everything the maps hold plus what was folded out of them, labelled:
        {family: {labels tuple: value}}."""
        with self.lock:
            out = {"packets": {}, "bytes": {}, "drops": {}, "nat": {}, "frees": {}, "lost": {}}
            for fam, table in (("tc", "tc_counts"), ("nf", "nf_counts"), ("drops", "drop_counts"), ("nf", "nat_counts")):
                t = self.p.table(fam, table) if (table != "nat_counts" or self.p.read_packet) else None
                if t is not None:
                    items = read_table(t, table)
                    ft = self.p.table(fam, FAST[table][0]) if table in FAST else None
                    if ft is not None:
                        items += _fast_items(table, fast_entries(ft, table))
                    for name, rows in self._label(fam, table, items).items():
                        for key, v in rows.items():
                            out[name][key] = out[name].get(key, 0) + v
            for name, rows in self.carry.items():
                for key, v in rows.items():
                    out[name][key] = out[name].get(key, 0) + v
        for fam, table in (("tc", "tc_lost"), ("nf", "nf_lost"), ("drops", "drop_lost")):
            t = self.p.table(fam, table) if self.p.trace is not None else None
            out["lost"][(fam,)] = _sum(t[0]) if t is not None else 0
        return out

    def _label(self, fam: str, table: str, items) -> dict:
        out = {"packets": {}, "bytes": {}, "drops": {}, "nat": {}, "frees": {}}
        if table == "tc_counts":
            for k, v in items:
                node, dev = self._names(k.cookie, k.ifindex)
                if not node:
                    continue
                proto, fam_ = _proto(k), FAMILY.get(k.family, "")
                pk, by = _sum(v, "packets"), _sum(v, "bytes")
                keys = [(node, dev, "tc_" + points.TC_POINTS[k.dir], points.TC_POINTS[k.dir], proto, fam_)]
                peer = self.mirrors.get((node, dev))
                if peer:   # what this end sends its peer receives, and the other way round
                    other = points.TC_POINTS[1 - k.dir]
                    keys.append((*peer, "tc_" + other, other, proto, fam_))
                for key in keys:
                    out["packets"][key] = out["packets"].get(key, 0) + pk
                    out["bytes"][key] = out["bytes"].get(key, 0) + by
        elif table == "nf_counts":
            for k, v in items:
                node, iif = self._names(k.cookie, k.iif)
                _, oif = self._names(k.cookie, k.oif)
                if not node:
                    continue
                pk, by = _sum(v, "packets"), _sum(v, "bytes")
                fam_ = FAMILY.get(k.family, "ipv4")
                # a point after NAT also stands for the one before it (points.MIRRORED_NF), in the
                # metrics probes' counts only: a trace's own points are all there
                mirrored = points.MIRRORED_NF.get(k.point) if getattr(self.p, "trace", None) is None else None
                for pt in (k.point,) if mirrored is None else (k.point, mirrored):
                    hook, dev, direction = nf_hook(pt, iif, oif, self.ports)
                    key = (node, dev, hook, direction, fam_, fam_)
                    out["packets"][key] = out["packets"].get(key, 0) + pk
                    out["bytes"][key] = out["bytes"].get(key, 0) + by
        elif table == "drop_counts":
            names = reason_names()
            for k, v in items:
                node = self.p.known_cookies.get(k.cookie)
                if node is None:
                    continue
                reason = names.get(k.reason, str(k.reason))
                if is_loss(reason):
                    key = (node, points.drop_hook(k.point, reason), reason, FAMILY.get(k.family, "ipv4"))
                    out["drops"][key] = out["drops"].get(key, 0) + _sum(v)
                else:  # freed after delivery (reasons.AFTER_DELIVERY): counted apart, never a drop
                    out["frees"][(node, reason)] = out["frees"].get((node, reason), 0) + _sum(v)
        elif table == "nat_counts":
            for k, v in items:
                node = self.p.known_cookies.get(k.cookie)
                if node:
                    key = (node, "destination" if k.kind == 1 else "source", FAMILY.get(k.family, "ipv4"))
                    out["nat"][key] = out["nat"].get(key, 0) + _sum(v)
        return out

    def drop_samples(self) -> dict:
        """(node, hook, reason) -> the tuple of the last such drop, where the probes could read it."""
        t = self.p.table("drops", "drop_samples")
        out = {}
        if t is None:
            return out
        names = reason_names()
        for k, v in t.items():
            node = self.p.known_cookies.get(k.cookie)
            if node:
                td = tuple_dict(v)
                reason = names.get(k.reason, str(k.reason))
                out[(node, points.drop_hook(k.point, reason), reason, FAMILY.get(k.family, "ipv4"))] = td
        return out

    def collect(self):
        s = self.samples()
        labels = ["node", "interface", "hook", "direction", "protocol", "family", "network"]
        pk = CounterMetricFamily("bridgelab_datapath_packets", "Packets seen by the probes, per hook, node, "
                                 "interface, direction and protocol", labels=labels)
        by = CounterMetricFamily("bridgelab_datapath_bytes", "Bytes (skb length) seen by the probes", labels=labels)
        for key, v in s["packets"].items():
            net = self.networks.get((key[0], key[1]), "")
            pk.add_metric([*key, net], v)
            by.add_metric([*key, net], s["bytes"][key])
        dr = CounterMetricFamily("bridgelab_drops", "Lab packets the kernel dropped, by node, the hook where "
                                 "the probes saw them last, and the kernel's drop reason",
                                 labels=["node", "hook", "reason", "family"])
        for key, v in s["drops"].items():
            dr.add_metric(list(key), v)
        fr = CounterMetricFamily("bridgelab_delivered_frees", "Lab packets freed after they were delivered to a "
                                 "socket layer (no socket on the port, a queue purged on close, TCP discarding "
                                 "what it has): not losses, never in bridgelab_drops_total", labels=["node", "reason"])
        for key, v in s["frees"].items():
            fr.add_metric(list(key), v)
        out = CounterMetricFamily("bridgelab_drops_outside_lab", "Drops on this machine of packets the "
                                  "lab's probes never saw (not lab traffic)")
        t = self.p.table("drops", "drop_unattributed")
        out.add_metric([], _sum(t[0]) if t is not None else 0)
        nat = CounterMetricFamily("bridgelab_nat_translations", "Packets whose address or port NAT rewrote, "
                                  "by node and what was rewritten", labels=["node", "rewrite", "family"])
        for key, v in s["nat"].items():
            nat.add_metric(list(key), v)
        att = GaugeMetricFamily("bridgelab_probe_attached", "1 when the probe family is loaded and attached "
                                "everywhere it should be", labels=["probe"])
        deg = GaugeMetricFamily("bridgelab_probe_degraded", "1 when the probe runs with less than it was "
                                "designed for (see doctor and the logs for why)", labels=["probe"])
        links = GaugeMetricFamily("bridgelab_probe_links", "BPF links the probe family holds", labels=["probe"])
        for name, ok in self.p.attached().items():
            att.add_metric([name], 1 if ok else 0)
            deg.add_metric([name], 1 if self.p.families[name].degraded else 0)
        links.add_metric(["tc"], sum(len(a.fds) for a in list(self.p.tc.values())))
        links.add_metric(["nf"], sum(len(a.fds) for a in list(self.p.nf.values())))
        links.add_metric(["drops"], 1 if self.p.families["drops"].ok else 0)
        links.add_metric(["fdb"], 1 if self.p.families["fdb"].ok else 0)
        lost = CounterMetricFamily("bridgelab_probe_events_lost", "Trace events the ring buffer had no room "
                                   "for", labels=["probe"])
        for (fam,), v in s["lost"].items():
            lost.add_metric([fam], v)
        fdb = CounterMetricFamily("bridgelab_bridge_fdb_learned", "Bridge FDB learning events (a new source MAC, "
                                  "or one moving port), by the lab node and interface owning the MAC; "
                                  "MACs not of the lab are node=\"other\"", labels=["node", "interface"])
        t = self.p.table("fdb", "fdb_learned")
        if t is not None:
            agg: dict = {}
            for k, v in t.items():
                mac = ":".join(f"{b:02x}" for b in k.addr)
                key = self.macs.get(mac, ("other", ""))
                agg[key] = agg.get(key, 0) + v.value
            for key, v in agg.items():
                fdb.add_metric(list(key), v)
        yield from (pk, by, dr, fr, out, nat, att, deg, links, lost, fdb)
        stats = self.p.run_stats() if self.p.stats_enabled else None
        if stats:
            rt = CounterMetricFamily("bridgelab_probe_run_seconds", "CPU time the kernel spent in the probe "
                                     "programs (counted while BPF stats are enabled)", labels=["probe"])
            rc = CounterMetricFamily("bridgelab_probe_runs", "Times the probe programs ran", labels=["probe"])
            for fam, (ns, cnt) in stats.items():
                rt.add_metric([fam], ns / 1e9)
                rc.add_metric([fam], cnt)
            yield rt
            yield rc
