"""A `drops` log event when the probes count new drops of lab packets, per node, hook and reason
(the journal is where a user looks when a dashboard shows drops), and the rows `bridgelab drops`
reads from <run dir>/<lab>/drops.jsonl."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .. import logs
from ..diagnose import drops as droplog

log = logs.get("bridgelab.daemon")


class DropReporter:
    def __init__(self, lab: str, collector: Callable[[], object], every: float):
        self.lab = lab
        self.collector = collector
        self.every = every
        self.prev: dict = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            col = self.collector()
            if col is None:
                continue
            try:
                await self.report(col)
            except Exception as e:  # reporting must never stop the daemon
                log.warning("drop report failed", error=str(e))

    async def report(self, col) -> None:
        drops = (await asyncio.to_thread(col.samples))["drops"]
        fresh = new_drops(drops, self.prev, time.time())
        for f in fresh:
            log.warning("drops", node=f["node"], hook=f["hook"], reason=f["reason"], family=f["family"],
                        count=f["count"], total=f["total"])
        if fresh:
            samples = await asyncio.to_thread(col.drop_samples)
            for f in fresh:
                f["sample"] = samples.get((f["node"], f["hook"], f["reason"], f["family"]))
                f.pop("total")
            await asyncio.to_thread(droplog.append, self.lab, fresh)  # may trim the file: off the loop


def new_drops(totals: dict, prev: dict, now: float) -> list[dict]:
    """Rows for what was dropped since PREV (updated in place): pure, unit-tested."""
    out = []
    for key, total in sorted(totals.items()):
        node, hook, reason, family = key
        new = total - prev.get(key, 0)
        if new > 0:
            out.append({"ts": now, "node": node, "hook": hook, "reason": reason, "family": family, "count": new,
                        "total": total})
        prev[key] = total
    return out
