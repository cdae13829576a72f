"""The lab's nftables table through libnftables (Debian's python3-nftables), in-process.

The table is replaced whole in one transaction (``table`` + ``delete table`` + definition), so
the kernel never holds half a ruleset. What the kernel holds is compared by fingerprint: the
table's own listing with counters stripped, recorded right after we applied it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading

import nftables

from . import netns

_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


class NftError(RuntimeError):
    pass


_contexts: dict[str | None, tuple[int, nftables.Nftables]] = {}
# libnftables contexts are not thread-safe, and the daemon reads the table from threads beside
# its own loop (the checks' static explain): two commands on one context at once corrupted
# libnftables' heap ("double free or corruption", the daemon aborted). One command at a time.
_lock = threading.Lock()


def _ctx(ns: str | None) -> nftables.Nftables:
    """One libnftables context per namespace, made inside it and reused: a context is not
    cheap, and the Python binding's contexts are not reliably freed (ours leaked natively)."""
    ino = netns.inode(ns)
    hit = _contexts.get(ns)
    if hit is None or hit[0] != ino:
        with netns.entered(ns):
            _contexts[ns] = hit = (ino, nftables.Nftables())
    return hit[1]


def run(ns: str | None, cmd: str, json_output: bool = False, handles: bool = False) -> str:
    with _lock:
        ctx = _ctx(ns)
        ctx.set_json_output(json_output)
        ctx.set_handle_output(handles)
        with netns.entered(ns):  # the context may open its netlink socket per command
            rc, out, err = ctx.cmd(cmd)
    if rc != 0:
        raise NftError(err.strip() or f"nft failed ({rc})")
    return out


def fingerprint(listing: str) -> str:
    return hashlib.sha256(_COUNTER.sub("counter", listing).encode()).hexdigest()[:16]


def listing(ns: str | None, family: str, name: str) -> str | None:
    try:
        return run(ns, f"list table {family} {name}")
    except NftError as e:
        if "No such file or directory" in str(e):
            return None
        raise


def apply(ns: str | None, family: str, name: str, text: str) -> str:
    """Replace the table atomically; returns the fingerprint of what the kernel now holds."""
    run(ns, f"table {family} {name}\ndelete table {family} {name}\n{text}")
    got = listing(ns, family, name)
    assert got is not None
    return fingerprint(got)


def delete(ns: str | None, family: str, name: str) -> bool:
    try:
        run(ns, f"delete table {family} {name}")
        return True
    except NftError as e:
        if "No such file or directory" in str(e):
            return False
        raise


def ruleset_json(ns: str | None, handles: bool = False) -> list[dict]:
    return json.loads(run(ns, "list ruleset", json_output=True, handles=handles) or '{"nftables": []}')["nftables"]


def table_json(ns: str | None, family: str, name: str) -> list[dict] | None:
    """The table as libnftables' JSON objects (chains, rules with their expressions), or None."""
    try:
        out = run(ns, f"list table {family} {name}", json_output=True)
    except NftError as e:
        if "No such file or directory" in str(e):
            return None
        raise
    return json.loads(out or '{"nftables": []}')["nftables"]
