"""A lab across hosts (issue #15) on the command line. No coordinator: every host reads the same
file and acts on its own part (`--as HOST`, lab/spec/hosts.py). In the sandbox each lab host is
a namespace (blm-LAB-HOST) on the LAN switch the lab's sandbox builds; a command `--as HOST`
runs inside it in host mode, exactly as it would on that machine. Without --as, the sandbox's
commands act on every host: `up` builds the sandbox and then each host's part (in parallel,
each its own process), `run` runs one daemon per host under one parent that keeps the sandbox,
`down` removes them all; on a real host (--host) the host is the entry whose address is one of
its own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from ..adapters import netns
from ..errors import EXIT_FAIL, EXIT_NOT_UP, EXIT_OK, BusyError, InputError
from ..lab import desired as plan
from ..lab.naming import machine_ns, run_dir
from ..lab.spec import Spec
from ..lab.spec import hosts as hostmod
from ..reconcile.lock import LabLock

PER_HOST = ("up", "run", "down", "status", "check", "logs", "explain", "drops")


def dispatch(args, spec: Spec, commands: dict) -> int:
    as_ = getattr(args, "as_", None) or []
    if as_ and not spec.hosts:
        raise InputError(f"--as: lab {spec.lab} has no hosts: (it runs on one host)")
    if args.cmd == "trace" and len(as_) != 1:
        return _trace(args, spec, as_ or [h.name for h in spec.hosts], commands)
    if len(as_) > 1:
        raise InputError("--as takes one host here (several only for trace)")
    if not as_ and getattr(args, "host", False) and args.cmd in PER_HOST:
        as_ = [_local_host(spec)]
    if as_:
        return commands[args.cmd](args, enter(args, spec, as_[0]))
    if args.cmd in ("up", "run", "down", "status", "check", "explain"):
        return {"up": _up, "run": _run, "down": _down, "status": _status, "check": _check,
                "explain": _explain}[args.cmd](args, spec)
    return commands[args.cmd](args, spec)   # exec, graph, explain...: the sandbox's node map


def enter(args, spec: Spec, host: str) -> Spec:
    """Become HOST: its part as a lab of its own in host mode; in the sandbox, inside its
    namespace (the sandbox built first for up and run)."""
    if host not in {h.name for h in spec.hosts}:
        raise InputError(f"--as {host}: no such host; hosts: {', '.join(h.name for h in spec.hosts)}")
    part = hostmod.part(spec, host)
    if not getattr(args, "host", False):
        m = machine_ns(spec.lab, host)
        if args.cmd in ("up", "run") and not getattr(args, "dry_run", False):
            ensure_sandbox(spec)
        if not netns.exists(m):
            from .commands import up_hint
            print(f"bridgelab {args.cmd}: lab host {host} is not up (no namespace {m}); run '{up_hint(args)}'",
                  file=sys.stderr)
            raise SystemExit(EXIT_NOT_UP)
        if args.cmd == "run":
            args._enter = m       # after the metrics socket is bound where a scraper can reach it
        else:
            netns.switch(m)
        args.host = True
    return part


def ensure_sandbox(spec: Spec) -> list:
    """Build or repair the sandbox around the hosts (LAN switch, stand-ins, the hosts' namespaces
    and uplinks), unless a daemon already keeps it."""
    from ..reconcile.engine import Engine
    d = plan.desired(spec, plan.SANDBOX)

    async def go():
        eng = Engine(d, spec.source)
        try:
            return await eng.reconcile()
        finally:
            eng.close()
    try:
        with LabLock(spec.lab, "up"):
            res = asyncio.run(go())
    except BusyError:
        return []   # the parent daemon keeps it
    if res.errors:
        raise RuntimeError(f"the sandbox around the hosts: {res.errors[0][1]}")
    return res.actions


def _local_host(spec: Spec) -> str:
    """On a real host: the entry whose address this machine has."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        mine = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()}
    for h in spec.hosts:
        if str(h.address.ip) in mine:
            print(f"bridgelab: acting as host {h.name} ({h.address.ip} is this machine's)", file=sys.stderr)
            return h.name
    raise InputError(f"no host of lab {spec.lab} has an address of this machine "
                     f"({', '.join(f'{h.name} {h.address.ip}' for h in spec.hosts)}); say which with --as HOST")


def _cli(args, host: str, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "orchestrator", args.cmd]
    if args.file:
        argv += ["-f", args.file]
    return argv + ["--as", host, *extra]


def _each(args, spec: Spec, *extra: str) -> list[tuple[str, subprocess.CompletedProcess]]:
    def one(h):
        return h.name, subprocess.run(_cli(args, h.name, *extra), capture_output=True, text=True, timeout=900)
    with ThreadPoolExecutor(len(spec.hosts)) as pool:
        return list(pool.map(one, spec.hosts))


def _up(args, spec: Spec) -> int:
    if args.dry_run:
        got = _each(args, spec, "--dry-run", "--json")
    else:
        world = ensure_sandbox(spec)
        if not args.json:
            print(f"up: sandbox of lab {spec.lab}: {len(world)} changes")
        got = _each(args, spec, "--json")
    out, code = {}, EXIT_OK
    for host, r in got:
        try:
            out[host] = json.loads(r.stdout)
        except ValueError:
            out[host] = {"error": (r.stderr or r.stdout).strip()[-500:]}
        code = max(code, r.returncode)
        if not args.json:
            o = out[host]
            print(f"up: host {host}: " + (f"{len(o.get('actions', []))} changes" if "error" not in o
                                          else f"failed: {o['error']}"))
    if args.json:
        print(json.dumps({"lab": spec.lab, "hosts": out}, indent=1))
    return code


def _down(args, spec: Spec) -> int:
    from ..reconcile.state import State
    from ..reconcile.teardown import teardown
    lab = args.lab or spec.lab
    removed = []
    for name in sorted(os.listdir(run_dir())) if os.path.isdir(run_dir()) else []:
        if not name.startswith(lab + "."):
            continue
        host = name.split(".", 1)[1]
        m = machine_ns(lab, host)
        st = State.load(name)
        if st is not None and st.mode == "host" and netns.exists(m):
            # its links, table and sysctls are in the host's namespace: removed from there
            r = subprocess.run([sys.executable, "-m", "orchestrator", "down", "--lab", name, "--json"],
                               capture_output=True, text=True, preexec_fn=netns.setns_child(m), timeout=300)
            try:
                removed += json.loads(r.stdout)["removed"]
            except (ValueError, KeyError):
                print(f"bridgelab down: host {host}: {r.stderr.strip()}", file=sys.stderr)
        else:
            if st is not None and st.mode == "host":   # the host's namespace is gone, and all it held
                st.mode = "sandbox"
                st.save()
            with LabLock(name, "down"):
                removed += asyncio.run(teardown(name))
    with LabLock(lab, "down"):
        removed += asyncio.run(teardown(lab))
    if args.json:
        print(json.dumps({"lab": lab, "removed": removed}, indent=1))
    else:
        print(f"down: lab {lab} and its hosts: " + (f"{len(removed)} removed" if removed else "nothing to remove"))
    return EXIT_OK


def _status(args, spec: Spec) -> int:
    got = _each(args, spec, *(["--json"] if args.json else []))
    if args.json:
        print(json.dumps({"lab": spec.lab, "hosts": {h: json.loads(r.stdout) if r.stdout.startswith("{") else
                                                     {"error": r.stderr.strip()} for h, r in got}}, indent=1))
    else:
        for h, r in got:
            print(f"== host {h}\n{(r.stdout or r.stderr).rstrip()}")
    return max(r.returncode for _, r in got)


def _check(args, spec: Spec) -> int:
    from ..diagnose.check import Result
    from ..diagnose.check import render as rd
    import dataclasses

    from ..diagnose import check as chk
    extra = ["--json"] + (["--quick"] if args.quick else []) + (["--matrix"] if args.matrix else [])
    got = _each(args, spec, *extra)
    results, code = [], EXIT_OK
    if not args.matrix and not getattr(args, "host", False):   # the stand-ins' own, from here
        world = dataclasses.replace(spec, expect=hostmod.world_expect(spec))
        d = plan.desired(world, plan.SANDBOX)
        for r in chk.check(world, d):
            if not r.holds:
                chk.why(world, d, r, "bridgelab up", live=not args.quick)
            r.name = f"sandbox/{r.name}"
            results.append(r)
            if r.status == "failed":
                code = max(code, 1)
    for h, r in got:
        code = max(code, r.returncode)
        if r.returncode not in (0, 1) or not r.stdout.startswith("{"):
            print(f"bridgelab check: host {h}: {r.stderr.strip()}", file=sys.stderr)
            continue
        if args.matrix:
            print(r.stdout if args.json else f"== host {h}\n{r.stdout}")
            continue
        for x in json.loads(r.stdout)["results"]:
            x.pop("status", None)
            x["name"] = f"{h}/{x['name']}"
            results.append(Result(**x))
    if args.matrix:
        return code
    if args.junit:
        with open(args.junit, "wb") as f:
            f.write(rd.junit(spec.lab, results, sum(r.seconds for r in results)))
    print(json.dumps({"lab": spec.lab, "results": [r.as_dict() for r in results]}, indent=1) if args.json
          else rd.table(spec.lab, results, False))
    return code


def _explain(args, spec: Spec) -> int:
    from ..diagnose.explain import hosts as xh
    rep = xh.explain(spec, args.file, args.src, args.dst, args.proto)
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        print(f"explain {args.src} → {args.dst} across hosts ({rep['flow'].get('src_host')} → "
              f"{rep['flow'].get('dst_host') or rep['flow'].get('target')})")
        if "underlay" in rep:
            print(f"  underlay: {rep['underlay']['peer']} {rep['underlay']['seen']}")
        print(("WORKS: " if rep["works"] else "BROKEN: ") + (rep.get("verdict") or ""))
        if rep.get("fix") and not rep["works"]:
            print(f"fix: {rep['fix']}")
    return EXIT_OK if rep["works"] else EXIT_FAIL


def _trace(args, spec: Spec, hosts: list[str], commands: dict) -> int:
    """One trace across the given hosts of a sandbox (all on this machine): each part's devices
    where they are, the sandbox's too, followed as one lab."""
    if getattr(args, "host", False):
        raise InputError("on real hosts, trace each host with --as HOST (and merge by time)")
    from ..diagnose import trace
    d = union(spec, hosts)
    from .commands import up_hint
    return trace.run(d, args, up_hint(args))


def union(spec: Spec, hosts: list[str]):
    """The sandbox and the given hosts' parts as one desired state, each part's host namespace
    named (they run there in host mode, where it is "the current namespace")."""
    import dataclasses

    from ..lab import resources as r

    def place(x, ns):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            ch = {}
            for f in dataclasses.fields(x):
                v = getattr(x, f.name)
                if f.name in ("ns", "peer_ns") and v is None:
                    ch[f.name] = ns
                elif dataclasses.is_dataclass(v):
                    ch[f.name] = place(v, ns)
            return dataclasses.replace(x, **ch) if ch else x
        return x
    world = plan.desired(spec, plan.SANDBOX)
    parts = []
    for h in hosts:
        m = machine_ns(spec.lab, h)
        p = plan.desired(hostmod.part(spec, h), plan.HOST)
        tup = {f.name: tuple(place(x, m) for x in getattr(p, f.name)) for f in dataclasses.fields(p)
               if isinstance(getattr(p, f.name), tuple)}
        nets = {((m if k[0] is None else k[0]), k[1]): v for k, v in p.networks.items()}
        nodes = {(h if n == "host" else n): (m if ns is None else ns) for n, ns in p.nodes.items()}
        parts.append(dataclasses.replace(p, host_ns=m, **tup, networks=nets, nodes=nodes))
    merged = {f.name: getattr(world, f.name) for f in dataclasses.fields(world)}
    for p in parts:
        for f in dataclasses.fields(p):
            v = getattr(p, f.name)
            if isinstance(v, tuple):
                merged[f.name] = tuple(merged[f.name]) + v
        merged["networks"] = {**merged["networks"], **p.networks}
        merged["nodes"] = {**merged["nodes"], **p.nodes}
    merged["namespaces"] = tuple({n.name: n for n in merged["namespaces"]}.values())
    return r.Desired(**merged)


def _run(args, spec: Spec) -> int:
    """One daemon per host under this one, which keeps the sandbox around them."""
    from .commands import cmd_run
    ensure_sandbox(spec)
    base = []
    for flag in ("no_heal", "no_probes", "bpf_stats", "down_on_exit"):
        if getattr(args, flag, False):
            base.append("--" + flag.replace("_", "-"))
    base += ["--check-interval", str(args.check_interval), "--resync", str(args.resync), "--metrics-addr", "127.0.0.1:0"]
    args.children = [(h.name, _cli(args, h.name, *base)) for h in spec.hosts]
    args.no_probes = True   # the sandbox's own daemon: no datapath of its own to probe
    import dataclasses
    return cmd_run(args, dataclasses.replace(spec, expect=hostmod.world_expect(spec)))


__all__ = ["dispatch", "enter", "ensure_sandbox", "union"]
