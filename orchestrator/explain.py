"""`bridgelab explain SRC DST`: where and why a flow dies in the lab, and what to do about it.

Three steps, as a person debugging the seed would take them:
  1. static: the lab's own drift from its topology on this flow's path (the same dry-run
     reconcile `up` uses: links down, routes missing or wrong, sysctls, the nft table, services),
     what of the nft table matters for the flow (masquerade, local DNAT), rp_filter against the
     reverse route;
  2. live: one probe of the flow from SRC, traced by the eBPF probes (hop by hop, drops with the
     kernel's reason) and by nftables tracing in the host (the rule that dropped it, by handle);
  3. verdict: one sentence and the fix.
Exit 0: the flow works; 1: it does not; 2: bad input.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from . import netns, plan
from .model import Desired
from .spec import Spec

EXIT_WORKS, EXIT_BROKEN, EXIT_INPUT = 0, 1, 2
SCENERY = ("gateway", "client", "internet", "lan")   # this order ranks their findings


class InputError(ValueError):
    pass


@dataclass
class Flow:
    src: str
    src_ns: str | None
    src_addr: str
    dst: str                  # as given
    dst_addr: str
    proto: str
    port: int | None
    dst_node: str | None      # the node owning dst_addr, if a lab node
    target_node: str | None   # who serves it after DNAT (a published port), else dst_node
    target_addr: str
    target_port: int | None
    via_host: bool            # routed or NATed by the lab host
    leaves_lab: bool          # goes out of the uplink


@dataclass
class Finding:
    cause: str                # stable id: ip_forward, masquerade_missing, link_down, ...
    node: str
    what: str
    fix: str
    order: int = 0            # position along the path (src first)


@dataclass
class Live:
    result: str = ""          # replied, connected, refused, timeout, unreachable, sent
    packets: list = field(default_factory=list)
    rules: list = field(default_factory=list)   # nftables trace lines with a drop verdict
    degraded: str = ""


# ------------------------------------------------------------------------- the flow

def node_addresses(spec: Spec, mode: str) -> dict[str, str]:
    out = {c.name: str(c.address) for c in spec.containers}
    out["host"] = str(spec.uplink.address.ip)
    if mode == plan.SANDBOX:
        if spec.uplink.gateway:
            out["gateway"] = str(spec.uplink.gateway)
        out["client"] = str(spec.sandbox.client.ip)
        out["internet"] = str(spec.sandbox.internet.ip)
    return out


def resolve(spec: Spec, d: Desired, src: str, dst: str, port: int | None, proto: str | None) -> Flow:
    addrs = node_addresses(spec, d.mode)
    if src not in d.nodes:
        raise InputError(f"SRC '{src}' is not a node of lab {spec.lab}; nodes: {', '.join(d.nodes)}")
    host_part, _, port_part = dst.rpartition(":") if ":" in dst else (dst, "", "")
    if port_part:
        if not port_part.isdigit() or not 0 < int(port_part) < 65536:
            raise InputError(f"DST '{dst}': the port must be 1-65535")
        if port is not None and port != int(port_part):
            raise InputError(f"DST '{dst}' and --port {port} disagree")
        port = int(port_part)
    if port is not None and not 0 < port < 65536:
        raise InputError("--port must be 1-65535")
    if host_part in addrs:
        dst_addr, dst_node = addrs[host_part], host_part
    else:
        try:
            dst_addr = str(ipaddress.IPv4Address(host_part))
        except ValueError:
            raise InputError(f"DST '{dst}' is neither a node ({', '.join(addrs)}) nor an IPv4 address") from None
        dst_node = next((n for n, a in addrs.items() if a == dst_addr), None)
    proto = proto or ("tcp" if port else "icmp")
    if proto == "icmp" and port:
        raise InputError("--proto icmp takes no port")
    if proto in ("tcp", "udp") and not port:
        raise InputError(f"--proto {proto} needs a port (DST host:PORT or --port)")
    host_addrs = {str(spec.uplink.address.ip), str(spec.bridge.gateway), "127.0.0.1"}
    target_node, target_addr, target_port = dst_node, dst_addr, port
    if dst_addr in host_addrs and port:
        for p in spec.ports:
            if p.host_port == port and p.protocol == proto and (p.host_ip is None or str(p.host_ip) == dst_addr):
                target_node, target_port = p.container, p.container_port
                target_addr = str(spec.container(p.container).address)
    if dst_addr == "127.0.0.1" and src != "host":
        raise InputError("127.0.0.1 is each node's own loopback: only `host` reaches the host's published ports there")
    src_addr = addrs.get(src, "")
    if src == "host" and dst_addr in host_addrs:
        src_addr = "127.0.0.1" if dst_addr == "127.0.0.1" else dst_addr
    elif src == "host":  # the kernel picks the source by the route: to a container, the bridge's address
        got = _ip_json(d.host_ns, "route", "get", target_addr)
        src_addr = (got[0].get("prefsrc") if got else None) or src_addr
    containers = {c.name for c in spec.containers}
    via_host = not (src in containers and target_node in containers and dst_node in containers)
    leaves = src in containers and target_node not in containers and dst_addr not in host_addrs
    return Flow(src, d.nodes[src], src_addr, dst, dst_addr, proto, port, dst_node, target_node, target_addr,
                target_port, via_host, leaves)


# ------------------------------------------------------------------------- static

def _ip_json(ns: str | None, *args: str) -> list:
    cmd = ["ip", "-j", *(["-n", ns] if ns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    try:
        return json.loads(r.stdout or "[]")
    except ValueError:
        return []


def _in_ns(ns: str | None) -> str:
    return f"ip netns exec {ns} " if ns else ""


async def static(flow: Flow, spec: Spec, d: Desired, file_hint: str) -> list[Finding]:
    from .reconcile import Engine
    node_of = {ns: n for n, ns in d.nodes.items()}   # "host" is a node: the host namespace is named
    order = {flow.src_ns: 0, d.host_ns: 1}
    for n in (flow.dst_node, flow.target_node):
        if n in d.nodes:
            order.setdefault(d.nodes[n], 2)
    if flow.leaves_lab or flow.src in SCENERY or flow.dst_node in SCENERY:
        for n in SCENERY:
            if n in d.nodes:
                order.setdefault(d.nodes[n], 3)
    up = f"bridgelab up{' -f ' + file_hint if file_hint else ''}"
    veth = {c.name: c.host_interface for c in spec.containers}
    host_links = {spec.bridge.name, spec.uplink.name} | {veth[n] for n in (flow.src, flow.target_node, flow.dst_node)
                                                          if n in veth}
    eng = Engine(d, "explain")
    try:
        res = await eng.reconcile(dry_run=True)
    finally:
        eng.close()
    out: list[Finding] = []
    for a in res.actions:
        if a.ns not in order:
            continue
        node = node_of.get(a.ns, "host")
        if a.ns == d.host_ns and a.verb in ("set-up", "create-veth", "set-master", "set-hairpin", "delete-link") \
                and a.target not in host_links:
            continue
        if a.verb == "start-service" and not (flow.target_node and a.target.startswith(flow.target_node + "/")):
            continue
        if a.verb == "set-sysctl" and "ip_forward" in a.target and not flow.via_host:
            continue
        if a.verb == "apply-table" and not flow.via_host and flow.proto == "icmp":
            continue
        out.append(_finding(a, node, up, spec, flow, d))
    if flow.via_host and d.host_ns in order:
        out += _rp_filter(flow, spec, d)
    for f in out:
        f.order = order.get(d.nodes.get(f.node, d.host_ns), 1)
    out.sort(key=lambda f: f.order)
    return out


def _finding(a, node: str, up: str, spec: Spec, flow: Flow, d: Desired) -> Finding:
    ns = a.ns
    nsarg = f"-n {ns} " if ns else ""
    if a.verb == "set-up":
        return Finding("link_down", node, f"{node}: link {a.target} is down",
                       f"ip {nsarg}link set {a.target} up   (or: {up})")
    if a.verb in ("create-veth", "create-bridge", "delete-link", "create-ns"):
        return Finding("link_missing" if a.verb != "create-ns" else "node_missing", node,
                       f"{node}: {a.target} is missing ({a.describe()})", up)
    if a.verb in ("set-master", "set-hairpin"):
        return Finding("port_detached", node, f"{node}: {a.target} is not attached to the bridge as the lab needs",
                       f"ip {nsarg}link set {a.target} master {spec.bridge.name}   (or: {up})")
    if a.verb == "add-address":
        return Finding("address_missing", node, f"{node}: address {a.detail or ''} missing on {a.target}".replace("  ", " "),
                       f"{up}")
    if a.verb == "replace-route":
        want = a.obj
        have = [r for r in _ip_json(ns, "route", "show", "default")]
        if not have:
            return Finding("default_route_missing", node, f"{node} has no default route: it cannot send beyond "
                           f"its own subnet", f"ip {nsarg}route add default via {want.gateway} dev {want.dev}   (or: {up})")
        gw = have[0].get("gateway", "?")
        neigh = [x for x in _ip_json(ns, "neigh", "show", gw) if x.get("dst") == gw]
        state = ",".join(neigh[0].get("state", [])) if neigh else "no entry"
        return Finding("wrong_gateway", node, f"{node}'s default route goes via {gw}, which does not answer ARP "
                       f"(neighbour {state}); the lab's gateway there is {want.gateway}",
                       f"ip {nsarg}route replace default via {want.gateway} dev {want.dev}   (or: {up})")
    if a.verb == "delete-route":
        return Finding("route_extra", node, f"{node}: a route the lab did not make is in the way ({a.describe()})", up)
    if a.verb == "set-sysctl":
        have = None
        try:
            from .adapters import sysctl
            have = sysctl.read(ns, a.target)
        except OSError:
            pass
        want = a.obj.value if a.obj is not None else "?"
        if "ip_forward" in a.target:
            return Finding("ip_forward", node, f"{node} does not forward packets: net.ipv4.ip_forward={have}, so "
                           f"nothing is routed between {spec.bridge.name} and {spec.uplink.name}",
                           f"{_in_ns(ns)}sysctl -w net.ipv4.ip_forward=1   (or: {up})")
        return Finding("sysctl", node, f"{node}: {a.target}={have}, the lab needs {want}",
                       f"{_in_ns(ns)}sysctl -w {a.target}={want}   (or: {up})")
    if a.verb in ("apply-table", "open-forward"):
        return _table_finding(a, node, up, spec, flow, d)
    if a.verb == "start-service":
        return Finding("not_listening", node, f"{node}: service {a.target} is not running: nothing listens on "
                       f"{flow.target_addr}:{flow.target_port}, so connections to it are reset (RST)", up)
    return Finding(a.verb, node, a.describe(), up)


def _table_finding(a, node: str, up: str, spec: Spec, flow: Flow, d: Desired) -> Finding:
    from .adapters import nft
    from .nftrender import table_name
    table = table_name(spec.lab)
    text = nft.listing(d.host_ns, "ip", table) or ""
    if not text:
        return Finding("nft_table_missing", node, f"{node}: the lab's nftables table ip {table} is gone "
                       "(no masquerade, no published ports)", up)
    if flow.leaves_lab and not re.search(rf'oifname "{re.escape(spec.uplink.name)}" masquerade', text):
        return Finding("masquerade_missing", node,
                       f"{node} does not masquerade {spec.bridge.subnet} leaving by {spec.uplink.name}: requests "
                       f"go out with the container's own source and the upstream has no route back to it",
                       f"{_in_ns(d.host_ns)}nft add rule ip {table} nat_postrouting ip saddr {spec.bridge.subnet} "
                       f'oifname "{spec.uplink.name}" masquerade   (or: {up})')
    if flow.src == "host" and flow.port and flow.target_node != flow.dst_node:
        m = re.search(r"chain nat_output \{(.*?)\n\t\}", text, re.S)
        if not m or "jump publish" not in m.group(1):
            return Finding("local_dnat_missing", node,
                           f"{node}: nothing DNATs connections the host itself opens to {flow.dst_addr}:{flow.port} "
                           f"(the output-hook part of publishing); they reach the host's own stack, where nothing "
                           f"listens, and are reset — the seed's refused curl", up)
    return Finding("nft_table_changed", node, f"{node}: the lab's nftables table ip {table} differs from the "
                   "topology", up)


def _rp_filter(flow: Flow, spec: Spec, d: Desired) -> list[Finding]:
    """Strict reverse-path filtering drops what arrives on an interface the route back does not use."""
    from .adapters import sysctl
    entering = spec.uplink.name if flow.src in SCENERY else (spec.bridge.name if flow.src != "host" else None)
    if not entering or not flow.src_addr:
        return []
    vals = []
    for k in ("all", entering):
        try:
            vals.append(int(sysctl.read(d.host_ns, f"net.ipv4.conf.{k}.rp_filter") or 0))
        except (OSError, ValueError):
            vals.append(0)
    if max(vals) != 1:
        return []
    back = _ip_json(d.host_ns, "route", "get", flow.src_addr)
    dev = back[0].get("dev") if back else None
    if dev == entering:
        return []
    return [Finding("rp_filter", "host", f"host drops {flow.src}'s packets by strict reverse-path filtering "
                    f"(rp_filter=1): they arrive on {entering} but the route back to {flow.src_addr} leaves by "
                    f"{dev or 'nowhere'}",
                    f"{_in_ns(d.host_ns)}sysctl -w net.ipv4.conf.{entering}.rp_filter=2 net.ipv4.conf.all."
                    f"rp_filter=2 (loose), or fix the route to {flow.src_addr}")]


# ------------------------------------------------------------------------- live

class _NftTrace:
    """nftables tracing of the flow in one namespace: a table of ours that only sets nftrace on
    the probe's packets, removed afterwards, and `nft monitor trace` to read the verdicts."""

    def __init__(self, ns: str | None, flow: Flow):
        from .adapters import nft
        self.nft, self.ns = nft, ns
        self.table = f"bridgelab_explain_{os.getpid()}"
        match = f"ip saddr {flow.src_addr}" if flow.src_addr else f"ip daddr {flow.dst_addr}"
        nft.run(ns, f"add table ip {self.table}")
        for chain, hook in (("pre", "prerouting"), ("out", "output")):
            nft.run(ns, f"add chain ip {self.table} {chain} {{ type filter hook {hook} priority -500; }}")
            nft.run(ns, f"add rule ip {self.table} {chain} {match} meta nftrace set 1")
        cmd = ["nft", "-a", "monitor", "trace"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     preexec_fn=netns.setns_child(ns))
        time.sleep(0.2)

    def stop(self) -> list[dict]:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        try:
            self.nft.run(self.ns, f"delete table ip {self.table}")
        except Exception:
            pass
        rules = []
        for line in out.splitlines():
            m = re.match(r"trace id \w+ (\w+) (\S+) (\S+) rule (.*?)(?: # handle (\d+))? \(verdict (\w+)", line)
            if m and m.group(6) in ("drop", "reject"):
                rules.append({"family": m.group(1), "table": m.group(2), "chain": m.group(3), "rule": m.group(4),
                              "handle": int(m.group(5)) if m.group(5) else None, "verdict": m.group(6)})
                continue
            m = re.match(r"trace id \w+ (\w+) (\S+) (\S+) policy (drop)", line)
            if m:
                rules.append({"family": m.group(1), "table": m.group(2), "chain": m.group(3), "rule": None,
                              "handle": None, "verdict": "policy drop"})
        return rules


def _probe(flow: Flow) -> str:
    if flow.proto == "icmp":
        r = subprocess.run(["ping", "-n", "-c", "1", "-W", "1", flow.dst_addr], capture_output=True, text=True,
                           preexec_fn=netns.setns_child(flow.src_ns))
        return "replied" if r.returncode == 0 else "timeout"
    with netns.entered(flow.src_ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if flow.proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.settimeout(1.5)
        if flow.proto == "udp":
            s.sendto(b"bridgelab explain", (flow.dst_addr, flow.port))
            return "sent"
        s.connect((flow.dst_addr, flow.port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return {errno.ECONNREFUSED: "refused", errno.ENETUNREACH: "unreachable",
                errno.EHOSTUNREACH: "unreachable"}.get(e.errno, f"error {errno.errorcode.get(e.errno, e.errno)}")
    finally:
        s.close()


def live(flow: Flow, d: Desired) -> Live:
    import ctypes as ct

    from .probes.events import Assembler, Event, parse_net
    from .probes.loader import Probes, TraceFilter
    from .probes.reasons import Symbols, reason_names
    out = Live()
    flt = TraceFilter(proto={"icmp": 1, "tcp": 6, "udp": 17}[flow.proto])
    flt.net, flt.mask = parse_net(flow.src_addr or flow.dst_addr)
    p = Probes(d.lab, trace=flt)
    trace = None
    try:
        p.load()
        if not p.families["tc"].ok:
            out.degraded = f"no packet trace: {p.families['tc'].reason}"
        else:
            p.sync(d)
            if p.attach_errors:
                out.degraded = "; ".join(f"cannot attach {w}: {why}" for w, why in p.attach_errors.items())
        out.degraded = out.degraded or "; ".join(f"{n}: {f.degraded}" for n, f in p.families.items() if f.degraded)
        events: list = []

        def cb(_c, data, _s):
            events.append(Event.from_buffer_copy(ct.string_at(data, ct.sizeof(Event))))
            return 0
        for fam, ring in (("tc", "tc_events"), ("nf", "nf_events"), ("drops", "drop_events")):
            if p.families[fam].ok:
                p.families[fam].bpf[ring].open_ring_buffer(cb)
        if flow.via_host:
            try:
                trace = _NftTrace(d.host_ns, flow)
            except Exception as e:  # nft tracing is a bonus: say so, carry on
                out.degraded += f"; no nftables trace: {e}"
        out.result = _probe(flow)
        time.sleep(0.3)
        seen = set()
        for fam in ("tc", "nf", "drops"):
            b = p.families[fam].bpf
            if p.families[fam].ok and id(b) not in seen:
                seen.add(id(b))
                b.ring_buffer_consume()
        names = lambda c, i: (p.known_cookies.get(c, "?"), p.known_ifnames.get((c, i), f"if{i}") if i else "")  # noqa: E731
        ports = {e.name for v in d.veths for e in (v.a, v.b) if e.master}
        asm = Assembler(names, ports, Symbols().name, reason_names())
        for e in sorted(events, key=lambda e: e.ts):
            asm.feed(e)
        out.packets = [pk.as_dict() for pk in asm.finished(None, everything=True)]
    finally:
        if trace is not None:
            out.rules = trace.stop()
        p.close()
    return out


# ------------------------------------------------------------------------- verdict

def verdict(flow: Flow, findings: list[Finding], lv: Live, d: Desired) -> dict:
    # a UDP datagram has no answer to wait for: it works if the trace saw it delivered
    drops = _drops(lv)
    works = lv.result in ("replied", "connected") or (lv.result == "sent" and not drops and any(
        p["verdict"].startswith(("delivered", "arrived")) for p in lv.packets))
    if works:  # a drop seen beside a success is a copy's (a flooded frame, a raw socket's clone)
        return {"works": True, "cause": None, "verdict": f"{flow.src} → {flow.dst} ({flow.proto}) works"
                + (f", delivered to {flow.target_node}" if flow.target_node and flow.target_node != flow.dst_node else ""),
                "fix": None}
    left = [p for p in lv.packets if p["tuple"] and p["tuple"]["src"] == flow.src_addr]
    unmasq = next((h for p in left for h in p["hops"] if h["interface"] == d.uplink and h["hook"] == "tc_egress"
                   and h.get("tuple", {}).get("src") == flow.src_addr), None)
    for f in findings:
        sentence = f.what
        if f.cause == "masquerade_missing" and unmasq:
            sentence += f"; seen: the request left {unmasq['interface']} with source {flow.src_addr} and no reply came back"
        return {"works": False, "cause": f.cause, "verdict": sentence, "fix": f.fix, "node": f.node}
    if drops:
        hop, pk = drops[0]
        reason, node, hook = hop["drop_reason"], hop["node"], hop["hook"].removeprefix("drop@")
        if reason == "NETFILTER_DROP" and lv.rules:
            r = lv.rules[0]
            ns = d.nodes.get(node, d.host_ns)
            if r["rule"]:
                return {"works": False, "cause": "filter_rule", "node": node, "rule": r,
                        "verdict": f"{node}: rule `{r['rule']}` (table {r['family']} {r['table']}, chain {r['chain']}, "
                                   f"handle {r['handle']}) drops it at the {hook} hook",
                        "fix": f"{_in_ns(ns)}nft delete rule {r['family']} {r['table']} {r['chain']} handle {r['handle']}"
                               "   (or change the rule to let this flow through)"}
            return {"works": False, "cause": "filter_policy", "node": node, "rule": r,
                    "verdict": f"{node}: chain {r['family']} {r['table']} {r['chain']} has policy drop and no rule "
                               "accepts this flow", "fix": "add an accept rule for it, or a policy accept"}
        cause = {"IP_RPFILTER": "rp_filter", "IP_INNOROUTES": "no_route", "IP_OUTNOROUTES": "no_route",
                 "NEIGH_FAILED": "wrong_gateway", "NETFILTER_DROP": "filter_rule"}.get(reason, "dropped")
        return {"works": False, "cause": cause, "node": node,
                "verdict": f"dropped at {node} {hook}: the kernel says {reason} (in {hop['function']})",
                "fix": "see the drop reason; `bridgelab trace` shows the whole path"}
    if lv.result == "refused":
        return {"works": False, "cause": "not_listening", "node": flow.target_node,
                "verdict": f"nothing listens on {flow.target_addr}:{flow.target_port} in {flow.target_node}: "
                           f"it answered the SYN with a reset (RST)",
                "fix": f"start the service in {flow.target_node} on port {flow.target_port} "
                       "(the lab's own: bridgelab up), or publish the port it listens on"}
    if lv.result == "unreachable":
        return {"works": False, "cause": "unreachable", "node": flow.src,
                "verdict": f"{flow.src} has no route to {flow.dst_addr} (the kernel refused to send)",
                "fix": f"ip {'-n ' + flow.src_ns + ' ' if flow.src_ns else ''}route   (add the missing route)"}
    last = None
    for p in left:
        if p["hops"]:
            last = p["hops"][-1]
    where = f"{last['node']} {last['interface']} {last['hook']}" if last else f"{flow.src} (never left)"
    return {"works": False, "cause": "no_reply", "node": last["node"] if last else flow.src,
            "verdict": f"the request was last seen at {where} and no reply came back",
            "fix": "run `bridgelab trace --node " + flow.src + "` while retrying to see the path"}


def _drops(lv: Live) -> list:
    # OTHERHOST: a flooded copy of a frame reaching a host it was not for, not the packet itself
    return [(h, p) for p in lv.packets for h in p["hops"] if h.get("drop_reason")
            and h["drop_reason"] != "OTHERHOST" and not p["verdict"].startswith("delivered")]


# ------------------------------------------------------------------------- CLI

def run(spec: Spec, d: Desired, args, file_hint: str) -> int:
    try:
        flow = resolve(spec, d, args.src, args.dst, args.port, args.proto)
    except InputError as e:
        print(f"bridgelab explain: {e}", file=sys.stderr)
        return EXIT_INPUT
    missing = [ns for ns in d.managed_ns() if ns is not None and not netns.exists(ns)
               and ns in (flow.src_ns, d.host_ns, d.nodes.get(flow.target_node or "", ""))]
    if missing:
        out = {"works": False, "cause": "lab_not_up", "verdict": f"the lab is not up (no namespace {missing[0]})",
               "fix": f"bridgelab up{' -f ' + file_hint if file_hint else ''}"}
        findings, lv = [], Live()
    else:
        findings = asyncio.run(static(flow, spec, d, file_hint))
        lv = live(flow, d)
        out = verdict(flow, findings, lv, d)
    report = {"flow": asdict(flow), **out,
              "static": [asdict(f) for f in findings], "live": {"result": lv.result, "packets": lv.packets,
                                                                 "nft_trace_drops": lv.rules, "degraded": lv.degraded}}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(render(report))
    return EXIT_WORKS if out["works"] else EXIT_BROKEN


def render(r: dict) -> str:
    f = r["flow"]
    lines = [f"explain {f['src']} ({f['src_addr']}) → {f['dst']} ({f['proto']}"
             + (f" {f['port']}" if f["port"] else "") + ")"
             + (f", published → {f['target_node']} {f['target_addr']}:{f['target_port']}"
                if f["target_node"] and f["target_node"] != f["dst_node"] else "")]
    lines.append("static checks:")
    lines += [f"  ✗ {x['what']}" for x in r["static"]] or ["  ✓ nothing on the path differs from the topology"]
    lv = r["live"]
    if lv.get("result"):
        lines.append(f"live probe: {lv['result']}")
        for p in lv["packets"][:4]:
            hops = " → ".join(f"{h['node']}:{h['interface'] or '-'}:{h['hook']}" for h in p["hops"][:12])
            lines.append(f"  {p['tuple']['src'] if p['tuple'] else '?'} → {p['tuple']['dst'] if p['tuple'] else '?'}: "
                         f"{p['verdict']}\n    {hops}{' …' if len(p['hops']) > 12 else ''}")
        for rule in lv["nft_trace_drops"]:
            lines.append(f"  nft: {rule['family']} {rule['table']} {rule['chain']}: {rule['rule'] or 'policy'} "
                         f"(handle {rule['handle']}) → {rule['verdict']}")
        if lv.get("degraded"):
            lines.append(f"  (probes degraded: {lv['degraded']})")
    lines.append(("WORKS: " if r["works"] else "BROKEN: ") + r["verdict"])
    if r.get("fix"):
        lines.append(f"fix: {r['fix']}")
    return "\n".join(lines)
