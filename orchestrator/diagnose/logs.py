"""`bridgelab logs NODE[/SERVICE]`: the end of a service's log, or of every service of a node."""
from __future__ import annotations

import os
import sys
import time

from ..adapters.services import log_path
from ..errors import EXIT_NOT_UP, EXIT_OK, InputError
from ..lab.resources import Desired
from ..lab.spec import Spec


def _tail(path: str, lines: int) -> list[str]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - 256 * max(lines, 1)))
        return f.read().decode(errors="replace").splitlines()[-lines:] if lines else []


def run(spec: Spec, d: Desired, args) -> int:
    node, _, svc = args.service.partition("/")
    if node not in d.nodes:
        raise InputError(f"no node '{node}' in lab {spec.lab}; nodes: {', '.join(d.nodes)}")
    mine = [s for s in d.services if s.node == node and (not svc or s.name == f"{node}/{svc}")]
    if not mine:
        have = ", ".join(s.name for s in d.services if s.node == node) or "none"
        raise InputError(f"{args.service}: no such service (services of {node}: {have})")
    if args.lines < 0:
        raise InputError("-n must not be negative")
    paths = [(s.name, log_path(spec.lab, s.name)) for s in mine]
    if not any(os.path.exists(p) for _, p in paths):
        print(f"bridgelab logs: no log yet for {args.service}: the lab is not up, or its services never started",
              file=sys.stderr)
        return EXIT_NOT_UP
    for name, p in paths:
        if len(paths) > 1:
            print(f"==> {name} <==")
        if os.path.exists(p):
            for line in _tail(p, args.lines):
                print(line)
    if args.follow:
        _follow(paths)
    return EXIT_OK


def _follow(paths: list[tuple[str, str]]) -> None:
    pos = {p: os.path.getsize(p) if os.path.exists(p) else 0 for _, p in paths}
    try:
        while True:
            for name, p in paths:
                try:
                    size = os.path.getsize(p)
                except FileNotFoundError:
                    continue
                if size < pos[p]:  # cut back (capped): read from the start again
                    pos[p] = 0
                if size > pos[p]:
                    with open(p, "rb") as f:
                        f.seek(pos[p])
                        chunk = f.read().decode(errors="replace")
                    pos[p] = size
                    for line in chunk.splitlines():
                        print(f"{name}: {line}" if len(paths) > 1 else line, flush=True)
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
