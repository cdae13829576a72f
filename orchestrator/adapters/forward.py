"""Keep the lab forwarding under someone else's FORWARD drop policy.

An accept in our own table does not help when another table's forward chain drops: in
netfilter every base chain on a hook must let a packet pass. Docker sets `iptables -P FORWARD
DROP` on every host it runs on, so a lab host with Docker would silently stop forwarding. When
a foreign forward chain's policy is drop, we put three accepts for the lab's bridge at its top,
each marked with our comment, and take exactly those away on `down`.

The iptables filter/FORWARD chain gets its rules through iptables itself (iptables-nft): rules
inserted with nft would make `iptables -L` refuse the whole table as incompatible.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from . import netns
from . import nft


def marker(lab: str) -> str:
    return f"bridgelab:{lab}"


def _rules(bridges: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """(nft rule, iptables arguments) pairs, in the order they must end up in."""
    out = []
    for bridge in bridges:
        out += [
            (f'iifname "{bridge}" accept', ["-i", bridge, "-j", "ACCEPT"]),
            (f'oifname "{bridge}" ct state established,related accept',
             ["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
            (f'oifname "{bridge}" ct status dnat accept',
             ["-o", bridge, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]),
        ]
    return out


@dataclass(frozen=True)
class Gate:
    """A foreign forward chain with policy drop."""

    family: str
    table: str
    chain: str
    ours: int  # rules carrying our marker in it now

    @property
    def iptables(self) -> str | None:
        """The iptables tool that owns this chain (iptables-nft's filter FORWARD), or None."""
        return TOOLS.get((self.family, self.table, self.chain))

    def __str__(self) -> str:
        return f"{self.family} {self.table} {self.chain}"


TOOLS = {("ip", "filter", "FORWARD"): "iptables", ("ip6", "filter", "FORWARD"): "ip6tables"}


def _iptables(ns: str | None, *args: str, tool: str = "iptables") -> str:
    r = subprocess.run([tool, "-w", *args], capture_output=True, text=True,
                       preexec_fn=netns.setns_child(ns))
    if r.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _iptables_ours(ns: str | None, lab: str, tool: str = "iptables") -> list[str]:
    return [line for line in _iptables(ns, "-S", "FORWARD", tool=tool).splitlines()
            if f'--comment "{marker(lab)}"' in line or f"--comment {marker(lab)}" in line]


def observe(ns: str | None, lab: str, own_tables: set[str], ruleset: list[dict] | None = None) -> list[Gate]:
    ruleset = nft.ruleset_json(ns) if ruleset is None else ruleset
    gates = []
    for item in ruleset:
        ch = item.get("chain")
        if not ch or ch.get("hook") != "forward" or ch.get("policy") != "drop":
            continue
        if ch["family"] not in ("ip", "ip6", "inet") or ch["table"] in own_tables:
            continue
        key = (ch["family"], ch["table"], ch["name"])
        if key in TOOLS:
            ours = len(_iptables_ours(ns, lab, TOOLS[key]))
        else:
            ours = sum(1 for r in ruleset if "rule" in r
                       and (r["rule"]["family"], r["rule"]["table"], r["rule"]["chain"]) == key
                       and r["rule"].get("comment") == marker(lab))
        gates.append(Gate(*key, ours=ours))
    return gates


def wanted(bridges: tuple[str, ...]) -> int:
    return len(_rules(bridges))


def open_gate(ns: str | None, lab: str, bridges: tuple[str, ...], gate: Gate) -> None:
    """(Re)insert our accepts at the top of GATE, dropping any stale ones of ours first."""
    close_gate(ns, lab, gate)
    rules = _rules(bridges)
    if gate.iptables:
        for _, args in reversed(rules):
            _iptables(ns, "-I", "FORWARD", "1", *args, "-m", "comment", "--comment", marker(lab), tool=gate.iptables)
        return
    cmds = [f'insert rule {gate.family} {gate.table} {gate.chain} {text} comment "{marker(lab)}"'
            for text, _ in reversed(rules)]
    nft.run(ns, "\n".join(cmds))


def close_gate(ns: str | None, lab: str, gate: Gate) -> int:
    if gate.iptables:
        ours = _iptables_ours(ns, lab, gate.iptables)
        for line in ours:  # "-A FORWARD ..." as listed -> "-D FORWARD ..."
            _iptables(ns, *shlex.split("-D" + line[2:]), tool=gate.iptables)
        return len(ours)
    handles = [r["rule"]["handle"] for r in nft.ruleset_json(ns, handles=True) if "rule" in r
               and (r["rule"]["family"], r["rule"]["table"], r["rule"]["chain"]) == (gate.family, gate.table, gate.chain)
               and r["rule"].get("comment") == marker(lab)]
    if handles:
        nft.run(ns, "\n".join(f"delete rule {gate.family} {gate.table} {gate.chain} handle {h}" for h in handles))
    return len(handles)


def close_all(ns: str | None, lab: str, own_tables: set[str]) -> int:
    """Remove our marked accepts from every chain, whatever its policy is now."""
    chains = {(r["rule"]["family"], r["rule"]["table"], r["rule"]["chain"])
              for r in nft.ruleset_json(ns) if "rule" in r and r["rule"].get("comment") == marker(lab)
              and r["rule"]["table"] not in own_tables}
    n = sum(close_gate(ns, lab, Gate(*c, ours=1)) for c in chains if c not in TOOLS)
    tables = {(t["table"]["family"], t["table"]["name"]) for t in nft.ruleset_json(ns) if "table" in t}
    for key in TOOLS:
        if key[:2] in tables:
            n += close_gate(ns, lab, Gate(*key, ours=1))
    return n
