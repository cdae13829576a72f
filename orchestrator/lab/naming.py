"""Every name bridgelab derives from a lab: namespaces, link aliases, MACs, the nft table, the
route protocol, and its paths under the run directory. Defined here once; nothing else builds
them by hand.

A lab name passes ``check_lab`` before it is part of any of these (it comes from files, the
command line, state files and the environment: ``../../etc`` once reached ``rmtree``).
"""

from __future__ import annotations

import hashlib
import os
import re

from ..errors import UnsafeName

LAB_RE = re.compile(r"^[a-z][a-z0-9_]{0,11}$")
LAB_RULE = "1-12 characters: a lowercase letter, then lowercase letters, digits or '_'"

# rtm_protocol stamped on every route we add, how we tell ours from an admin's. Unassigned in
# the kernel's uapi (RTPROT_*) and in FRR's range (193-198); 188, used before, is OSPF, and
# `ip route` showed our routes as "proto ospf". rt_protos.d/bridgelab.conf names it.
ROUTE_PROTO = 177
ROUTE_PROTO_NAME = "bridgelab"
ALIAS_PREFIX = "bridgelab:"  # IFLA_IFALIAS of every link we create in a namespace we share


# one host's part of a multi-host lab (issue #15) is a lab of its own named LAB.HOST: a '.' is in
# no lab or host name, so bl-LAB.HOST- never prefixes another lab's namespaces nor LAB's own
PART_RE = re.compile(r"^[a-z][a-z0-9_]{0,11}\.[a-z][a-z0-9_]{0,11}$")


def part_name(lab: str, host: str) -> str:
    return check_lab(f"{lab}.{host}")


def base_lab(lab: str) -> str:
    """The lab a part belongs to (itself for a lab that is not a part)."""
    return lab.split(".", 1)[0]


def check_lab(lab: object) -> str:
    if not isinstance(lab, str) or not (LAB_RE.match(lab) or PART_RE.match(lab)):
        shown = repr(lab) if isinstance(lab, str) else type(lab).__name__
        raise UnsafeName(f"{shown} is not a lab name: use {LAB_RULE}")
    return lab


# A multi-host sandbox's lab hosts are namespaces named blm-LAB-HOST: the LAB's sandbox builds
# them (their uplink to the LAN switch) and each host's part runs inside one in host mode, as on
# a real machine. Not under bl-LAB-: LAB does not own them outright (the part's links are there).
MACHINE_PREFIX = "blm-"


def machine_ns(lab: str, host: str) -> str:
    return f"{MACHINE_PREFIX}{check_lab(lab)}-{host}"


def ns_prefixes(lab: str) -> tuple[str, ...]:
    """Every prefix of the namespaces LAB makes (its own; its lab hosts' in a multi-host sandbox)."""
    return (ns_prefix(lab), f"{MACHINE_PREFIX}{check_lab(lab)}-")


def ns_prefix(lab: str) -> str:
    return f"bl-{check_lab(lab)}-"


def ns_name(lab: str, node: str) -> str:
    return ns_prefix(lab) + node


def alias(lab: str, role: str) -> str:
    return f"{ALIAS_PREFIX}{check_lab(lab)}:{role}"


def alias_prefix(lab: str) -> str:
    return f"{ALIAS_PREFIX}{check_lab(lab)}:"


def table_name(lab: str) -> str:
    return f"bridgelab_{check_lab(lab)}"


def mac(lab: str, node: str, ifname: str) -> str:
    """A stable, locally administered MAC per interface.

    A link we recreate keeps its L2 identity, so no neighbour anywhere holds a stale entry after a
    heal (it would black-hole traffic until ARP re-resolves, seconds later). A bridge given an
    address also stops taking the lowest port's MAC, which changes whenever a port is recreated.
    """
    h = hashlib.sha256(f"{lab}/{node}/{ifname}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


# ------------------------------------------------------------------ paths

def run_dir() -> str:
    return os.path.abspath(os.environ.get("BRIDGELAB_RUN_DIR", "/run/bridgelab"))


def inside(root: str, *parts: str) -> str:
    """ROOT/PARTS..., refused unless it stays inside ROOT once resolved (no '..', no symlink out)."""
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root or path == root:
        raise UnsafeName(f"{os.path.join(*parts)!r} leaves {root}")
    return path


def lab_dir(lab: str) -> str:
    return inside(run_dir(), check_lab(lab))


def lab_file(lab: str, *parts: str) -> str:
    return inside(lab_dir(lab), *parts)


def www_dir(lab: str, node: str) -> str:
    return os.path.join(lab_dir(lab), "www", node)
