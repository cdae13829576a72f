"""netem: delay, jitter, loss, rate, corruption and duplication, as tc writes them (20ms, 0.5%,
100mbit), each checked against the range tc netem takes."""

from __future__ import annotations

import re
from typing import Any

from .model import Netem
from .problems import Collector, show

_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)\s*$", re.I)
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_RATE_BITS = {"bit": 1, "kbit": 10 ** 3, "mbit": 10 ** 6, "gbit": 10 ** 9,
              "bps": 8, "kbps": 8 * 10 ** 3, "mbps": 8 * 10 ** 6, "gbps": 8 * 10 ** 9}
MAX_DELAY_US = 60 * 10 ** 6  # a minute: past this a lab link is a broken link, say so
MAX_RATE = 100 * 10 ** 9


def _time(c: Collector, v: Any, fld: str) -> int | None:
    m = _TIME.match(v) if isinstance(v, str) else None
    if not m:
        c.add(fld, f"{show(v)} is not a time", "write it like 20ms, 500us or 1s")
        return None
    us = round(float(m.group(1)) * {"us": 1, "ms": 1000, "s": 10 ** 6}[m.group(2)])
    if us > MAX_DELAY_US:
        c.add(fld, f"{v} is more than a minute", "use at most 60s")
        return None
    return us


def _pct(c: Collector, v: Any, fld: str) -> float | None:
    m = _PCT.match(v) if isinstance(v, str) else None
    value = float(m.group(1)) if m else None
    if value is None or not 0 <= value <= 100:
        c.add(fld, f"{show(v)} is not a percentage from 0% to 100%", "write it like 0.5%")
        return None
    return value


def _rate(c: Collector, v: Any, fld: str) -> int | None:
    m = _RATE.match(v) if isinstance(v, str) else None
    bps = round(float(m.group(1)) * _RATE_BITS[m.group(2).lower()]) if m else None
    if bps is None or not 8 <= bps <= MAX_RATE:
        c.add(fld, f"{show(v)} is not a rate from 8bit to 100gbit", "write it like 100mbit, 10kbit or 1gbit (tc's units)")
        return None
    return bps


def netem(c: Collector, raw: Any, fld: str) -> tuple[Netem | None | bool, str]:
    """(Netem, the end it applies at or ""), (None, "") when absent, (False, "") when wrong."""
    if raw is None:
        return None, ""
    m = c.mapping(raw, fld, "netem")
    if m is None:
        return False, ""
    before = len(c.problems)
    delay = _time(c, m["delay"], f"{fld}.delay") if m.get("delay") is not None else 0
    jitter = _time(c, m["jitter"], f"{fld}.jitter") if m.get("jitter") is not None else 0
    loss = _pct(c, m["loss"], f"{fld}.loss") if m.get("loss") is not None else 0.0
    corrupt = _pct(c, m["corrupt"], f"{fld}.corrupt") if m.get("corrupt") is not None else 0.0
    duplicate = _pct(c, m["duplicate"], f"{fld}.duplicate") if m.get("duplicate") is not None else 0.0
    rate = _rate(c, m["rate"], f"{fld}.rate") if m.get("rate") is not None else 0
    if jitter and not delay:
        c.add(f"{fld}.jitter", "jitter varies a delay, and there is none", "add delay: (e.g. delay: 20ms)")
    elif jitter and delay is not None and jitter > delay:
        c.add(f"{fld}.jitter", f"jitter {m['jitter']} is more than the delay {m['delay']} (packets would be reordered "
              "beyond the delay itself)", "keep jitter at most the delay")
    at = m.get("at", "")
    if at is not None and not isinstance(at, str):
        c.add(f"{fld}.at", f"{show(at)} is not an end", "name one end of it, e.g. at: \"r1:eth1\"")
    if len(c.problems) > before:
        return False, ""
    em = Netem(delay or 0, jitter or 0, loss or 0.0, rate or 0, corrupt or 0.0, duplicate or 0.0)
    if em == Netem():
        c.add(fld, "netem without any impairment", "give at least one of delay, loss, rate, corrupt, duplicate")
        return False, ""
    return em, at or ""
